"""Roles and jurisdiction (pure policy), hashed tokens, the audit log and ``token`` CLI.

The policy is checked with hypothesis over every role and random warnings: a wrong rule (a
chief seeing another station, an officer acting on a warning they were not asked to act on,
an admin reading a warning) fails a property, not just an example.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from engine.access.audit import AuditLog
from engine.access.policy import (
    ACT_KINDS,
    ROLES,
    Principal,
    may_act,
    may_campaign,
    may_confirm_task,
    may_submit,
    principal_for,
    resident_fields,
    resident_visible,
    stats_scope,
    warning_visible,
)
from engine.access.tokens import TokenError, TokenStore, parse_token
from engine.cli import main
from engine.machine import WarningState
from engine.model import Responders, decode_warning
from tests.small_county import GRIDS, OFFICERS, STATIONS, make_registry
from tests.transport_support import warning_json

REG = make_registry()
for i, (grid, _village) in enumerate(GRIDS * 3):
    officer = {"01-11": "P01", "01-12": "P01", "01-21": "P02", "02-11": "P03"}[grid]
    REG.add_resident(
        f"A{i}", name="张三丰", phone="13800001234", address="x", grid=grid, officer=officer
    )
GRID_STATION = {g: g[:2] for g, _ in GRIDS}
OFFICER_KEYS = [o.key for o in OFFICERS if o.grids]
WARNING = decode_warning(warning_json(1))


def state(
    grid: str | None,
    notified: tuple[str, ...],
    acked_by: str | None = None,
    resident: int | None = None,
) -> WarningState:
    station = GRID_STATION[grid] if grid is not None else None
    grid_officer = next((o.key for o in OFFICERS if grid in o.grids), None)
    return WarningState(
        warning=WARNING,
        responders=Responders(
            county_centre="cc",
            grid=grid,
            station=station,
            grid_officer=grid_officer,
            resident=resident,
        ),
        expires_at=0.0,
        notified=notified,
        acked_by=acked_by,
    )


states = st.builds(
    state,
    st.sampled_from([g for g, _ in GRIDS]) | st.none(),
    st.lists(st.sampled_from([*OFFICER_KEYS, "D01", "C02", "cc"]), max_size=3, unique=True).map(
        tuple
    ),
    st.sampled_from([*OFFICER_KEYS, None]),
)
principals = st.one_of(
    st.just(principal_for("centre", None, REG)),
    st.just(principal_for("admin", None, REG)),
    st.sampled_from(STATIONS).map(lambda s: principal_for("chief", s, REG)),
    st.sampled_from(OFFICER_KEYS).map(lambda o: principal_for("officer", o, REG)),
)


@given(principals, states)
def test_who_sees_a_warning(p: Principal, s: WarningState) -> None:
    seen = warning_visible(p, s)
    if p.role == "centre":
        assert seen
    elif p.role == "admin":
        assert not seen
    elif p.role == "chief":
        assert seen == (s.responders.station == p.station)
    else:  # an officer: only what is theirs, or what they were brought into
        theirs = s.responders.grid in p.grids or s.responders.grid_officer == p.subject
        assert seen == (theirs or p.subject in s.notified or p.subject == s.acked_by)


@given(principals, states, st.sampled_from(ACT_KINDS))
def test_who_may_act_on_a_warning(p: Principal, s: WarningState, kind: str) -> None:
    acts = may_act(p, s, kind)  # type: ignore[arg-type]
    if acts and p.role != "centre":
        assert warning_visible(p, s)  # nobody acts on what they may not see
    if p.role == "officer":
        assert acts == (p.subject in s.notified)  # only when asked to act
    if p.role == "admin":
        assert not acts


def test_an_officer_on_the_grid_but_not_yet_asked_may_look_but_not_act() -> None:
    p = principal_for("officer", "P01", REG)
    s = state("01-11", notified=("D01",))
    assert warning_visible(p, s) and not may_act(p, s, "ack")
    assert may_act(p, state("01-11", notified=("P01",)), "outcome")


def test_roles_for_submitting_campaigns_and_statistics() -> None:
    centre, admin = principal_for("centre", None, REG), principal_for("admin", None, REG)
    chief, officer = principal_for("chief", "02", REG), principal_for("officer", "P03", REG)
    assert [may_submit(p) for p in (centre, admin, chief, officer)] == [True, False, False, False]
    assert [may_campaign(p) for p in (centre, admin, chief, officer)] == [True, True, False, False]
    assert may_confirm_task(officer, "P03") and not may_confirm_task(officer, "P01")
    assert stats_scope(chief).key == "02" and stats_scope(officer).key == "P03"
    assert stats_scope(admin).level == "county"


def test_principals_are_resolved_against_the_registry() -> None:
    p = principal_for("officer", "P01", REG, token_id="t1")
    assert p.grids == frozenset({"01-11", "01-12"}) and p.station == "01"
    for role, subject, field in [
        ("officer", "P99", "no officer"),
        ("chief", "09", "no station"),
        ("officer", None, "needs a subject"),
        ("centre", "P01", "takes no subject"),
    ]:
        with pytest.raises(ValueError, match=field):
            principal_for(role, subject, REG)  # type: ignore[arg-type]


def test_residents_are_seen_only_within_the_jurisdiction_and_masked_unless_acting() -> None:
    officer = principal_for("officer", "P03", REG)
    chief = principal_for("chief", "01", REG)
    for rid in range(REG.n_ids):
        if not REG.is_live(rid):
            continue
        grid = REG.jurisdiction.units["grid"][int(REG.grid[rid])].key
        assert resident_visible(officer, REG, rid) == (grid == "02-11")
        assert resident_visible(chief, REG, rid) == (GRID_STATION[grid] == "01")
        assert not resident_visible(principal_for("admin", None, REG), REG, rid)
    rid = next(r for r in range(REG.n_ids) if REG.is_live(r) and resident_visible(officer, REG, r))
    masked = resident_fields(officer, REG, rid)
    assert masked["phone"] != str(REG.phone[rid]) and masked["name"] != str(REG.name[rid])
    acting = state("02-11", notified=("P03",), resident=rid)
    assert resident_fields(officer, REG, rid, acting_on=acting)["phone"] == str(REG.phone[rid])
    other = state("02-11", notified=("D01",), resident=rid)  # not asked to act: still masked
    assert resident_fields(officer, REG, rid, acting_on=other) == masked
    centre = principal_for("centre", None, REG)
    assert resident_fields(centre, REG, rid, acting_on=acting) == masked


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_is_stored_hashed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore.load(path)
    token = store.create("officer", "P01", "tablet 7")
    token_id, secret = parse_token(token)
    assert secret not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = TokenStore.load(path)
    record = again.authenticate(token)
    assert record is not None and record.role == "officer" and record.subject == "P01"
    assert again.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert again.authenticate(f"wd_{'0' * 8}_{secret}") is None
    assert again.revoke(token_id) and again.authenticate(token) is None
    assert TokenStore.load(path).authenticate(token) is None
    assert not again.revoke("ffffffff")


@given(st.text(max_size=80))
def test_any_text_is_a_token_or_refused_without_echo(text: str) -> None:
    try:
        parse_token(text)
    except TokenError as exc:
        assert str(exc) == "token: expected wd_<8 hex digits>_<43 characters>"  # no echo
    assert TokenStore(Path("/nonexistent"), {}).authenticate(text) is None


def test_a_damaged_store_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{nope")
    with pytest.raises(TokenError, match=str(path)):
        TokenStore.load(path)


def test_the_audit_log_records_who_what_when_and_no_contents(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    p = principal_for("officer", "P01", REG, token_id="ab12cd34")
    log.record(p, "feedback.ack", "warning:w-1")
    log.record(p, "feedback.outcome", "warning:w-2", outcome="forbidden")
    log.close()
    rows = AuditLog.read(tmp_path / "audit.jsonl")
    assert [(r.token_id, r.subject, r.action, r.target, r.outcome) for r in rows] == [
        ("ab12cd34", "P01", "feedback.ack", "warning:w-1", "ok"),
        ("ab12cd34", "P01", "feedback.outcome", "warning:w-2", "forbidden"),
    ]
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_token_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    county = tmp_path / "county"
    REG.save(county)
    tokens = str(tmp_path / "tokens.json")
    run = CliRunner().invoke
    made = run(
        main,
        [
            "token",
            "create",
            "--role",
            "officer",
            "--subject",
            "P02",
            "--county",
            str(county),
            "--tokens",
            tokens,
        ],
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    token_id, _ = parse_token(token)
    bad = run(
        main,
        [
            "token",
            "create",
            "--role",
            "officer",
            "--subject",
            "P99",
            "--county",
            str(county),
            "--tokens",
            tokens,
        ],
    )
    assert bad.exit_code == 2 and "no officer 'P99'" in bad.output
    listed = run(main, ["token", "list", "--tokens", tokens])
    assert token_id in listed.output and "P02" in listed.output
    assert token.split("_", 2)[2] not in listed.output
    assert run(main, ["token", "revoke", token_id, "--tokens", tokens]).exit_code == 0
    assert "revoked" in run(main, ["token", "list", "--tokens", tokens]).output
    assert ROLES == ("centre", "chief", "officer", "admin")
    assert json.loads(Path(tokens).read_text())[0]["revoked"] is True


def test_a_running_server_sees_tokens_made_and_revoked_by_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    server = TokenStore.load(path)  # the serve process, loaded at start
    made = TokenStore.load(path).create("centre", None)  # `token create`, later
    record = server.authenticate(made)
    assert record is not None and record.role == "centre"
    assert TokenStore.load(path).revoke(record.id)  # `token revoke`
    assert server.authenticate(made) is None
    path.write_text("not json")  # a damaged file keeps what the server holds
    assert server.authenticate(made) is None and record.id in server.records
