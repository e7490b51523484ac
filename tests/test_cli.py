"""The ``warn-dispatch`` command: the README's main job works, and mistakes are explained."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.registry.registry import Registry
from engine.registry.snapshot import SnapshotError
from engine.registry.synthetic import CountySpec, generate_county

SMALL = ["--residents", "4000", "--seed", "3"]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("WARN_DISPATCH_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.fixture(scope="module")
def small_county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated county snapshot shared by the read-only tests of this module."""
    out = tmp_path_factory.mktemp("county") / "c"
    result = CliRunner().invoke(main, ["county", "generate", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    return out


def test_demo_generates_once_then_loads(runner: CliRunner, tmp_path: Path) -> None:
    first = runner.invoke(main, ["demo", *SMALL, "--repeats", "2"])
    assert first.exit_code == 0, first.output
    assert "generating a county of 4,000 residents" in first.output
    assert "elderly & grid:03-17 & ~warned_7d" in first.output
    assert "index memory" in first.output
    second = runner.invoke(main, ["demo", *SMALL, "--repeats", "2"])
    assert second.exit_code == 0, second.output
    assert "loaded county snapshot" in second.output
    assert len(list((tmp_path / "home").iterdir())) == 1


def test_audience_counts_like_the_library(runner: CliRunner, small_county: Path) -> None:
    out = small_county
    reg = Registry.load(out)
    expected = reg.count("elderly & ~antifraud_app")
    result = runner.invoke(
        main, ["audience", "elderly & ~antifraud_app", "--county", str(out), "--ids", "3"]
    )
    assert result.exit_code == 0, result.output
    assert f"{expected:,} residents" in result.output
    first_ids = " ".join(str(i) for i in reg.ids("elderly & ~antifraud_app")[:3])
    assert first_ids in result.output


def test_audience_as_an_officer_sees_only_their_grids(
    runner: CliRunner, small_county: Path
) -> None:
    out = small_county
    reg = Registry.load(out)
    officer = next(o for o in reg.officers if o.grids)
    mine = reg.view_for(officer.key).audience("all").count()
    assert 0 < mine < len(reg)
    result = runner.invoke(
        main, ["audience", "all", "--county", str(out), "--officer", officer.key]
    )
    assert f"{mine:,} residents" in result.output


def test_unknown_tag_exits_2_with_suggestions(runner: CliRunner, small_county: Path) -> None:
    out = small_county
    result = runner.invoke(main, ["audience", "eldery & student", "--county", str(out)])
    assert result.exit_code == 2
    assert "unknown tag 'eldery'; did you mean elderly" in result.output
    assert "^" in result.output


def test_syntax_error_exits_2_with_position(runner: CliRunner, small_county: Path) -> None:
    out = small_county
    result = runner.invoke(main, ["audience", "elderly & (student", "--county", str(out)])
    assert result.exit_code == 2
    assert "at position 18" in result.output


def test_generate_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert runner.invoke(main, ["county", "generate", str(out), *SMALL]).exit_code == 0
    again = runner.invoke(main, ["county", "generate", str(out), *SMALL])
    assert again.exit_code == 2 and "already holds a county snapshot" in again.output


def test_generate_from_a_spec_file_and_bad_spec_named(runner: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text("residents = 3000\ncontacts = 1000\nstations = 5\nvillages = 20\n")
    out = tmp_path / "c"
    result = runner.invoke(main, ["county", "generate", str(out), "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    info = runner.invoke(main, ["county", "info", str(out)])
    assert "residents 3,000 live" in info.output and "stations 5, villages 20" in info.output
    spec.write_text('residents = "many"\n')
    bad = runner.invoke(main, ["county", "generate", str(tmp_path / "d"), "--spec", str(spec)])
    assert bad.exit_code == 2
    assert "spec.toml: residents: expected `int`, got `str`" in bad.output


def test_taxonomy_command_validates_files(runner: CliRunner, tmp_path: Path) -> None:
    ok = runner.invoke(main, ["taxonomy"])
    assert ok.exit_code == 0 and "957 tags in 7 categories" in ok.output
    bad = tmp_path / "t.toml"
    bad.write_text(
        'version = 1\n[[category]]\nkey = "a"\nlabel = "甲"\n[[category.tag]]\nkey = "x"\n'
    )
    result = runner.invoke(main, ["taxonomy", str(bad)])
    assert result.exit_code == 2
    assert "t.toml: category[0].tag[0].label" in result.output


def test_snapshot_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="not a registry snapshot"):
        Registry.load(tmp_path)
    reg = generate_county(CountySpec(residents=500, contacts=100, villages=30, stations=3))
    reg.save(tmp_path / "s")
    meta = tmp_path / "s" / "meta.msgpack"
    raw = msgspec.msgpack.decode(meta.read_bytes())
    meta.write_bytes(msgspec.msgpack.encode({**raw, "version": 99}))
    with pytest.raises(SnapshotError, match="version 99"):
        Registry.load(tmp_path / "s")
    meta.write_bytes(
        msgspec.msgpack.encode({**raw, "taxonomy_keys": ["zzz", *raw["taxonomy_keys"][1:]]})
    )
    with pytest.raises(SnapshotError, match="tags the taxonomy lacks: zzz"):
        Registry.load(tmp_path / "s")


def test_campaign_plan_previews_channels_and_reasons(runner: CliRunner, small_county: Path) -> None:
    reg = Registry.load(small_county)
    audience = "elderly & ~antifraud_app"
    ids = reg.ids(audience)
    with_officer = int((reg.officer[ids] >= 0).sum())
    result = runner.invoke(main, ["campaign", "plan", audience, "--county", str(small_county)])
    assert result.exit_code == 0, result.output
    assert f"{ids.size:,} residents resolved" in result.output
    assert f"{with_officer:,}  sent from the contact officer's chat account" in result.output
    assert f"{ids.size - with_officer:,}  no officer contact: sent by SMS" in result.output
    bad = runner.invoke(
        main, ["campaign", "plan", "elderly & ~antifraud_ap", "--county", str(small_county)]
    )
    assert bad.exit_code == 2 and "did you mean antifraud_app" in bad.output
