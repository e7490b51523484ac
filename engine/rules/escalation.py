"""Escalation ladders (``rules/escalation.toml``): loaded, validated, compiled into a policy.

The file names ladders once (``[officer_ladders.NAME]``, ``[contact_ladders.NAME]``) and each kind
and level picks one of each, so sixteen kind/level pairs stay readable. Every problem raises
:class:`~engine.rules.loading.RuleError` with the file, the dotted key and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec

from engine.model import KIND_PATTERN
from engine.rules.correlation import NO_CORRELATION, CorrelationRules
from engine.rules.loading import RuleError, convert, default_rules_dir, load_toml
from engine.rules.roster import EMPTY_ROSTERS, Rosters
from engine.rules.silences import EMPTY_SILENCES, Silences

T = TypeVar("T")

Role = Literal["grid_officer", "duty_officer", "chief", "county_centre"]
Channel = Literal["call", "chat", "visit"]
TargetType = Literal["resident", "phone", "area"]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)]
Repeats = Annotated[int, msgspec.Meta(ge=0, le=20)]
LEVELS = (1, 2, 3, 4)


class OfficerStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Notify the officer in ``role``; if nobody acks within ``ack_within_s``, repeat or go on."""

    role: Role
    ack_within_s: Seconds
    repeats: Repeats = 0


class ContactStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Reach the resident by ``channel``; wait ``within_s`` for answered / read / visit done."""

    channel: Channel
    within_s: Seconds
    repeats: Repeats = 0


class OfficerLadder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Officers in order of escalation."""

    steps: Annotated[tuple[OfficerStep, ...], msgspec.Meta(min_length=1)]


class ContactLadder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Ways to reach the resident in order; ``when_exhausted``: report to officers, or close."""

    steps: Annotated[tuple[ContactStep, ...], msgspec.Meta(min_length=1)]
    when_exhausted: Literal["report", "close"] = "report"


class LevelRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one level of one kind uses, by ladder name."""

    officers: str
    contact: str | None = None
    broadcast: bool = False
    at_expiry: Literal["close", "report"] = "close"
    ack_timeout_s: Seconds | None = None


class KindRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which targets a kind accepts, and its four levels."""

    targets: Annotated[tuple[TargetType, ...], msgspec.Meta(min_length=1)]
    levels: dict[str, Any]
    ack_timeout_s: Seconds | None = None
    """Acknowledged with no outcome this long after: the officer ladder re-opens (once per
    rung). A level's own ``ack_timeout_s`` wins; neither: an ack stands until the end."""


class Reload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a reload (SIGHUP) does to warnings already running: ``keep`` the ladders they
    started with, or ``adopt`` the new ones at their next step."""

    running: Literal["keep", "adopt"] = "keep"


# --- compiled policy (what the machine reads) ---------------------------------------------------


class LevelPolicy(msgspec.Struct, frozen=True):
    """The ladders for one kind at one level, with names resolved."""

    officers: tuple[OfficerStep, ...]
    contact: tuple[ContactStep, ...] = ()
    contact_when_exhausted: Literal["report", "close"] = "report"
    broadcast: bool = False
    at_expiry: Literal["close", "report"] = "close"
    ack_timeout_s: float | None = None


class KindPolicy(msgspec.Struct, frozen=True):
    """Accepted targets and the policy for levels 1..4 (index 0 is level 1)."""

    targets: frozenset[str]
    levels: tuple[LevelPolicy, LevelPolicy, LevelPolicy, LevelPolicy]


class EscalationRules(msgspec.Struct, frozen=True):
    """All kinds. ``policy(kind, level)`` is what the machine asks for.

    The other rule files the machine reads when a rung fires ride along, so the machine keeps
    one ``rules`` argument: ``rosters`` and ``silences`` (read when a rung fires),
    ``correlation`` (exercise recipients; the shell reads the rest; none
    unless loaded from a rules folder).
    :func:`engine.rules.sources.load_rules` fills them from a rules folder."""

    kinds: dict[str, KindPolicy]
    source: str = "<memory>"
    correlation: CorrelationRules = NO_CORRELATION
    rosters: Rosters = EMPTY_ROSTERS
    silences: Silences = EMPTY_SILENCES
    running_warnings: Literal["keep", "adopt"] = "keep"

    def policy(self, kind: str, level: int) -> LevelPolicy:
        """The policy for a kind at a level; KeyError for a kind the rules do not know."""
        return self.kinds[kind].levels[level - 1]


# --- loading ----------------------------------------------------------------------------------


_CHOICES: dict[str, tuple[str, ...]] = {
    "role": get_args(Role),
    "channel": get_args(Channel),
    "targets": get_args(TargetType),
    "at_expiry": ("close", "report"),
    "when_exhausted": ("report", "close"),
}


def _convert(obj: object, type_: type[T], file: Path, prefix: str) -> T:
    return convert(obj, type_, file, prefix, _CHOICES)


def _table(raw: dict[str, Any], name: str, file: Path) -> dict[str, Any]:
    value = raw.get(name)
    if not isinstance(value, dict) or not value:
        raise RuleError(file, name, "a table with at least one entry")
    return value


def load_escalation(path: str | Path | None = None) -> EscalationRules:
    """Load and validate an escalation file (default: the shipped ``rules/escalation.toml``)."""
    file = Path(path) if path is not None else default_rules_dir() / "escalation.toml"
    raw = load_toml(file, dict[str, Any])
    for key in raw:
        if key not in ("version", "officer_ladders", "contact_ladders", "kinds", "reload"):
            raise RuleError(
                file,
                key,
                "no such table (known: officer_ladders, contact_ladders, kinds, reload)",
            )
    if raw.get("version", 1) != 1:
        raise RuleError(file, "version", "1 (the only format this engine reads)")

    officer_ladders: dict[str, OfficerLadder] = {}
    for name, body in _table(raw, "officer_ladders", file).items():
        ladder = _convert(body, OfficerLadder, file, f"officer_ladders.{name}")
        if ladder.steps[-1].role != "county_centre":
            raise RuleError(
                file,
                f"officer_ladders.{name}.steps[{len(ladder.steps) - 1}].role",
                '"county_centre" as the last step, so a warning whose target is unknown still '
                "reaches someone",
            )
        officer_ladders[name] = ladder

    contact_ladders: dict[str, ContactLadder] = {}
    for name, body in (raw.get("contact_ladders") or {}).items():
        contact_ladders[name] = _convert(body, ContactLadder, file, f"contact_ladders.{name}")

    kinds: dict[str, KindPolicy] = {}
    for kind, body in _table(raw, "kinds", file).items():
        prefix = f"kinds.{kind}"
        if not re.match(KIND_PATTERN, kind):
            raise RuleError(file, prefix, "a kind name in lower_snake_case (a-z, 0-9, _)")
        rule = _convert(body, KindRule, file, prefix)
        unknown = sorted(set(rule.levels) - {str(n) for n in LEVELS})
        if unknown:
            raise RuleError(
                file, f"{prefix}.levels.{unknown[0]}", "a level from 1 (most urgent) to 4"
            )
        missing = [str(n) for n in LEVELS if str(n) not in rule.levels]
        if missing:
            raise RuleError(
                file, f"{prefix}.levels", f"levels 1, 2, 3 and 4 (missing: {', '.join(missing)})"
            )
        policies = []
        for n in LEVELS:
            lkey = f"{prefix}.levels.{n}"
            lr = _convert(rule.levels[str(n)], LevelRule, file, lkey)
            if lr.officers not in officer_ladders:
                known = ", ".join(sorted(officer_ladders))
                raise RuleError(
                    file, f"{lkey}.officers", f"the name of an officer ladder ({known})"
                )
            contact: ContactLadder | None = None
            if lr.contact is not None:
                if lr.contact not in contact_ladders:
                    known = ", ".join(sorted(contact_ladders)) or "none defined"
                    raise RuleError(
                        file, f"{lkey}.contact", f"the name of a contact ladder ({known})"
                    )
                contact = contact_ladders[lr.contact]
            if lr.broadcast and "area" not in rule.targets:
                raise RuleError(
                    file, f"{lkey}.broadcast", 'false, or "area" in this kind\'s targets'
                )
            policies.append(
                LevelPolicy(
                    officers=officer_ladders[lr.officers].steps,
                    contact=contact.steps if contact else (),
                    contact_when_exhausted=contact.when_exhausted if contact else "report",
                    broadcast=lr.broadcast,
                    at_expiry=lr.at_expiry,
                    ack_timeout_s=lr.ack_timeout_s
                    if lr.ack_timeout_s is not None
                    else rule.ack_timeout_s,
                )
            )
        kinds[kind] = KindPolicy(targets=frozenset(rule.targets), levels=tuple(policies))  # type: ignore[arg-type]
    reload = _convert(raw.get("reload", {}), Reload, file, "reload")
    return EscalationRules(kinds=kinds, source=str(file), running_warnings=reload.running)
