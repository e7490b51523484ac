"""What a campaign is, what planning produces, and the actions campaigns put in the outbox.

Campaigns come from admins, so :class:`Campaign` validates its fields when decoded (or built).
Plans hold resident ids as numpy arrays, never one Python object per resident: a county-wide
campaign is 1.3 M residents. Actions carry resident ids only; the channel adapter looks up the
chat account or phone number, so nothing personal passes through the outbox or its logs.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Literal, get_args

import msgspec
import numpy as np

from engine.errors import WarnDispatchError
from engine.explain import explain_message
from engine.model import check_time

Priority = Literal["routine", "urgent"]
CampaignId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
"""Printable ASCII without '/' or spaces, because it is part of task ids and idempotency keys."""
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


# --- errors ----------------------------------------------------------------------------------


class CampaignError(WarnDispatchError, ValueError):
    """Base of every campaign error. Raised before any state changes: nothing is half-sent."""


class InvalidCampaign(CampaignError):
    """A campaign message with a bad field (``field`` is a dotted path)."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field or "(campaign)"
        self.expected = expected
        super().__init__(f"{self.field}: {expected}")


class InvalidAudience(CampaignError):
    """The audience expression does not parse or names an unknown tag/unit; ``cause`` has the
    position and suggestions.

    ``str()`` is value-free (it reaches dead letters and logs): the kind of error, our own
    suggestions and the position, never the text typed. ``detail`` quotes the expression with a
    caret, for the person who typed it (the command line, an HTTP answer)."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        self.detail = f"audience: {cause}"
        safe = getattr(cause, "safe", None)
        pos = getattr(cause, "pos", None)
        text = f"{safe} at position {pos}" if safe is not None else type(cause).__name__
        super().__init__(f"audience: {text}")


class EmptyAudience(CampaignError):
    """The expression is fine but matches nobody: almost always a mistake in the expression."""


class CampaignExpired(CampaignError):
    """The campaign's expiry is not in the future."""


class DuplicateCampaign(CampaignError):
    """A campaign with this id was already issued."""


class UnknownCampaign(CampaignError):
    """No campaign with this id."""


class UnknownTask(CampaignError):
    """No send task with this id."""


class TaskNotYours(CampaignError):
    """An officer tried to confirm another officer's task."""


class CampaignClosed(CampaignError):
    """The campaign was cancelled or expired, so its tasks can no longer be confirmed."""


# --- the campaign ----------------------------------------------------------------------------


class Media(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A reference to an image, video or document stored elsewhere (never the bytes)."""

    kind: Literal["image", "video", "audio", "document", "link"]
    ref: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class Campaign(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One broadcast as an admin issues it. Times are wall-clock and must carry a time zone."""

    id: CampaignId
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    audience: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    priority: Priority
    issuer: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "general"
    media: Media | None = None
    starts_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    status: Literal["actual", "exercise"] = "actual"
    """CAP's status: an ``exercise`` is planned for real (audience, caps, tasks, so its
    progress shows what it would do) but sends nothing to residents or officers' tasks and
    leaves the frequency caps untouched; the exercise's recipients get one notice each."""

    def __post_init__(self) -> None:
        for name in ("starts_at", "expires_at"):
            value = getattr(self, name)
            if value is not None:
                check_time(name, value)
        if self.starts_at and self.expires_at and self.expires_at <= self.starts_at:
            raise ValueError("`expires_at` must be later than `starts_at`")
        if not self.text.strip() or not self.title.strip():
            raise ValueError("`title` and `text` must not be blank")

    @property
    def content_key(self) -> str:
        """Identity of the content (text and media): the same content reaches a resident once,
        whichever campaigns carry it."""
        media = f"{self.media.kind}:{self.media.ref}" if self.media else ""
        return hashlib.blake2b(f"{self.text}\x00{media}".encode(), digest_size=12).hexdigest()


# --- planning output -------------------------------------------------------------------------


class Reason(IntEnum):
    """Why a resident of the audience gets (or does not get) the campaign. One per resident."""

    CHAT = 0  # in their contact officer's send task
    SMS = 1  # no officer contact: an SMS instead
    DUPLICATE = 2  # already has (or is about to get) the same content from another campaign
    CAPPED_TOTAL = 3  # routine cap for all categories reached in the window
    CAPPED_CATEGORY = 4  # routine cap for this category reached in the window


REASON_TEXT: dict[Reason, str] = {
    Reason.CHAT: "sent from the contact officer's chat account",
    Reason.SMS: "no officer contact: sent by SMS",
    Reason.DUPLICATE: "already received this content",
    Reason.CAPPED_TOTAL: "routine frequency cap reached",
    Reason.CAPPED_CATEGORY: "routine frequency cap for this category reached",
}


class SendTask(msgspec.Struct, frozen=True, kw_only=True):
    """One officer's share of a campaign: only residents who are that officer's contacts.

    ``ids`` are sorted resident ids; ``pos`` their positions in the plan's ``ids`` (so status
    updates are one array write). Routine tasks wait for the officer's confirmation.
    """

    id: str
    campaign_id: str
    officer: str
    officer_index: int
    ids: np.ndarray
    pos: np.ndarray

    @property
    def count(self) -> int:
        return int(self.ids.size)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The pure result of planning: a reason for every resident of the audience, and tasks.

    ``ids`` is the whole resolved audience (sorted) and ``reason[i]`` says what happens to
    ``ids[i]``. ``not_before`` (trio time) is when sending may begin: the start time, or the
    end of quiet hours for routine content (then ``deferred`` is True).
    """

    campaign: Campaign
    content_key: str
    ids: np.ndarray
    reason: np.ndarray
    tasks: tuple[SendTask, ...]
    sms_ids: np.ndarray
    sms_pos: np.ndarray
    start: float
    not_before: float
    expires: float
    deferred: bool

    def count(self, reason: Reason) -> int:
        return int(np.count_nonzero(self.reason == reason))

    def sendable(self) -> np.ndarray:
        """Ids that will be sent to (chat or SMS), sorted."""
        return self.ids[self.reason <= Reason.SMS]


# --- progress and explanations ---------------------------------------------------------------

CampaignState = Literal["scheduled", "running", "done", "cancelled", "expired"]
TaskState = Literal["waiting", "deferred", "awaiting_confirmation", "sending", "done", "dropped"]


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """Counts per campaign, in residents unless named ``tasks``.

    ``resolved`` = ``capped`` + ``duplicate`` + ``to_send``; ``to_send`` = ``sent`` +
    ``pending`` + ``dropped``. ``deferred`` and ``awaiting_confirmation`` are parts of
    ``pending``; ``read`` is a part of ``sent``.
    """

    campaign_id: str
    state: CampaignState
    resolved: int
    capped: int
    duplicate: int
    to_send: int
    sms: int
    tasks: int
    confirmed_tasks: int
    confirmed: int
    awaiting_confirmation: int
    deferred: int
    pending: int
    sent: int
    read: int
    dropped: int
    deferred_until: float | None = None
    exercise: bool = False
    """An exercise: the counts say what it would send; ``sent`` stays 0."""


Outcome = Literal["not_in_audience", "capped", "duplicate", "pending", "sent", "read", "dropped"]
Channel = Literal["chat", "sms", "none"]


class Disposition(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one resident in one campaign, with the reason in words."""

    campaign_id: str
    resident: int
    outcome: Outcome
    channel: Channel
    officer: str | None
    reason: str


# --- outbox actions --------------------------------------------------------------------------


class ConfirmRequest(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag="campaign_confirm"):
    """Ask an officer to confirm (one click) sending a routine campaign to their contacts."""

    key: str
    campaign_id: str
    task_id: str
    officer: str
    title: str
    residents: int


class ChatSend(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag="campaign_chat"):
    """Send the content to one resident from their contact officer's chat account."""

    key: str
    campaign_id: str
    task_id: str
    officer: str
    to: str  # "resident:{id}"
    priority: Priority
    title: str
    text: str
    media: Media | None = None
    attempt: int = 1
    exercise: bool = False
    """An exercise campaign's notice: ``to`` is ``officer:{key}`` of an exercise recipient;
    statistics count it apart and it reaches no resident."""


class SmsSend(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag="campaign_sms"):
    """Send the content by SMS to a resident who has no officer contact."""

    key: str
    campaign_id: str
    to: str  # "resident:{id}"
    priority: Priority
    title: str
    text: str
    media: Media | None = None
    attempt: int = 1


class TaskClosed(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag="campaign_closed"):
    """A task ended before it was fully sent (cancelled, expired): withdraw the confirm prompt."""

    key: str
    campaign_id: str
    task_id: str
    officer: str
    reason: Literal["cancelled", "expired"]
    unsent: int


CampaignAction = ConfirmRequest | ChatSend | SmsSend | TaskClosed

_campaign_decoder = msgspec.json.Decoder(Campaign)


def decode_campaign(data: bytes | str) -> Campaign:
    """JSON -> Campaign, or :class:`InvalidCampaign` naming the field."""
    try:
        return _campaign_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        field, what = explain_message(exc, {"priority": get_args(Priority)})
        raise InvalidCampaign(field, what) from exc


# --- campaign control (on the campaigns stream, beside campaigns) ----------------------------


class ConfirmTask(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="control",
    tag="confirm",
):
    """An officer's one click, sent through the campaigns stream: send this routine task.
    ``campaign_id`` routes it to the campaign's owner in a group of engines."""

    campaign_id: CampaignId
    task_id: Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
    officer: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CancelCampaign(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="control",
    tag="cancel",
):
    """Stop a campaign: unsent residents are dropped, confirm prompts withdrawn."""

    campaign_id: CampaignId


CampaignControl = ConfirmTask | CancelCampaign

_control_decoder = msgspec.json.Decoder(CampaignControl)


def is_control(data: bytes) -> bool:
    """Whether a message on the campaigns stream is control rather than a campaign (cheap)."""
    return b'"control"' in data


def decode_control(data: bytes | str) -> CampaignControl:
    """JSON -> :data:`CampaignControl`, or :class:`InvalidCampaign` naming the field."""
    try:
        return _control_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        field, what = explain_message(exc, {"control": ("confirm", "cancel")})
        raise InvalidCampaign(field, what) from exc
