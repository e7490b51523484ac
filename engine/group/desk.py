"""The API's desk for a member of a group: reads from the board mirror, writes into the
producers' streams. Any member answers for the whole group.

Reads (warnings, timelines, live events, campaign progress, statistics) come from
:class:`~engine.group.board.BoardMirror`, in memory. Writes go where a producer's would
(``wd:intake``, ``wd:feedback``, ``wd:campaigns``), checked here first with the same
validation the owner applies, so a bad request still answers 422 with field and expected; the
routers take them to the partition's owner. A write answers once Redis holds it (and, with
``wait_replicas``, its replicas): the owner applies it a moment later, and the board shows it
when the owner has.

Statistics are each member's, merged: counts add up; a percentile is the highest of the
members' (the pooled percentile lies between the lowest and the highest, so this is an upper
bound); hourly series are aligned on their last hour.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from engine.campaigns.campaign import (
    CancelCampaign,
    ConfirmTask,
    DuplicateCampaign,
    decode_campaign,
)
from engine.group.board import BoardMirror
from engine.group.client import run_sync
from engine.group.partitions import Keys
from engine.machine import WarningState, validate_arrival, validate_warning
from engine.model import FeedbackEvent, decode_warning
from engine.registry.registry import Registry
from engine.rules.escalation import EscalationRules, load_escalation
from engine.state_feed import StateFeed
from engine.stats import Stats, Summary

__all__ = ["GroupDesk", "merge_summaries"]

SAME_IN_EVERY_MEMBER = frozenset({"contacts", "residents", "officers", "hours", "lower"})
"""Fields every member computes from the same registry (or the same bins): not added up."""

_summary = msgspec.json.Decoder(Summary).decode


def _merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) == {"n", "p50", "p90", "p99"}:  # Percentiles
            out = {"n": a["n"] + b["n"]}
            for q in ("p50", "p90", "p99"):
                values = [x[q] for x in (a, b) if x[q] is not None]
                out[q] = max(values) if values else None
            return out
        merged = dict(a)
        for k, v in b.items():
            merged[k] = _merge(a[k], v, k) if k in a else v
        return merged
    if isinstance(a, list) and isinstance(b, list):
        if key in SAME_IN_EVERY_MEMBER:
            return a if len(a) >= len(b) else b
        if all(isinstance(x, dict) for x in a + b):  # rows: by key (or label)
            name = "key" if any("key" in x for x in a + b) else "label"
            rows = {x[name]: x for x in a}
            for x in b:
                rows[x[name]] = _merge(rows[x[name]], x) if x[name] in rows else x
            return list(rows.values())
        n = max(len(a), len(b))  # hourly series: aligned on the last hour
        pa, pb = [0] * (n - len(a)) + a, [0] * (n - len(b)) + b
        return [x + y for x, y in zip(pa, pb, strict=True)]
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return max(a, b) if key in SAME_IN_EVERY_MEMBER else a + b
    return a


def merge_summaries(summaries: Iterable[Summary]) -> Summary | None:
    """One summary for the group from each member's (None if there are none)."""
    merged: Any = None
    for s in summaries:
        d = msgspec.to_builtins(s)
        merged = d if merged is None else _merge(merged, d)
    return None if merged is None else msgspec.convert(merged, Summary)


class GroupDesk:
    """A member's desk over the whole group (see the module docstring)."""

    def __init__(
        self,
        mirror: BoardMirror,
        client: Any,
        keys: Keys,
        registry: Registry,
        rules: EscalationRules | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.mirror = mirror
        self.client = client
        self.keys = keys
        self._registry = registry
        self.rules = rules if rules is not None else load_escalation()
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._empty = Stats.from_registry(registry, start=mirror_now())

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def feed(self) -> StateFeed:
        return self.mirror.feed

    def now(self) -> float:
        return mirror_now()

    def status(self, warning_id: str) -> WarningState | None:
        return self.mirror.states.get(warning_id)

    def states(self) -> Iterable[WarningState]:
        return list(self.mirror.states.values())

    def _xadd(self, what: str, raw: bytes) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.keys.stream(what), {"raw": raw})
        if self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        replies = pipe.execute()
        if self.wait_replicas and int(replies[-1]) < self.wait_replicas:
            raise OSError(f"only {replies[-1]} of {self.wait_replicas} replicas acknowledged")

    async def submit(self, raw: bytes) -> None:
        warning = decode_warning(raw)
        validate_warning(warning, self.rules)
        validate_arrival(warning, self.now())
        await run_sync(self._xadd, "intake", raw)

    async def feedback(self, event: FeedbackEvent) -> None:
        await run_sync(self._xadd, "feedback", msgspec.json.encode(event))

    def summary(self) -> Summary:
        parts = [_summary(v) for v in self.mirror.member_stats.values()]
        merged = merge_summaries(parts)
        return merged if merged is not None else self._empty.summary(until=self.now())

    def campaign_ids(self) -> Iterable[str]:
        return list(self.mirror.campaigns)

    def progress(self, campaign_id: str) -> dict[str, Any] | None:
        return self.mirror.campaigns.get(campaign_id)

    async def issue_campaign(self, raw: bytes) -> dict[str, Any]:
        campaign = decode_campaign(raw)
        if campaign.id in self.mirror.campaigns:
            raise DuplicateCampaign(
                f"id: a campaign id not used before ({campaign.id} was accepted earlier)"
            )
        await run_sync(self._xadd, "campaigns", raw)
        return {"campaign_id": campaign.id, "state": "queued"}

    async def cancel_campaign(self, campaign_id: str) -> dict[str, Any]:
        control = msgspec.json.encode(CancelCampaign(campaign_id=campaign_id))
        await run_sync(self._xadd, "campaigns", control)
        return {**(self.progress(campaign_id) or {}), "requested": "cancel"}

    async def confirm_task(self, campaign_id: str, officer: str) -> bool:
        control = ConfirmTask(
            campaign_id=campaign_id, task_id=f"{campaign_id}/{officer}", officer=officer
        )
        await run_sync(functools.partial(self._xadd, "campaigns", msgspec.json.encode(control)))
        return True


def mirror_now() -> float:
    """Epoch seconds: the clock every member's engine runs on."""
    return time.time()
