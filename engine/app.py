"""The composition root: the one place that assembles a running engine from its parts.

Why one place: ``warn-dispatch serve``, the simulator's replay, the tests and any system that
embeds the engine all need the same assembly (journal -> engine -> campaign service, with the
statistics recorder and the window tags watching what crosses the edges). Done once here, a new
component (an HTTP server, a group of engines) is added in one place, not in every caller.
Alertmanager keeps its process wiring in ``app/`` for the same reason.

    config = AppConfig(registry=Registry.load(path), journal=Path("var/journal"))
    async with open_app(config) as app:
        stats = await app.serve(intake, outbox, feedback=fb, dead_letters=dead)

``App`` exposes the parts for callers that drive them differently (the simulator feeds the
engine directly and observes with its own clock). Nothing here does I/O of its own beyond what
the parts do; transports stay with the caller, who knows which ones it wants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from engine import durability
from engine.campaigns import CampaignService
from engine.campaigns.campaign import Campaign, CampaignAction
from engine.journal import FsyncPolicy, Journal
from engine.journal.backend import JournalBackend
from engine.registry.registry import Registry
from engine.registry.responders import RegistryDirectory
from engine.rules.escalation import EscalationRules
from engine.rules.sources import load_rules
from engine.scheduler import Engine
from engine.service import (
    AreaCampaigns,
    CampaignFeed,
    InputObserver,
    Observer,
    ServiceStats,
    serve,
)
from engine.stats import Stats, Summary
from engine.transport.base import DeadLetterSink, IntakeSource, OutboxSink
from engine.window_tags import RecentTags

if TYPE_CHECKING:
    from engine.metrics import Metrics

CAMPAIGN_CHANNEL = 65536
"""Campaign actions buffered between the campaign service and the outbox."""


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """What a running engine is made of. Only ``registry`` is required.

    ``rules``: the machine's rules; by default the packaged rules folder as ``serve`` loads it
    (:func:`engine.rules.sources.load_rules`: ladders, rosters, silences, correlation).

    ``journal``: a folder (opened and closed by the app), an already open :class:`Journal`
    (the caller owns it), or None for an engine that keeps everything in memory.
    ``wall_clock`` / ``campaign_wall_clock``: injected clocks (the simulator's month; tests).
    ``stats_start``: the time statistics count from (default: the engine's ``now()`` at open).
    ``engine_options``: further :class:`Engine` options (``retain_ended_s``, capacities ...).
    ``stats`` / ``window_tags`` / ``directory``: share these with other apps over the same
    registry (the partitions a group member owns each run an app; one registry has one set of
    window tags, and one directory compiles each neighbour audience once, not once per app).
    ``metrics``: keep Prometheus metrics (:mod:`engine.metrics`; ``App.metrics``), fed by the
    same observers as statistics; off by default, since they cost a little per action.
    """

    registry: Registry
    rules: EscalationRules | None = None
    journal: Path | JournalBackend | None = None
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy.always)
    snapshot_every: int = 50_000
    wall_clock: Callable[[], datetime] | None = None
    campaign_wall_clock: Callable[[float], datetime] | None = None
    stats_start: float | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    stats: Stats | None = None
    window_tags: RecentTags | None = None
    directory: RegistryDirectory | None = None
    metrics: bool = False


@dataclass(frozen=True)
class App:
    """A running engine and the parts around it, for the duration of :func:`open_app`."""

    config: AppConfig
    engine: Engine
    campaigns: CampaignService
    campaign_actions: trio.MemoryReceiveChannel[CampaignAction]
    stats: Stats
    window_tags: RecentTags
    journal: JournalBackend | None
    metrics: Metrics | None = None
    area_campaigns: AreaCampaigns | None = None
    """Starts the campaign of an area alert while :meth:`serve` runs (rules permitting)."""

    @property
    def observers(self) -> list[Observer]:
        """Told of every batch of actions sent: statistics and window tags (``warned_7d``)."""
        hooks: list[Observer] = [self.stats.observe_actions, self.window_tags.observe_actions]
        if self.metrics is not None:
            hooks.append(self.metrics.observe_actions)
        if self.area_campaigns is not None:
            hooks.append(self.area_campaigns.observe_actions)
        return hooks

    @property
    def input_observers(self) -> list[InputObserver]:
        """Told of every accepted batch of warnings and feedback."""
        hooks: list[InputObserver] = [self.stats.observe_inputs]
        if self.metrics is not None:
            hooks.append(self.metrics.observe_inputs)
        return hooks

    def campaign_issued(self, campaign: Campaign) -> None:
        """A campaign was issued: statistics and window tags remember its category."""
        self.stats.observe_campaign_issued(campaign)
        self.window_tags.observe_campaign_issued(campaign)

    def campaign_feed(self, source: IntakeSource | None) -> CampaignFeed:
        """Campaigns from ``source`` (or none, only re-issued ones) into this app's service."""
        observers: Sequence[Callable[[list[object], float], object]] = [
            self.stats.observe_campaign_many,
            self.window_tags.observe_campaign,
        ]
        return CampaignFeed(
            source,
            self.campaigns,
            self.campaign_actions,
            observers=observers,
            on_issued=self.campaign_issued,
        )

    async def serve(
        self,
        intake: IntakeSource,
        outbox: OutboxSink,
        *,
        feedback: IntakeSource | None = None,
        campaigns: IntakeSource | None = None,
        dead_letters: DeadLetterSink | None = None,
        stop: trio.Event | None = None,
        handle_signals: bool = True,
        reload: Callable[[], EscalationRules] | None = None,
        task_status: trio.TaskStatus[ServiceStats] = trio.TASK_STATUS_IGNORED,
    ) -> ServiceStats:
        """Run :func:`engine.service.serve` with this app's parts and observers until SIGINT,
        SIGTERM or ``stop``; ``reload`` is called on SIGHUP for new rules. Returns the
        service's counters."""
        async with trio.open_nursery() as nursery:
            if self.area_campaigns is not None:
                nursery.start_soon(self.area_campaigns.run)
            result = await serve(
                self.engine,
                intake,
                outbox,
                feedback=feedback,
                stop=stop,
                handle_signals=handle_signals,
                observers=self.observers,
                input_observers=self.input_observers,
                campaigns=self.campaign_feed(campaigns),
                dead_letters=dead_letters,
                reload=reload,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()
        return result

    def summary(self) -> Summary:
        """The statistics so far, in the format of the simulator's ``summary.json``."""
        return self.stats.summary(until=self.engine.now())


def _metrics(engine: Engine, campaigns: CampaignService, journal: JournalBackend | None) -> Metrics:
    from engine.metrics import Metrics  # prometheus-client loads only for engines that export

    return Metrics(engine, campaigns, journal)


@asynccontextmanager
async def open_app(config: AppConfig) -> AsyncIterator[App]:
    """Open the journal (if a folder), the engine over the registry, and the campaign service;
    close them in reverse order on exit."""
    async with AsyncExitStack() as stack:
        journal: JournalBackend | None
        if isinstance(config.journal, Path):
            journal = await stack.enter_async_context(
                Journal.open(
                    config.journal,
                    fsync=config.fsync,
                    validate=durability.decode_record,
                    validate_snapshot=durability.decode_snapshot,
                )
            )
        else:
            journal = config.journal
        reg = config.registry
        engine = await stack.enter_async_context(
            Engine.open(
                config.directory if config.directory is not None else RegistryDirectory(reg),
                config.rules if config.rules is not None else load_rules(),
                journal=journal,
                snapshot_every=config.snapshot_every,
                wall_clock=config.wall_clock,
                **config.engine_options,
            )
        )
        send, recv = trio.open_memory_channel[CampaignAction](CAMPAIGN_CHANNEL)
        options: dict[str, Any] = {
            "on_ended": lambda campaign_id, _state: engine.campaign_records.end(campaign_id),
            "exercise_recipients": lambda: engine.rules.correlation.exercise.recipients,
        }
        if config.campaign_wall_clock is not None:
            options["wall_clock"] = config.campaign_wall_clock
        campaigns = await stack.enter_async_context(CampaignService.open(reg, send, **options))
        start = config.stats_start if config.stats_start is not None else engine.now()
        app = App(
            config=config,
            engine=engine,
            campaigns=campaigns,
            campaign_actions=recv,
            stats=config.stats
            if config.stats is not None
            else Stats.from_registry(reg, start=start),
            window_tags=config.window_tags if config.window_tags is not None else RecentTags(reg),
            journal=journal,
            metrics=_metrics(engine, campaigns, journal) if config.metrics else None,
            # issued area campaigns are counted like any other: app.campaign_issued, late bound
            area_campaigns=AreaCampaigns(engine, campaigns, lambda c: app.campaign_issued(c)),
        )
        yield app
