"""The simulator's rosters, correlated traffic and what-if on correlation (issue 14)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.model import KNOWN_KINDS
from engine.registry.registry import Registry
from engine.registry.synthetic import CountySpec, generate_county
from engine.rules.correlation import NO_CORRELATION
from engine.rules.sources import load_rules
from simulator.duty import county_rosters, shift_of
from simulator.replay import replay
from simulator.traffic import TrafficSpec, generate_traffic, scaled


@pytest.fixture(scope="module")
def county() -> Registry:
    return generate_county(
        CountySpec(residents=20_000, contacts=11_500, officers=200, stations=6, villages=60)
    )


def spec(**kw: object) -> TrafficSpec:
    base = scaled(TrafficSpec(days=3, seed=5), 20_000)
    base = msgspec.structs.replace(
        base, warnings_per_day={k: v * 20 for k, v in base.warnings_per_day.items()}
    )
    return msgspec.structs.replace(base, **kw)  # type: ignore[arg-type]


def test_every_station_has_a_day_and_a_night_duty_officer_who_swap_weekly(
    county: Registry,
) -> None:
    s = spec(days=30)
    r = county_rosters(county, s)
    stations = sorted({o.station for o in county.officers if o.role == "duty_officer"})
    assert len(r.rotations) == 2 * len(stations)
    tz = s.start.tzinfo
    day = datetime(2026, 11, 3, 10, tzinfo=tz).timestamp()
    night = datetime(2026, 11, 3, 22, tzinfo=tz).timestamp()
    later = day + 7 * 86400
    for st in stations:
        a, b, c = (r.on_duty(st, "duty_officer", t) for t in (day, night, later))
        assert a is not None and b is not None and c is not None
        assert (a.shift, b.shift) == ("day", "night")
        if not a.notes and not b.notes and not c.notes:  # nobody on leave or swapped then
            assert a.officers != b.officers and c.officers != a.officers
    assert county_rosters(county, s) == r  # seeded: a what-if run has the same rosters


def test_leave_and_swaps_are_drawn_at_about_their_rates(county: Registry) -> None:
    s = spec(days=300)
    r = county_rosters(county, s)
    duty = sum(o.role == "duty_officer" for o in county.officers)
    stations = len({o.station for o in county.officers if o.role == "duty_officer"})
    assert 0.6 * duty * 20 < len(r.leave) < 1.2 * duty * 20  # 2 days a month, some repeat
    assert 0.6 * stations * 10 < len(r.overrides) < 1.4 * stations * 10
    assert all(o.officer.startswith("P") for o in r.overrides)  # community officers take them
    gone = r.leave[0]
    t = gone.start.timestamp() + 3600 * 10
    station = next(o.station for o in county.officers if o.key == gone.officer)
    on = r.on_duty(station, "duty_officer", t)
    assert on is not None and gone.officer not in on.officers


def test_shift_of_follows_the_duty_hours() -> None:
    s = TrafficSpec()
    tz = s.start.tzinfo
    assert shift_of(datetime(2026, 11, 1, 7, 59, tzinfo=tz), s) == "night"
    assert shift_of(datetime(2026, 11, 1, 8, 0, tzinfo=tz), s) == "day"
    assert shift_of(datetime(2026, 11, 1, 20, 0, tzinfo=tz), s) == "night"


def test_repeats_and_ring_bursts_are_added_and_follow_ups_keep_their_warning(
    county: Registry,
) -> None:
    plain = generate_traffic(spec(repeat_share=0.0, ring_bursts_per_day=0.0), county)
    rich = generate_traffic(spec(repeat_share=0.5, ring_bursts_per_day=4.0), county)
    assert rich.w_time.size > plain.w_time.size
    assert np.all(np.diff(rich.w_time) >= 0)
    # The rest of the traffic is the same draw.
    assert np.array_equal(plain.c_time, rich.c_time) and np.array_equal(plain.f_time, rich.f_time)
    for k in range(plain.f_warning.size):
        i, j = int(plain.f_warning[k]), int(rich.f_warning[k])
        assert plain.w_time[i] == rich.w_time[j] and plain.w_target[i] == rich.w_target[j]
    # Repeats: same kind and target a few minutes after a fraud or help request.
    fraud = KNOWN_KINDS.index("fraud")
    seen: dict[tuple[int, int, int], list[float]] = {}
    for t, k, tt, tg in zip(rich.w_time, rich.w_kind, rich.w_ttype, rich.w_target, strict=True):
        if tt < 2:
            seen.setdefault((int(k), int(tt), int(tg)), []).append(float(t))
    repeated = [ts for ts in seen.values() if len(ts) > 1 and 120 <= ts[1] - ts[0] <= 1500]
    assert len(repeated) > 10
    # Ring bursts: fraud level 1 in one grid within the window.
    grids = county.grid
    ones = np.flatnonzero((rich.w_kind == fraud) & (rich.w_level == 1) & (rich.w_ttype == 0))
    bursts = 0
    for i in ones:
        close = ones[(rich.w_time[ones] >= rich.w_time[i])]
        close = close[rich.w_time[close] <= rich.w_time[i] + 480]
        same = [c for c in close if grids[rich.w_target[c]] == grids[rich.w_target[i]]]
        bursts += len(same) >= 6
    assert bursts >= 5


def test_correlation_lightens_the_officers_load_in_the_same_month(county: Registry) -> None:
    s = spec(repeat_share=0.4, ring_bursts_per_day=2.0)
    rules = msgspec.structs.replace(load_rules(), rosters=county_rosters(county, s))
    on = replay(county, s, rules=rules)
    off = replay(
        county,
        s,
        rules=msgspec.structs.replace(rules, correlation=NO_CORRELATION),
        label="no correlation",
    )
    assert on.duty.correlated > 20 and off.duty.correlated == 0
    assert on.duty.area_alerts > 0 and on.duty.area_campaigns == on.duty.area_alerts
    assert off.duty.area_alerts == 0
    notices = sum(on.duty.notices.values())
    assert notices < sum(off.duty.notices.values())
    assert on.duty.notices["night"] > 0 and on.duty.notices["day"] > 0
    assert on.duty.rosters == "<simulated county rosters>"


def test_simulate_takes_a_site_rules_folder_and_the_correlation_what_if(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARN_DISPATCH_HOME", str(tmp_path / "home"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "silences.toml").write_text(
        'version = 1\n[[silences]]\nid = "x"\nauthor = "a"\nreason = "r"\n'
        'start = 2026-11-01T00:00:00\nend = 2026-11-02T00:00:00\nkind = "burglary"\n'
    )
    tiny = ["--residents", "3000", "--days", "1", "--no-progress"]
    bad = CliRunner().invoke(main, ["simulate", *tiny, "--rules", str(site)])
    assert bad.exit_code == 2
    assert f"{site / 'silences.toml'}: silences[0].kind: a kind of the escalation rules" in (
        bad.output
    )
    (site / "silences.toml").write_text("version = 1\n")
    out = tmp_path / "rep"
    good = CliRunner().invoke(
        main, ["simulate", *tiny, "--rules", str(site), "--no-correlation", "--out", str(out)]
    )
    assert good.exit_code == 0, good.output
    data = msgspec.json.decode((out / "summary.json").read_bytes())
    assert [d["label"] for d in data] == ["baseline", "no correlation"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "deadlines missed day / night shift" in page and "no correlation" in page
    assert data[0]["duty"]["rosters"] == "<simulated county rosters>"
