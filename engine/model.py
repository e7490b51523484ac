"""Messages the engine speaks: warning instructions in, feedback in, actions out.

All are frozen msgspec structs, validated when decoded, so a bad message is rejected at the edge
with an error that names the field instead of failing somewhere inside the engine. ``gc=False``
because these are immutable trees without cycles: a million pending warnings would otherwise
make every garbage collection walk all of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

import msgspec

from engine.errors import WarnDispatchError
from engine.explain import explain_message
from engine.privacy import mask_phone

# --- warning instructions -------------------------------------------------------------------

KIND_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
"""Kinds are open-ended (rules may add more), so the model only checks the spelling."""

Kind = Annotated[str, msgspec.Meta(pattern=KIND_PATTERN)]
Level = Annotated[int, msgspec.Meta(ge=1, le=4)]
"""1 is the most urgent, 4 the least."""
WarningId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x2e\x30-\x7e]+$")
]
"""The dedup key: printable ASCII without spaces or ``/``, since idempotency keys are
``{id}/{revision}/...`` and must split back unambiguously."""
MsgType = Literal["alert", "update", "cancel"]
"""As in OASIS CAP: a new warning, a change to it (e.g. a higher level), or its withdrawal."""
WarningStatus = Literal["actual", "exercise"]
"""As CAP's ``status`` (Actual, Exercise): an exercise runs the real ladders, but every action
goes to the exercise's recipients (rules/correlation.toml ``[exercise]``), never to a resident,
and it is counted apart."""
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
"""Wall-clock time from the warning centre; must carry a time zone so it is unambiguous."""

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)
"""Times outside these bounds are refused at the edge: the engine turns every time into epoch
seconds and the journal into UTC, and a year-1 time with a +14:00 offset cannot be converted."""

RESIDENT_ID_MAX = 2**31 - 1
"""Registry ids are dense and start at 0; anything larger is not an id the journal can hold."""

ShortText = Annotated[str, msgspec.Meta(max_length=256)]


def check_time(name: str, value: datetime) -> None:
    """Raise ``ValueError`` naming the field (msgspec turns it into a validation error) if
    ``value`` is not a time the engine can hold (see :data:`EARLIEST`, :data:`LATEST`)."""
    try:
        ok = EARLIEST <= value.astimezone(UTC) <= LATEST
    except (OverflowError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must be a time from 2000 to 2999 (UTC)")


KNOWN_KINDS = ("fraud", "help_request", "missing_person", "road_hazard")


class ResidentTarget(
    msgspec.Struct, frozen=True, gc=False, tag="resident", forbid_unknown_fields=True
):
    """A resident known by the registry's dense id."""

    id: Annotated[int, msgspec.Meta(ge=0, le=RESIDENT_ID_MAX)]


class PhoneTarget(msgspec.Struct, frozen=True, gc=False, tag="phone", forbid_unknown_fields=True):
    """A phone number, looked up in the registry; may belong to nobody we know."""

    phone: Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9][0-9 -]{3,24}$")]

    def __repr__(self) -> str:  # never show the number in clear, even in a traceback
        return f"PhoneTarget(phone={mask_phone(self.phone)!r})"


class AreaTarget(msgspec.Struct, frozen=True, gc=False, tag="area", forbid_unknown_fields=True):
    """A jurisdiction unit (grid, village, station) for area-wide kinds such as road hazards."""

    area: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


Target = ResidentTarget | PhoneTarget | AreaTarget
TargetType = Literal["resident", "phone", "area"]


def target_type(target: Target) -> TargetType:
    """The tag of a target, as used in rule files (``targets = ["resident", "phone"]``)."""
    if isinstance(target, ResidentTarget):
        return "resident"
    if isinstance(target, PhoneTarget):
        return "phone"
    return "area"


def describe_target(target: Target) -> str:
    """A target as it may appear in timelines and logs: ids and areas as is, phones masked."""
    if isinstance(target, ResidentTarget):
        return f"resident {target.id}"
    if isinstance(target, PhoneTarget):
        return f"phone {mask_phone(target.phone)}"
    return f"area {target.area}"


# --- who answers for a target -------------------------------------------------------------


class Responders(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Everyone the ladders may reach for one target. ``None`` means "not known for this target".

    ``unresolved`` says why something is missing (no personal data): the machine then skips the
    unknown rungs, goes to the station or county level and writes the reason into the timeline.
    """

    county_centre: str
    grid_officer: str | None = None
    duty_officer: str | None = None
    chief: str | None = None
    visitors: tuple[str, ...] = ()
    resident: int | None = None
    grid: str | None = None
    station: str | None = None
    household: str | None = None
    """A key shared by the residents of one household (the registry knows a household by its
    shared phone number; this is a digest of it, never the number), for correlation."""
    unresolved: str | None = None

    def officer(self, role: str) -> str | None:
        """The officer key for a ladder role (``grid_officer`` ... ``county_centre``)."""
        return getattr(self, role)


class WarningInstruction(
    msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True
):
    """One instruction from the warning centre; ``id`` is the dedup key for alert/update/cancel."""

    id: WarningId
    kind: Kind
    level: Level
    target: Target
    issued_at: Timestamp
    expires: Timestamp
    details: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    msg_type: MsgType = "alert"
    status: WarningStatus = "actual"

    def __post_init__(self) -> None:
        check_time("issued_at", self.issued_at)
        check_time("expires", self.expires)
        if self.expires <= self.issued_at:
            raise ValueError("`expires` must be later than `issued_at`")


# --- feedback events --------------------------------------------------------------------------

CallResultKind = Literal["answered", "busy", "no_answer"]
OutcomeKind = Literal["dissuaded", "defrauded", "unreachable", "false_alarm", "resolved"]


class _Feedback(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Common fields: which warning, and optionally which action (idempotency key) it answers.

    Subclasses repeat ``frozen=True``: msgspec would inherit it, but type checkers read Struct
    through ``dataclass_transform``, where a subclass of a frozen class must say so itself.
    """

    warning_id: WarningId
    key: ShortText | None = None


class Acknowledged(_Feedback, frozen=True, tag="ack"):
    """An officer took the warning: the officer ladder stops escalating."""

    officer: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CallResult(_Feedback, frozen=True, tag="call"):
    """The result of a phone call to the resident."""

    result: CallResultKind


class MessageRead(_Feedback, frozen=True, tag="read"):
    """The resident read the chat message."""


class VisitDone(_Feedback, frozen=True, tag="visit"):
    """A neighbour or village cadre saw the resident in person."""

    visitor: ShortText | None = None


class Outcome(_Feedback, frozen=True, tag="outcome"):
    """How it ended. Closes the warning."""

    outcome: OutcomeKind


FeedbackEvent = Acknowledged | CallResult | MessageRead | VisitDone | Outcome


# --- actions (the outbox) ---------------------------------------------------------------------

ActionKind = Literal[
    "notify_officer",  # ask an officer to take the warning (expects an ack)
    "call",  # phone the resident
    "chat",  # send the resident a chat message
    "visit",  # ask a neighbour / village cadre to visit
    "broadcast",  # area-wide message (fanned out by campaigns)
    "report",  # tell an officer something went wrong (unreachable, expired); no ack expected
    "area_alert",  # tell a grid's officer that many warnings hit the grid at once (correlation)
    "inform",  # tell an officer who already acked about a change (e.g. level raised)
    "stand_down",  # the warning ended: stop working on it
]


Cause = Literal[
    "new",  # a new warning (or an update taken as one)
    "repeat",  # nobody answered within the rung's deadline: the same rung again
    "escalation",  # nobody answered within the rung's deadline, and its repeats: the next rung
    "feedback",  # a report moved the warning on (an ack, a busy or unanswered call, a read)
    "update",  # the warning centre changed the warning (a higher level, a new expiry)
    "cancel",  # the warning centre withdrew it
    "outcome",  # an outcome was reported
    "expiry",  # it reached its expiry
    "exhausted",  # a ladder ran out of people to try
    "ack_timeout",  # acknowledged, but no outcome in time: the officer ladder re-opens
    "linked",  # another warning about the same resident, phone or household joined it
]
"""Why an action was sent or a timeline line written, as data. ``reason`` says the same for
people; code (statistics, metrics) reads ``cause`` and never parses the prose."""


class Action(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One thing a channel adapter must do. ``key`` makes it idempotent downstream.

    ``key`` is ``{warning id}/{revision}/{track}{step}/{attempt}``: the same attempt of the same
    step always has the same key (a replay is deduplicated), every new attempt gets a new one.
    ``to`` is an officer key, ``resident:{id}``, ``phone:{number}`` (for the call adapter only;
    never logged), or an area id.
    """

    key: str
    warning_id: str
    action: ActionKind
    to: str
    kind: str
    level: int
    step: int = 0
    attempt: int = 1
    reason: str = ""
    cause: Cause = "new"
    exercise: bool = False
    """An exercise's action: ``to`` is an exercise recipient; statistics count it apart, and it
    never counts against a resident's frequency caps or window tags."""

    @property
    def first_contact(self) -> bool:
        """The warning's first call or chat to a registered resident (contact step 0, first
        attempt): what window tags (``warned_7d``) and the time-to-reach metric count."""
        return (
            not self.exercise
            and self.action in ("call", "chat")
            and self.step == 0
            and self.attempt == 1
            and self.to.startswith("resident:")
        )

    def __repr__(self) -> str:  # actions end up in logs and tracebacks: mask phone numbers
        to = f"phone:{mask_phone(self.to)}" if self.to.startswith("phone:") else self.to
        return f"Action(key={self.key!r}, action={self.action!r}, to={to!r}, level={self.level})"


# --- decoding at the edge ---------------------------------------------------------------------


class InvalidMessage(WarnDispatchError, ValueError):
    """A message was rejected at the edge. ``field`` is a dotted path, ``expected`` says why."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field or "(message)"
        self.expected = expected
        super().__init__(f"{self.field}: {self.expected}")


class InvalidWarning(InvalidMessage):
    """A warning instruction that cannot be accepted (bad field, unknown kind, wrong target)."""


class InvalidFeedback(InvalidMessage):
    """A feedback event that cannot be accepted."""


def _translate(
    exc: msgspec.ValidationError | msgspec.DecodeError, error: type[InvalidMessage]
) -> InvalidMessage:
    """Turn msgspec's message into (dotted field, what was expected), without repeating any
    value the sender wrote (reasons reach logs; see :func:`engine.errors.explain`)."""
    field, what = explain_message(exc, CHOICES)
    return error(field, what or "a valid message")


CHOICES: dict[str, tuple[str, ...]] = {
    "msg_type": get_args(MsgType),
    "status": get_args(WarningStatus),
    "result": get_args(CallResultKind),
    "outcome": get_args(OutcomeKind),
    "type": ("ack", "call", "read", "visit", "outcome"),
    "target.type": ("resident", "phone", "area"),
}
"""Allowed values by field path, so a rejection says what was expected, not what was sent."""

_warning_decoder = msgspec.json.Decoder(WarningInstruction)
_feedback_decoder = msgspec.json.Decoder(FeedbackEvent)


def decode_warning(data: bytes | str) -> WarningInstruction:
    """JSON -> WarningInstruction, or :class:`InvalidWarning` naming the field."""
    try:
        return _warning_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _translate(exc, InvalidWarning) from exc


def decode_feedback(data: bytes | str) -> FeedbackEvent:
    """JSON -> one of the feedback events (tagged by ``type``), or :class:`InvalidFeedback`."""
    try:
        return _feedback_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _translate(exc, InvalidFeedback) from exc
