"""Replay a period of traffic through the real engine under trio's MockClock.

The engine (scheduler + state machines), the campaign service and the statistics recorder run
exactly as in production; only time is virtual (``MockClock(autojump_threshold=0)``: whenever
every task is waiting, the clock jumps to the next deadline), so a month passes in seconds.
The wall clock the engine and campaigns see is ``spec.start + trio time``.

One driver task walks the pre-generated, time-sorted traffic with array pointers and the
actors' reaction heap, handing everything due in one batch (``submit_many``,
``feedback_many``, bulk chat arrays); two consumer tasks take the engine's outbox in batches
(``receive_batch``) and the campaign channel (drained with ``receive_nowait``) and feed the
recorder and the actors. Nothing waits per event.

With a ``live`` console (``simulate --serve``, :mod:`simulator.live`) the clock does not jump:
it runs at ``speed`` simulated seconds per real second, and the engine's HTTP side is served
beside the engine in the same trio run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np
import trio
import trio.testing

from engine.app import App, AppConfig, open_app
from engine.campaigns import Campaign, CampaignError, CampaignService
from engine.campaigns.campaign import decode_campaign
from engine.incidents import area_campaign
from engine.journal import FsyncPolicy, Journal
from engine.model import (
    KNOWN_KINDS,
    Action,
    AreaTarget,
    FeedbackEvent,
    MsgType,
    PhoneTarget,
    ResidentTarget,
    WarningInstruction,
)
from engine.registry.registry import Registry
from engine.rules.escalation import EscalationRules
from engine.rules.sources import load_rules
from engine.scheduler import Engine
from engine.stats import Stats, Summary
from engine.window_tags import RecentTags
from simulator.actors import Actors
from simulator.duty import shift_of
from simulator.traffic import Traffic, TrafficSpec, generate_traffic

CAMPAIGN_POLL_S = 15.0
"""Simulated seconds between takes from the campaign channel while campaigns are sending. The
channel (``engine.app.CAMPAIGN_CHANNEL``) holds several times what all accounts send in that
time."""


class Live(Protocol):
    """What ``simulate --serve`` adds to a replay (:class:`simulator.live.LiveConsole`): a
    speed, a server started beside the engine, and a wait once the period is over.

    ``serve(app, end_period)`` runs until the replay's nursery is cancelled; it may call
    ``end_period()`` to end the period early (Ctrl-C while the month plays). When the period
    is over (or ended), the replay takes its results, then awaits ``linger()`` before it
    closes the engine."""

    speed: float
    interrupted: bool
    """The live side ended the period early."""

    async def serve(
        self, app: App, end_period: Callable[[], None], *, task_status: trio.TaskStatus[None]
    ) -> None: ...

    async def linger(self) -> None: ...


ProgressHook = Callable[[float, int], None]
"""Called about once per simulated hour with (simulated seconds, events so far)."""


class DutyFigures(msgspec.Struct, kw_only=True):
    """Shifts and correlation in one run: officer notices and missed ack deadlines by the
    shift they fell in (day or night, local time), warnings correlated into incidents or
    inhibited by an area warning, area alerts and the campaigns they started."""

    rosters: str = ""
    notices: dict[str, int] = msgspec.field(default_factory=lambda: {"day": 0, "night": 0})
    missed: dict[str, int] = msgspec.field(default_factory=lambda: {"day": 0, "night": 0})
    correlated: int = 0
    inhibited: int = 0
    area_alerts: int = 0
    area_campaigns: int = 0


class SimResult(msgspec.Struct, kw_only=True):
    """What one replay produced. ``events``: every message that crossed the engine's edges
    (warnings and follow-ups in, feedback in, actions out, campaign actions out, chats)."""

    label: str
    days: int
    residents: int
    officers: int
    wall_s: float
    generate_s: float
    events: int
    pending: int
    warnings_submitted: int
    campaigns_issued: int
    campaigns_refused: int
    broadcast_campaigns: int
    summary: Summary
    duty: DutyFigures = msgspec.field(default_factory=DutyFigures)


class _Replay:
    def __init__(
        self,
        registry: Registry,
        spec: TrafficSpec,
        traffic: Traffic,
        rules: EscalationRules,
        hook: ProgressHook | None,
        engine_options: dict[str, object] | None = None,
        on_finish: Callable[[Engine, Traffic], None] | None = None,
        journal_dir: Path | None = None,
        live: Live | None = None,
    ) -> None:
        self.live = live
        self.live_wall_end = 0.0
        self.engine_options = engine_options or {}
        self.journal_dir = journal_dir
        self.on_finish = on_finish
        self.reg = registry
        self.recent: RecentTags  # warned_7d, broadcast_7d ...: the app's, set when it opens
        self.stats: Stats  # the app's recorder, on the simulated clock
        self.spec = spec
        self.traffic = traffic
        self.rules = rules
        self.hook = hook
        self.events = 0
        self.issued = self.refused = self.broadcasts = 0
        self.duty = DutyFigures(rosters=rules.rosters.source if rules.rosters.rotations else "")
        self.area_queue: list[Campaign] = []
        self.wake = trio.Event()
        self.wake_at = math.inf
        officer_col = registry.officer[: registry.n_ids]
        counts = np.bincount(officer_col[officer_col >= 0], minlength=len(registry.officers))
        ref = spec.actors.ack_load_reference
        self.load = {
            o.key: (float(counts[i]) / ref) ** spec.actors.ack_load_exponent
            for i, o in enumerate(registry.officers)
            if counts[i] > 0
        }
        j = registry.jurisdiction
        self.grid_index = j.index["grid"]

    def _warning(
        self, i: int, now_wall: datetime, msg_type: MsgType = "alert"
    ) -> WarningInstruction:
        t = self.traffic
        ttype, target = int(t.w_ttype[i]), int(t.w_target[i])
        tgt: ResidentTarget | PhoneTarget | AreaTarget
        if ttype == 0:
            tgt = ResidentTarget(id=target)
        elif ttype == 1:
            tgt = PhoneTarget(phone=t.phones[target])
        else:
            tgt = AreaTarget(area=t.areas[target])
        level = int(t.w_level[i])
        if msg_type == "update":
            level = max(1, level - 1)
        issued = self.spec.start + timedelta(seconds=float(t.w_time[i]))
        return WarningInstruction(
            id=f"w{i:06d}",
            kind=KNOWN_KINDS[int(t.w_kind[i])],
            level=level,
            target=tgt,
            issued_at=max(issued, now_wall) if msg_type != "alert" else issued,
            expires=issued + timedelta(hours=self.spec.expires_h[int(t.w_level[i]) - 1]),
            msg_type=msg_type,
        )

    def _poke(self) -> None:
        if self.actors.next_due < self.wake_at or self.actors.broadcasts:
            self.wake.set()

    async def _engine_consumer(self, engine: Engine) -> None:
        stream = engine.actions()
        while True:
            try:
                batch = await stream.receive_batch()
            except trio.EndOfChannel:
                return
            now = trio.current_time()
            self.events += len(batch)
            self.stats.observe_actions(batch, now)
            self.recent.observe_actions(batch, now)  # any one monotonic clock will do
            self.actors.on_actions(batch, now - self.t0)
            self._duty(batch, now - self.t0, engine)
            if self.journal_dir is not None:  # delivered: a restart must not send them again
                engine.mark_sent([a.key for a in batch])
            self._poke()

    def _duty(self, batch: Sequence[Action], rel: float, engine: Engine) -> None:
        """Notices and missed deadlines by shift; area alerts' campaigns for the driver."""
        local = self.spec.start + timedelta(seconds=rel)
        shift = shift_of(local, self.spec)
        d = self.duty
        for a in batch:
            if a.action == "notify_officer" and not a.exercise:
                d.notices[shift] += 1
                if a.cause in ("repeat", "escalation"):
                    d.missed[shift] += 1
            elif a.action == "area_alert":
                raw = area_campaign(a, self.rules.correlation, engine.now())
                if raw is not None:
                    self.area_queue.append(decode_campaign(raw))

    async def _campaign_consumer(self, recv: trio.MemoryReceiveChannel[object]) -> None:
        """Wakes for the first action, then lets sends pile up for ``CAMPAIGN_POLL_S`` of
        simulated time and takes them all: one wake-up per poll instead of one per send
        (a county-wide fan-out is ~30 k sends a minute across all officer accounts)."""
        while True:
            try:
                batch = [await recv.receive()]
            except trio.EndOfChannel:
                return
            await trio.sleep(CAMPAIGN_POLL_S)
            # Officer accounts send on a 3 s grid, so some send at exactly this instant; one
            # more checkpoint lets all of them run first, whatever order trio picked.
            await trio.lowlevel.checkpoint()
            while True:
                try:
                    batch.append(recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            now = trio.current_time()
            self.events += len(batch)
            self.stats.observe_campaign_many(batch, now)
            self.recent.observe_campaign(batch, now)
            self.actors.on_campaign(batch, now - self.t0)
            self._poke()

    # The ways events are handed over; benchmarks/simulate.py's naive peer overrides them.

    async def _submit(self, engine: Engine, batch: list[WarningInstruction]) -> None:
        await engine.submit_many(batch)

    async def _feed(self, engine: Engine, batch: Sequence[FeedbackEvent]) -> None:
        await engine.feedback_many(batch)

    def _chats(self, officers: np.ndarray, residents: np.ndarray, times: np.ndarray) -> None:
        self.stats.observe_chat(officers, residents, times)

    def _drain(self, engine: Engine, recv: trio.MemoryReceiveChannel[object]) -> None:
        """At the end of the period, count what is already in the outboxes. Without this, the
        totals would depend on whether a consumer or the driver runs first at the last instant
        (trio shuffles tasks that are ready together)."""
        now = trio.current_time()
        actions = []
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
            while True:
                actions.append(engine.actions().receive_nowait())
        self.events += len(actions)
        self.stats.observe_actions(actions, now)
        sends: list[object] = []
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
            while True:
                sends.append(recv.receive_nowait())
        self.events += len(sends)
        self.stats.observe_campaign_many(sends, now)

    async def _issue(self, cs: CampaignService, campaign: Campaign) -> None:
        try:
            await cs.issue(campaign)
        except CampaignError:
            self.refused += 1
            return
        self.issued += 1
        self.stats.observe_campaign_issued(campaign)
        self.recent.observe_campaign_issued(campaign)

    async def _driver(self, engine: Engine, cs: CampaignService) -> None:
        t, t0, spec = self.traffic, self.t0, self.spec
        end = spec.days * 86400.0
        wi = fi = ci = ki = 0
        next_hour = 3600.0
        while True:
            rel = trio.current_time() - t0
            now = trio.current_time()
            wall = spec.start + timedelta(seconds=rel)
            j = int(np.searchsorted(t.w_time, rel, "right"))
            if j > wi:
                batch = [self._warning(i, wall) for i in range(wi, j)]
                for w in batch:
                    self.stats.observe_warning(w, now)
                await self._submit(engine, batch)
                self.events += len(batch)
                wi = j
            j = int(np.searchsorted(t.f_time, rel, "right"))
            if j > fi:
                batch = [
                    self._warning(
                        int(t.f_warning[k]), wall, "cancel" if t.f_cancel[k] else "update"
                    )
                    for k in range(fi, j)
                ]
                await self._submit(engine, batch)
                self.events += len(batch)
                fi = j
            j = int(np.searchsorted(t.c_time, rel, "right"))
            if j > ci:
                self._chats(t.c_officer[ci:j], t.c_resident[ci:j], t.c_time[ci:j] + t0)
                self.events += j - ci
                ci = j
            while ki < t.k_time.size and t.k_time[ki] <= rel:
                await self._issue(cs, t.campaigns[ki])
                ki += 1
            feedback, confirms = self.actors.due(rel)
            if feedback:
                for ev in feedback:
                    self.stats.observe_feedback(ev, now)
                await self._feed(engine, feedback)
                self.events += len(feedback)
            for task_id in confirms:
                # The campaign may have expired or been cancelled before the click.
                with contextlib.suppress(CampaignError):
                    cs.confirm(task_id)
            while self.area_queue:
                before = self.issued
                await self._issue(cs, self.area_queue.pop(0))
                self.duty.area_campaigns += self.issued - before
            while self.actors.broadcasts:
                a = self.actors.broadcasts.pop()
                kind = "grid" if a.to in self.grid_index else "village"
                self.broadcasts += 1
                await self._issue(
                    cs,
                    Campaign(
                        id=f"b-{a.warning_id}",
                        title=f"{a.kind} alert",
                        text=f"area warning {a.warning_id} ({a.kind})",
                        audience=f"{kind}:{a.to}",
                        priority="urgent",
                        issuer="warning-centre",
                        category="safety",
                    ),
                )
            if rel >= next_hour:
                next_hour = (rel // 3600 + 1) * 3600
                if self.hook is not None:
                    self.hook(rel, self.events)
            if rel >= end:
                return
            # A plain float: a numpy deadline would make trio's clock itself a numpy float.
            nxt = min(
                float(t.w_time[wi]) if wi < t.w_time.size else math.inf,
                float(t.f_time[fi]) if fi < t.f_time.size else math.inf,
                float(t.k_time[ki]) if ki < t.k_time.size else math.inf,
                self.actors.next_due,
                next_hour,
                end,
            )
            self.wake = trio.Event()
            self.wake_at = nxt
            with trio.move_on_at(t0 + nxt):
                await self.wake.wait()
            self.wake_at = math.inf

    async def run(self) -> tuple[int, Summary]:
        if self.journal_dir is None:
            return await self._run(None)
        # Opened before the clock is read: opening does file work in a thread, and under
        # autojump the virtual clock may move while it does.
        async with Journal.open(self.journal_dir, FsyncPolicy.none()) as journal:
            return await self._run(journal)

    async def _run(self, journal: Journal | None) -> tuple[int, Summary]:
        self.t0 = t0 = trio.current_time()
        start = self.spec.start
        self.actors = Actors(self.spec.actors, self.spec.seed + 7, self.load, start)

        def engine_wall() -> datetime:
            return start + timedelta(seconds=trio.current_time() - t0)

        def campaign_wall(t: float) -> datetime:
            return start + timedelta(seconds=t - t0)

        config = AppConfig(
            registry=self.reg,
            rules=self.rules,
            journal=journal,
            wall_clock=engine_wall,
            campaign_wall_clock=campaign_wall,
            stats_start=t0,
            engine_options=self.engine_options,
            metrics=self.live is not None,
        )
        period = trio.CancelScope()  # the live console may end the period early
        async with open_app(config) as app, trio.open_nursery() as nursery:
            if self.live is not None:
                await nursery.start(self.live.serve, app, period.cancel)
            engine, cs, recv = app.engine, app.campaigns, app.campaign_actions
            self.stats, self.recent = app.stats, app.window_tags
            nursery.start_soon(self._engine_consumer, engine)
            nursery.start_soon(self._campaign_consumer, recv)
            with period:
                await self._driver(engine, cs)
            self._drain(engine, recv)
            pending = engine.pending
            summary = self.stats.summary(until=trio.current_time())
            st = engine.stats
            self.duty.correlated, self.duty.inhibited = st.correlated, st.inhibited
            self.duty.area_alerts = st.area_alerts
            if self.on_finish is not None:
                self.on_finish(engine, self.traffic)
            if self.live is not None:  # the results are taken: the console shows them
                self.live_wall_end = time.perf_counter()  # lingering is not replaying
                await self.live.linger()
            nursery.cancel_scope.cancel()
        return pending, summary


def replay(
    registry: Registry,
    spec: TrafficSpec | None = None,
    *,
    rules: EscalationRules | None = None,
    label: str = "baseline",
    hook: ProgressHook | None = None,
    engine_options: dict[str, object] | None = None,
    on_finish: Callable[[Engine, Traffic], None] | None = None,
    journal_dir: Path | None = None,
    driver: type[_Replay] | None = None,
    live: Live | None = None,
) -> SimResult:
    """Generate the traffic for ``spec`` and replay it through the engine; blocking.

    ``engine_options`` go to :meth:`Engine.open`; ``on_finish(engine, traffic)`` runs at the
    end of the period, before the engine closes (tests inspect warning states there).
    ``journal_dir``: run the engine with its journal there (fsync policy ``none``: the
    simulation measures the engine, not the disk); it must not hold an earlier run's journal.
    ``driver``: a subclass of the replay driver (the benchmark's naive peer).
    ``live``: replay in real time times ``live.speed`` (trio's MockClock with that rate, no
    autojump), with ``live.serve`` started beside the engine and ``live.linger()`` awaited
    when the period is over (``simulate --serve``: the console watches the month; see
    :class:`Live`).
    """
    spec = spec or TrafficSpec()
    t_gen = time.perf_counter()
    traffic = generate_traffic(spec, registry)
    generate_s = time.perf_counter() - t_gen
    sim = (driver or _Replay)(
        registry,
        spec,
        traffic,
        rules or load_rules(),
        hook,
        engine_options,
        on_finish,
        journal_dir,
        live,
    )
    t_run = time.perf_counter()
    clock = (
        trio.testing.MockClock(autojump_threshold=0)
        if live is None
        else trio.testing.MockClock(rate=live.speed)
    )
    pending, summary = trio.run(sim.run, clock=clock)
    wall_end = sim.live_wall_end if live is not None else time.perf_counter()
    return SimResult(
        label=label,
        days=spec.days,
        residents=len(registry),
        officers=len(registry.officers),
        wall_s=wall_end - t_run,
        generate_s=generate_s,
        events=sim.events,
        pending=pending,
        warnings_submitted=int(traffic.w_time.size),
        campaigns_issued=sim.issued,
        campaigns_refused=sim.refused,
        broadcast_campaigns=sim.broadcasts,
        duty=sim.duty,
        summary=summary,
    )
