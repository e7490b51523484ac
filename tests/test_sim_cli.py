"""``warn-dispatch simulate`` on a tiny county: it runs, writes its reports, explains mistakes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from engine.cli import main

TINY = ["--residents", "3000", "--days", "1", "--no-progress"]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("WARN_DISPATCH_HOME", str(tmp_path / "home"))
    return CliRunner()


def test_simulate_runs_and_writes_reports(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = runner.invoke(main, ["simulate", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "county summary" in result.output
    assert "traffic scaled to 3,000 residents" in result.output
    assert "one-to-one chats" in result.output
    data = msgspec.json.decode((out / "summary.json").read_bytes())
    assert [d["label"] for d in data] == ["baseline"]
    assert data[0]["days"] == 1 and data[0]["residents"] == 3000
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 5  # no what-if chart without a what-if


def test_what_if_runs_the_baseline_too(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["simulate", *TINY, "--out", str(out), "--ack-deadline", "30s", "--seed", "4"]
    result = runner.invoke(main, [*args, "--journal", str(tmp_path / "j")])
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "ack 30s" in result.output
    data = msgspec.json.decode((out / "summary.json").read_bytes())
    assert [d["label"] for d in data] == ["baseline", "ack 30s"]
    assert "id='misses'" in (out / "report.html").read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["run0", "run1"]


def test_officers_what_if_uses_a_county_with_that_many_officers(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "rep"
    result = runner.invoke(main, ["simulate", *TINY, "--out", str(out), "--officers", "800"])
    assert result.exit_code == 0, result.output
    data = msgspec.json.decode((out / "summary.json").read_bytes())
    assert [(d["label"], d["officers"]) for d in data] == [
        ("baseline", 1400),
        ("800 officers", 800),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "actors.nope=1"], "--set: actors.nope"),
        (["--set", "days"], "KEY=VALUE"),
        (["--ack-deadline", "soon"], "'soon' is not a duration"),
        (["--set", "actors.chat_read=1.5"], "actors.chat_read"),
    ],
)
def test_mistakes_are_explained(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(main, ["simulate", *TINY, "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output, result.output


def test_bad_spec_file_names_file_and_key(runner: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "traffic.toml"
    spec.write_text("routine_campaigns_per_day = -1\n")
    result = runner.invoke(main, ["simulate", *TINY, "--spec", str(spec)])
    assert result.exit_code == 2
    assert "traffic.toml: routine_campaigns_per_day:" in result.output, result.output
