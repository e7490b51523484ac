"""Tags the engine keeps itself: "something happened to this resident within the last N days".

The taxonomy marks such tags ``dynamic = true`` and names them ``<event>_<N><unit>``:
``warned_7d`` holds for 7 days after a resident was last warned, so an admin can write
``elderly & ~warned_7d`` to spare people who just had a warning. One event feeds every window
of its family (``warned`` sets ``warned_24h``, ``warned_7d``, ``warned_30d``, ``warned_90d``).

Marks arrive in time order, so each tag keeps a FIFO of (time, ids) batches; :meth:`expire`
pops the batches older than the window and clears the residents not marked again since. Setting
and clearing bits is vectorised, so marking a county-wide campaign's 500,000 recipients costs
milliseconds, and compiled audiences see the change at once (bits change in place).

Dynamic tags whose meaning is not a plain window (``antifraud_msg_none_90d`` is an absence,
``warn_frequent_30d`` a count) are listed in :attr:`RecentTags.unmaintained`.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable

import numpy as np

from engine.campaigns.campaign import Campaign, ChatSend, SmsSend
from engine.model import Action
from engine.registry.registry import Registry

_WINDOW = re.compile(r"^(?P<event>[a-z][a-z0-9_]*?)_(?P<n>\d+)(?P<unit>h|d)$")
_UNIT_S = {"h": 3600.0, "d": 86400.0}
#: Dynamic tags whose event part says they are not "happened within N" windows.
_NOT_A_WINDOW = re.compile(r"(_none|^warn_frequent)")
EXPIRE_EVERY_S = 3600.0


class _Window:
    """One dynamic tag: its window and the batches of marks not yet expired."""

    __slots__ = ("batches", "tag", "window_s")

    def __init__(self, tag: int, window_s: float) -> None:
        self.tag = tag
        self.window_s = window_s
        self.batches: deque[tuple[float, np.ndarray]] = deque()


class RecentTags:
    """Maintains the registry's window tags from events the engine observes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.events: dict[str, list[_Window]] = {}
        self.unmaintained: list[str] = []
        self._last: dict[str, np.ndarray] = {}  # event -> last mark time per resident (0: never)
        self._expired_at = -math.inf
        self._antifraud: set[str] = set()  # ids of anti-fraud campaigns
        taxonomy = registry.taxonomy
        for key in getattr(taxonomy, "dynamic_keys", ()):
            m = _WINDOW.match(key)
            if m is None or _NOT_A_WINDOW.search(m.group("event")):
                self.unmaintained.append(key)
                continue
            window = int(m.group("n")) * _UNIT_S[m.group("unit")]
            self.events.setdefault(m.group("event"), []).append(
                _Window(taxonomy.index(key), window)
            )

    def mark(self, event: str, residents: Iterable[int] | np.ndarray, now: float) -> None:
        """``event`` happened to ``residents`` at ``now`` (epoch seconds, non-decreasing)."""
        windows = self.events.get(event)
        if not windows:
            return
        ids = np.unique(
            np.asarray(
                list(residents) if not isinstance(residents, np.ndarray) else residents,
                dtype=np.int64,
            )
        )
        reg = self.registry
        ids = ids[(ids >= 0) & (ids < reg.n_ids)]
        ids = ids[reg.alive[ids]]
        if ids.size == 0:
            return
        last = self._last.get(event)
        if last is None or last.size < reg.n_ids:
            grown = np.zeros(max(reg.n_ids, 1024), dtype=np.float64)
            if last is not None:
                grown[: last.size] = last
            last = self._last[event] = grown
        last[ids] = now
        for w in windows:
            reg.sets["tag"][w.tag].add_many(ids)
            w.batches.append((now, ids))

    def observe_actions(self, actions: Iterable[Action], now: float) -> None:
        """Mark residents a warning reached: its first call or chat to them marks ``warned``
        (and ``fraud_alert`` for fraud). Expires stale tags at most once an hour of engine time,
        so tags are never more than an hour (or one quiet spell of the outbox) late."""
        warned: list[int] = []
        fraud: list[int] = []
        for a in actions:
            if a.first_contact:
                rid = int(a.to.removeprefix("resident:"))
                warned.append(rid)
                if a.kind == "fraud":
                    fraud.append(rid)
        if warned:
            self.mark("warned", warned, now)
        if fraud:
            self.mark("fraud_alert", fraud, now)
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self.expire(now)

    def observe_campaign_issued(self, campaign: Campaign) -> None:
        """Remember anti-fraud campaigns: their sends also mark ``antifraud_msg``."""
        if campaign.category == "antifraud":
            self._antifraud.add(campaign.id)

    def observe_campaign(self, actions: Iterable[object], now: float) -> None:
        """Campaign messages sent to residents (chat or SMS) mark ``broadcast``, and those of
        anti-fraud campaigns ``antifraud_msg`` too."""
        reached: list[int] = []
        antifraud: list[int] = []
        for a in actions:
            if isinstance(a, ChatSend | SmsSend) and a.to.startswith("resident:"):
                rid = int(a.to.removeprefix("resident:"))
                reached.append(rid)
                if a.campaign_id in self._antifraud:
                    antifraud.append(rid)
        if reached:
            self.mark("broadcast", reached, now)
        if antifraud:
            self.mark("antifraud_msg", antifraud, now)

    def expire(self, now: float) -> int:
        """Clear every window tag whose last mark is older than its window; returns bits cleared.

        Call it periodically (e.g. hourly of engine time); tags are then at most that late.
        """
        self._expired_at = now
        cleared = 0
        for event, windows in self.events.items():
            last = self._last.get(event)
            if last is None:  # never marked, so no batches
                continue
            for w in windows:
                while w.batches and w.batches[0][0] <= now - w.window_s:
                    _, ids = w.batches.popleft()
                    stale = ids[last[ids] <= now - w.window_s]  # not marked again since
                    if stale.size:
                        self.registry.sets["tag"][w.tag].discard_many(stale)
                        cleared += int(stale.size)
        return cleared

    def maintained(self) -> list[str]:
        """The window tags this object keeps, by key."""
        keys = self.registry.taxonomy.keys
        return sorted(keys[w.tag] for ws in self.events.values() for w in ws)
