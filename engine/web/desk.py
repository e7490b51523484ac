"""What the API asks of the engine behind it: a :class:`Desk`.

Why a protocol: one engine answers from its own memory (:class:`LocalDesk`), while a member
of a group of engines answers for the whole group from the board the partition owners publish
in Redis (``engine.group.desk``). The handlers, the access rules and the console are the same
for both; only where states come from and where writes go differ.

Every write returns once it is durable: in the local journal (local desk), or in Redis (group
desk, where the owner applies it a moment later).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from engine.app import App
from engine.machine import WarningState
from engine.model import FeedbackEvent
from engine.registry.registry import Registry
from engine.service import accept_campaign
from engine.state_feed import StateFeed
from engine.stats import Summary

__all__ = ["Desk", "LocalDesk"]


class Desk(Protocol):
    """The engine (or group of engines) as the API sees it."""

    @property
    def registry(self) -> Registry: ...

    @property
    def feed(self) -> StateFeed: ...

    def now(self) -> float: ...

    def status(self, warning_id: str) -> WarningState | None: ...

    def states(self) -> Iterable[WarningState]: ...

    async def submit(self, raw: bytes) -> None:
        """Raises :class:`engine.model.InvalidMessage` naming the field."""
        ...

    async def feedback(self, event: FeedbackEvent) -> None: ...

    def summary(self) -> Summary: ...

    def campaign_ids(self) -> Iterable[str]: ...

    def progress(self, campaign_id: str) -> dict[str, Any] | None:
        """A campaign's progress as JSON-ready builtins; None if unknown."""
        ...

    async def issue_campaign(self, raw: bytes) -> dict[str, Any]:
        """Raises the errors of :mod:`engine.campaigns.campaign` (invalid, duplicate)."""
        ...

    async def cancel_campaign(self, campaign_id: str) -> dict[str, Any]: ...

    async def confirm_task(self, campaign_id: str, officer: str) -> bool:
        """Whether this click changed anything (False: already confirmed)."""
        ...


class LocalDesk:
    """One engine, answering from its own memory."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.engine = app.engine

    @property
    def registry(self) -> Registry:
        return self.app.config.registry

    @property
    def feed(self) -> StateFeed:
        return self.engine.feed

    def now(self) -> float:
        return self.engine.now()

    def status(self, warning_id: str) -> WarningState | None:
        return self.engine.status(warning_id)

    def states(self) -> Iterable[WarningState]:
        return self.engine.states()

    async def submit(self, raw: bytes) -> None:
        await self.engine.submit(raw)
        await self.engine.durable()

    async def feedback(self, event: FeedbackEvent) -> None:
        await self.engine.feedback(event)
        await self.engine.durable()

    def summary(self) -> Summary:
        return self.app.summary()

    def campaign_ids(self) -> Iterable[str]:
        return self.app.campaigns.campaign_ids()

    def progress(self, campaign_id: str) -> dict[str, Any] | None:
        if campaign_id not in self.app.campaigns.campaign_ids():
            return None
        out: dict[str, Any] = msgspec.to_builtins(self.app.campaigns.progress(campaign_id))
        return out

    async def issue_campaign(self, raw: bytes) -> dict[str, Any]:
        app = self.app
        campaign = await accept_campaign(self.engine, app.campaigns, raw, app.campaign_issued)
        await self.engine.durable()
        out: dict[str, Any] = msgspec.to_builtins(app.campaigns.progress(campaign.id))
        return out

    async def cancel_campaign(self, campaign_id: str) -> dict[str, Any]:
        progress = self.app.campaigns.cancel(campaign_id)
        await self.engine.durable()
        out: dict[str, Any] = msgspec.to_builtins(progress)
        return out

    async def confirm_task(self, campaign_id: str, officer: str) -> bool:
        return self.app.campaigns.confirm(f"{campaign_id}/{officer}", officer)
