"""The duty commands: ``roster show``, ``rules test``, ``--rules DIR``, and ``serve --rules``
reloading on SIGHUP with a real process, a real signal and its metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from engine import CountySpec, generate_county
from engine.cli import main
from engine.testing.redis_server import free_port
from tests.test_metrics import value
from tests.test_roster import DAY_NIGHT
from tests.transport_support import warning_json

ROSTERS = 'version = 1\ntimezone = "Asia/Shanghai"\n' + DAY_NIGHT
SILENCES = """version = 1
[[silences]]
id = "d032-leave"
author = "chief-03"
reason = "D032 at the hospital"
start = 2026-12-24T00:00:00
end = 2026-12-25T00:00:00
officer = "D032"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    (d / "rosters.toml").write_text(ROSTERS, encoding="utf-8")
    (d / "silences.toml").write_text(SILENCES, encoding="utf-8")
    return d


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_roster_show_says_who_is_on_and_who_is_next(site: Path) -> None:
    code, out = run(
        "roster", "show", "--station", "03", "--at", "2026-12-24T19:30", "--rules", str(site)
    )
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "station 03 at 2026-12-24 19:30 CST"
    assert lines[1].startswith("now   duty_officer  day") and lines[1].endswith("D031")
    assert lines[2].startswith("next  duty_officer  night") and lines[2].endswith("D032")
    assert "chief: no rotation" in out
    # A week on, the weekly rotation has swapped: D032 on days.
    _, later = run(
        "roster", "show", "--station", "03", "--at", "2026-12-31T10:00", "--rules", str(site)
    )
    assert later.splitlines()[1].endswith("D032")


def test_roster_show_explains_a_bad_time() -> None:
    code, out = run("roster", "show", "--station", "03", "--at", "yesterday evening")
    assert code == 2 and "--at" in out and "ISO 8601" in out


def test_rules_test_prints_the_ladder_with_the_roster_and_the_silence(site: Path) -> None:
    code, out = run(
        "rules", "test", "--rules", str(site), "--kind", "fraud", "--level", "3",
        "--grid", "03-17", "--at", "2026-12-24T19:10",
    )  # fmt: skip
    assert code == 0, out
    assert "roster: duty_officer of station 03: D031, day shift" in out
    assert "silence d032-leave by chief-03" in out
    # The duty rung fires at 20:10, on the night shift, whose officer is silenced: the county
    # centre is told instead, and "why" says so.
    assert "+1:00:00 20:10  notify_officer  county_centre" in out
    assert "duty_officer:silenced: D032 not paged: silence d032-leave" in out
    assert "D032" not in [ln.split()[3] for ln in out.splitlines() if "notify_officer" in ln]


def test_rules_test_with_an_ack_shows_the_ack_timeout_reopening(site: Path, tmp_path: Path) -> None:
    escalation = (Path(__file__).parent.parent / "rules" / "escalation.toml").read_text()
    escalation = escalation.replace("[kinds.fraud]\n", "[kinds.fraud]\nack_timeout_s = 600\n", 1)
    (site / "escalation.toml").write_text(escalation, encoding="utf-8")
    code, out = run(
        "rules", "test", "--rules", str(site), "--kind", "fraud", "--level", "1",
        "--grid", "03-17", "--at", "2026-12-24T10:00", "--ack-after", "1",
    )  # fmt: skip
    assert code == 0, out
    assert "acks at +1 min" in out
    reopened = [ln for ln in out.splitlines() if "+0:11:00" in ln and "notify_officer" in ln]
    assert reopened, out  # acked at 10:01, no outcome by 10:11: the ladder re-opens


def test_a_bad_site_file_names_the_file_and_key_everywhere(site: Path) -> None:
    (site / "rosters.toml").write_text(ROSTERS.replace('["D031", "D032"]', '["D031", "D031"]'))
    want = f"{site / 'rosters.toml'}: rotations[0].officers: officer keys, each once"
    for args in (
        ("rules", "test", "--rules", str(site)),
        ("roster", "show", "--station", "03", "--rules", str(site)),
        ("rules", "check", str(site)),
        ("rules", "check", "--rules", str(site)),
    ):
        code, out = run(*args)
        assert code == 2 and want in out, (args, out)


def test_a_rules_folder_without_rule_files_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = run("rules", "test", "--rules", str(empty))
    assert code == 2 and "a folder with at least one of escalation.toml" in out


def test_serve_reloads_on_sighup_keeps_the_old_rules_on_a_bad_file_and_counts_both(
    site: Path, tmp_path: Path
) -> None:
    county = tmp_path / "county"
    generate_county(CountySpec(residents=2000, contacts=1200)).save(county)
    port = free_port()
    env = {**os.environ, "WARN_DISPATCH_HOME": str(tmp_path / "home")}
    cmd = [
        sys.executable, "-m", "engine.cli", "serve", "--county", str(county),
        "--journal", str(tmp_path / "j"), "--http", f"127.0.0.1:{port}", "--rules", str(site),
    ]  # fmt: skip
    err_path = tmp_path / "serve.err"
    err = err_path.open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
    )
    base = f"http://127.0.0.1:{port}"

    def metrics_until(done: object, what: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{base}/metrics", timeout=2)
                if r.status_code == 200 and done(r.text):  # type: ignore[operator]
                    return r.text
            except httpx.TransportError:
                pass
            assert proc.poll() is None, err_path.read_text()[-2000:]
            assert time.monotonic() < deadline, f"{what}: {err_path.read_text()[-2000:]}"
            time.sleep(0.1)

    try:
        text = metrics_until(lambda t: "wd_rules_generation" in t, "serving")
        assert value(text, "wd_rules_generation") == 0
        (site / "silences.toml").write_text(SILENCES.replace('officer = "D032"', ""))
        os.kill(proc.pid, signal.SIGHUP)
        text = metrics_until(
            lambda t: value(t, "wd_rules_reloads_total", result="failed") == 1, "refused"
        )
        assert value(text, "wd_rules_generation") == 0  # the old rules stay in force
        log = err_path.read_text()
        assert f"{site / 'silences.toml'}: silences[0]: at least one matcher" in log
        (site / "silences.toml").write_text(SILENCES)
        os.kill(proc.pid, signal.SIGHUP)
        text = metrics_until(
            lambda t: value(t, "wd_rules_reloads_total", result="ok") == 1, "reloaded"
        )
        assert value(text, "wd_rules_generation") == 1
        assert value(text, "wd_rules_last_reload_timestamp_seconds", result="ok") > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
        err.close()
    assert proc.returncode == 0, err_path.read_text()[-2000:]


def test_serve_pages_the_rostered_duty_officer_of_a_site_folder(tmp_path: Path) -> None:
    """End to end through ``serve --rules DIR``: a site whose first rung waits 1 s and whose
    station has a 24-hour rotation: the duty rung goes to the rostered officer, not to the
    registry's duty officer, with the shift in the reason."""
    reg = generate_county(CountySpec(residents=2000, contacts=1200))
    county = tmp_path / "county"
    reg.save(county)
    rid = 0
    station = reg.resident(rid).station
    site = tmp_path / "site"
    site.mkdir()
    escalation = (Path(__file__).parent.parent / "rules" / "escalation.toml").read_text()
    urgent = '{ role = "grid_officer", ack_within_s = 120 },'
    assert urgent in escalation
    (site / "escalation.toml").write_text(
        escalation.replace(urgent, '{ role = "grid_officer", ack_within_s = 1 },', 1)
    )
    (site / "rosters.toml").write_text(
        "version = 1\n[[rotations]]\n"
        f'station = "{station}"\nrole = "duty_officer"\nshift = "all day"\n'
        'start_time = "00:00"\nend_time = "00:00"\nevery = "daily"\nanchor = 2026-01-01\n'
        'officers = ["ROSTER-1"]\n'
    )
    env = {**os.environ, "WARN_DISPATCH_HOME": str(tmp_path / "home")}
    out_path, err_path = tmp_path / "out.jsonl", tmp_path / "serve.err"
    cmd = [
        sys.executable, "-m", "engine.cli", "serve", "--county", str(county),
        "--journal", str(tmp_path / "j"), "--rules", str(site),
    ]  # fmt: skip
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env)
        try:
            assert proc.stdin is not None
            proc.stdin.write(warning_json(rid) + b"\n")  # fraud level 1 about resident 0
            proc.stdin.flush()
            deadline = time.monotonic() + 30
            while True:
                lines = [json.loads(x) for x in out_path.read_bytes().splitlines() if x]
                duty = [a for a in lines if a["action"] == "notify_officer" and a["step"] == 1]
                if duty:
                    break
                assert proc.poll() is None, err_path.read_text()[-2000:]
                assert time.monotonic() < deadline, err_path.read_text()[-2000:]
                time.sleep(0.1)
            assert duty[0]["to"] == "ROSTER-1"
            assert "on duty: all day shift" in duty[0]["reason"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdin is not None:
                proc.stdin.close()
    assert proc.returncode == 0, err_path.read_text()[-2000:]
