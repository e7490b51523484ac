"""``warn-dispatch rules check``: every rule file of a folder validated, every problem named with
file, key and expectation, exit status 2 on any."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.rules.loading import default_rules_dir


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["rules", "check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_shipped_rules_pass() -> None:
    code, out, _ = run()
    assert code == 0
    assert out.count("ok: ") == 6


def test_every_bad_file_is_named_with_its_key_and_what_was_expected(tmp_path: Path) -> None:
    shutil.copy(default_rules_dir() / "campaigns.toml", tmp_path)
    (tmp_path / "escalation.toml").write_text("[kinds.fraud]\nlevels = 3\n")
    (tmp_path / "taxonomy.toml").write_text("nope = [")
    code, out, err = run(str(tmp_path))
    assert code == 2
    assert f"ok: {tmp_path / 'campaigns.toml'}" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {tmp_path / 'escalation.toml'}: officer_ladders: ")
    assert lines[1].startswith(f"error: {tmp_path / 'taxonomy.toml'}: (top level): valid TOML")


def test_a_folder_without_rule_files_is_an_error(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path))
    assert code == 2 and "none of escalation.toml" in err
