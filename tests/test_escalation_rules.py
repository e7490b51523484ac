"""rules/escalation.toml: the shipped defaults load, and every kind of mistake is named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model import KNOWN_KINDS
from engine.rules.escalation import load_escalation
from engine.rules.loading import RuleError, default_rules_dir

GOOD = """
version = 1
[officer_ladders.fast]
steps = [
    { role = "grid_officer", ack_within_s = 120 },
    { role = "county_centre", ack_within_s = 600, repeats = 2 },
]
[contact_ladders.call]
steps = [{ channel = "call", within_s = 60, repeats = 1 }, { channel = "chat", within_s = 300 }]
[kinds.fraud]
targets = ["resident", "phone"]
levels.1 = { officers = "fast", contact = "call", at_expiry = "report" }
levels.2 = { officers = "fast", contact = "call" }
levels.3 = { officers = "fast" }
levels.4 = { officers = "fast" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "escalation.toml"
    path.write_text(text)
    return path


def test_shipped_rules_cover_every_kind_and_level() -> None:
    rules = load_escalation()
    assert rules.source == str(default_rules_dir() / "escalation.toml")
    assert set(KNOWN_KINDS) <= set(rules.kinds)
    for kind, policy in rules.kinds.items():
        assert len(policy.levels) == 4
        for level in (1, 2, 3, 4):
            p = rules.policy(kind, level)
            assert p.officers[-1].role == "county_centre"
            if "area" not in policy.targets:
                assert p.contact, f"{kind} level {level} must try to reach the resident"


def test_shipped_rules_are_more_urgent_at_lower_levels() -> None:
    rules = load_escalation()
    for kind in rules.kinds:
        first_acks = [rules.policy(kind, level).officers[0].ack_within_s for level in (1, 2, 3, 4)]
        assert first_acks == sorted(first_acks), kind
    # the example in the issue: level-1 fraud, grid officer acks within 2 minutes, then up
    fraud = rules.policy("fraud", 1)
    assert [(s.role, s.ack_within_s) for s in fraud.officers[:2]] == [
        ("grid_officer", 120),
        ("duty_officer", 120),
    ]
    assert [s.channel for s in fraud.contact] == ["call", "chat", "visit"]


def test_a_minimal_file_compiles(tmp_path: Path) -> None:
    rules = load_escalation(write(tmp_path, GOOD))
    p = rules.policy("fraud", 1)
    assert [s.role for s in p.officers] == ["grid_officer", "county_centre"]
    assert p.officers[1].repeats == 2 and p.at_expiry == "report"
    assert rules.policy("fraud", 3).contact == ()
    assert rules.kinds["fraud"].targets == frozenset({"resident", "phone"})


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "ack_within_s = 120 }",
            "ack_within_s = 0 }",
            "officer_ladders.fast.steps[0].ack_within_s",
            "> 0",
        ),
        (
            "ack_within_s = 120 }",
            'ack_within_s = "2m" }',
            "officer_ladders.fast.steps[0].ack_within_s",
            "float",
        ),
        (
            'role = "grid_officer"',
            'role = "mayor"',
            "officer_ladders.fast.steps[0].role",
            "grid_officer",
        ),
        ("repeats = 2", "repeats = -1", "officer_ladders.fast.steps[1].repeats", ">= 0"),
        ('channel = "chat"', 'channel = "pigeon"', "contact_ladders.call.steps[1].channel", "call"),
        (
            "within_s = 300 }",
            "within_s = 300, wait = 1 }",
            "contact_ladders.call.steps[1].wait",
            "unknown field",
        ),
        ('levels.4 = { officers = "fast" }', "", "kinds.fraud.levels", "missing: 4"),
        (
            'levels.4 = { officers = "fast" }',
            'levels.4 = { officers = "fast" }\nlevels.5 = { officers = "fast" }',
            "kinds.fraud.levels.5",
            "1 (most urgent) to 4",
        ),
        (
            'levels.3 = { officers = "fast" }',
            'levels.3 = { officers = "slow" }',
            "kinds.fraud.levels.3.officers",
            "officer ladder (fast)",
        ),
        (
            'levels.2 = { officers = "fast", contact = "call" }',
            'levels.2 = { officers = "fast", contact = "sms" }',
            "kinds.fraud.levels.2.contact",
            "contact ladder (call)",
        ),
        (
            'levels.3 = { officers = "fast" }',
            'levels.3 = { officers = "fast", broadcast = true }',
            "kinds.fraud.levels.3.broadcast",
            '"area"',
        ),
        (
            'levels.3 = { officers = "fast" }',
            'levels.3 = { officers = "fast", at_expiry = "panic" }',
            "kinds.fraud.levels.3.at_expiry",
            "close",
        ),
        (
            'targets = ["resident", "phone"]',
            'targets = ["resident", "moon"]',
            "kinds.fraud.targets[1]",
            "area",
        ),
        ('targets = ["resident", "phone"]\n', "", "kinds.fraud.targets", "missing"),
        ("[kinds.fraud]", "[kinds.Fraud]", "kinds.Fraud", "lower_snake_case"),
        (
            '{ role = "county_centre", ack_within_s = 600, repeats = 2 },',
            "",
            "officer_ladders.fast.steps[0].role",
            "county_centre",
        ),
        ("version = 1", "version = 2", "version", "1"),
        ("version = 1", "verison = 1", "verison", "no such table"),
        ("[kinds.fraud]", "[kinds.fraud\n", "(top level)", "valid TOML"),
    ],
)
def test_mistakes_name_file_key_and_expectation(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RuleError) as err:
        load_escalation(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert expected in err.value.expected
    assert str(path) in str(err.value) and key in str(err.value)


def test_missing_tables_are_named(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as err:
        load_escalation(write(tmp_path, "version = 1\n"))
    assert err.value.key == "officer_ladders"
    with pytest.raises(RuleError) as err:
        load_escalation(tmp_path / "nope.toml")
    assert "readable" in err.value.expected
