"""Prometheus metrics of a running engine (``/metrics``), with bounded label sets.

Why prometheus-client rather than our own text format: it is the reference implementation of
the exposition format, and every system we are compared with (Alertmanager, Grafana OnCall)
exports through it or its Go twin. Each app gets its own :class:`CollectorRegistry`, never the
process-global one, so tests and a group member's many apps do not collide.

Two kinds of metric, and why:

- **Read at scrape time** (:class:`EngineCollector`): how many warnings are in each state,
  outbox and journal figures, campaign progress. Counting them from the engine's own state
  when Prometheus asks costs nothing on the hot path and can never drift from the truth.
- **Observed as things happen** (:class:`Observers`): time to acknowledge, time to reach the
  resident, escalations and missed deadlines, actions sent. These are fed by the same
  observer hooks that feed statistics and window tags, once per batch.

Labels are bounded: ``kind`` (the warning kinds of the rules), ``level`` (1-4), ``state``,
``action`` (eight kinds), ``station`` (about 30 per county) and ``cause``; never a resident,
warning or officer id. Every metric is listed with its meaning in README's "Metrics".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.model import Acknowledged, Action, FeedbackEvent, WarningInstruction

if TYPE_CHECKING:
    from engine.campaigns import CampaignService
    from engine.journal.backend import JournalBackend
    from engine.scheduler import Engine

__all__ = ["DURATION_BUCKETS", "EngineCollector", "Metrics"]

DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 86400)
"""Seconds: from a call picked up at once to a warning left for a day."""

MISSED = frozenset({"repeat", "escalation", "exhausted"})
"""Causes that mean a deadline passed without an answer."""


class EngineCollector(Collector):
    """Gauges read from the engine, its journal and its campaigns at each scrape."""

    def __init__(
        self, engine: Engine, campaigns: CampaignService, journal: JournalBackend | None
    ) -> None:
        self.engine = engine
        self.campaigns = campaigns
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        warnings = GaugeMetricFamily(
            "wd_warnings",
            "Warnings the engine holds, by kind, level and state (active, closed, expired...).",
            labels=["kind", "level", "state"],
        )
        drills = GaugeMetricFamily(
            "wd_exercise_warnings",
            "Exercise warnings (CAP status Exercise), counted apart from wd_warnings.",
            labels=["kind", "level", "state"],
        )
        counts: Counter[tuple[bool, str, str, str]] = Counter(
            (s.warning.status == "exercise", s.warning.kind, str(s.warning.level), s.status)
            for s in engine.states()
        )
        for (drill, kind, level, status), n in sorted(counts.items()):
            (drills if drill else warnings).add_metric([kind, level, status], n)
        yield warnings
        yield drills
        yield from _reloads(engine)
        yield _gauge(
            "wd_outbox_unsent", "Actions produced and not yet confirmed sent.", engine.unsent
        )
        yield _gauge(
            "wd_warnings_pending", "Active warnings with a deadline to keep.", engine.pending
        )
        stats = engine.stats
        yield _gauge(
            "wd_dead_letters_engine", "Messages the engine loop refused.", stats.dead_letters
        )
        joined = CounterMetricFamily(
            "wd_warnings_joined",
            "Warnings that joined another's incident instead of a ladder of their own: "
            "correlated (same resident, phone or household) or inhibited (an area warning).",
            labels=["why"],
        )
        joined.add_metric(["correlated"], stats.correlated)
        joined.add_metric(["inhibited"], stats.inhibited)
        yield joined
        yield CounterMetricFamily(
            "wd_area_alerts",
            "Area alerts: many warnings in one grid within minutes (rules/correlation.toml).",
            value=stats.area_alerts,
        )
        journal = self.journal
        if journal is not None:
            yield _gauge(
                "wd_journal_records", "Journal records written since open.", journal.stats.records
            )
            counters = journal.stats
            latency = getattr(
                counters, "last_fsync_latency", getattr(counters, "last_batch_latency", 0)
            )
            yield _gauge(
                "wd_journal_last_commit_seconds",
                "Wall-clock seconds of the journal's last commit (fsync, or Redis batch).",
                float(latency),
            )
        campaigns = GaugeMetricFamily(
            "wd_campaign_residents",
            "Residents of campaigns by campaign state and send state (sent, pending, dropped).",
            labels=["campaign_state", "send_state"],
        )
        totals: Counter[tuple[str, str]] = Counter()
        for cid in self.campaigns.campaign_ids():
            p = self.campaigns.progress(cid)
            for part in ("sent", "pending", "dropped", "capped", "duplicate"):
                totals[(p.state, part)] += getattr(p, part)
        for (state, part), n in sorted(totals.items()):
            campaigns.add_metric([state, part], n)
        yield campaigns


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _reloads(engine: Engine) -> Iterator[Metric]:
    """Rule reloads (SIGHUP): taken and refused, when last, and the generation in force, so an
    alert can fire on ``increase(wd_rules_reloads_total{result="failed"}[10m]) > 0``."""
    r = engine.reloads
    total = CounterMetricFamily(
        "wd_rules_reloads",
        "Rule reloads by result (ok, failed: the old rules stayed).",
        labels=["result"],
    )
    total.add_metric(["ok"], r.ok)
    total.add_metric(["failed"], r.failed)
    yield total
    last = GaugeMetricFamily(
        "wd_rules_last_reload_timestamp_seconds",
        "When the last reload with this result happened (engine clock, epoch seconds).",
        labels=["result"],
    )
    for result, at in (("ok", r.last_ok_at), ("failed", r.last_failed_at)):
        if at is not None:
            last.add_metric([result], at)
    yield last
    yield _gauge(
        "wd_rules_generation",
        "The rules generation in force: 0 at start, one more per reload that took.",
        engine.rulebook.generation,
    )
    yield _gauge(
        "wd_rules_generations_held",
        "Rules generations kept for running warnings that started under them.",
        engine.rulebook.generations,
    )


class Metrics:
    """One engine's metrics: a registry holding the scrape-time collector and the observed
    counters and histograms; :meth:`observe_actions` and :meth:`observe_inputs` are hooks."""

    def __init__(
        self, engine: Engine, campaigns: CampaignService, journal: JournalBackend | None
    ) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(engine, campaigns, journal))
        r = self.registry
        self.actions = PromCounter(
            "wd_actions_sent", "Actions handed to the outbox, by action.", ["action"], registry=r
        )
        self.missed = PromCounter(
            "wd_deadlines_missed",
            "Deadlines that passed without an answer (repeats, escalations, exhausted ladders).",
            ["kind", "cause"],
            registry=r,
        )
        self.escalations = PromCounter(
            "wd_escalations", "Escalations to the next rung, by kind.", ["kind"], registry=r
        )
        self.intake = PromCounter(
            "wd_intake", "Messages accepted, by type (warning, feedback).", ["type"], registry=r
        )
        self.drills = PromCounter(
            "wd_exercise_actions",
            "Actions of exercise warnings, by action: counted apart from wd_actions_sent, and "
            "kept out of the deadline, escalation and time-to metrics.",
            ["action"],
            registry=r,
        )
        self.drill_intake = PromCounter(
            "wd_exercise_intake", "Exercise warnings accepted (CAP status Exercise).", registry=r
        )
        self.to_ack = Histogram(
            "wd_time_to_acknowledge_seconds",
            "From a warning's arrival to an officer's acknowledgement, by kind and station.",
            ["kind", "station"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.to_resident = Histogram(
            "wd_time_to_reach_resident_seconds",
            "From a warning's arrival to its first call or chat to the resident, by kind.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    def _arrived(self, warning_id: str) -> tuple[float, str, str] | None:
        """When a warning arrived, its kind and station; None for an exercise, which the
        time-to metrics never count."""
        state = self.engine.status(warning_id)
        if state is None or not state.timeline or state.warning.status == "exercise":
            return None
        return state.timeline[0].at, state.warning.kind, state.responders.station or "-"

    def observe_actions(self, actions: Sequence[Action], now: float) -> None:
        for a in actions:
            if a.exercise:
                self.drills.labels(a.action).inc()
                continue
            self.actions.labels(a.action).inc()
            if a.cause in MISSED:
                self.missed.labels(a.kind, a.cause).inc()
            if a.cause == "escalation":
                self.escalations.labels(a.kind).inc()
            if a.first_contact:
                arrived = self._arrived(a.warning_id)
                if arrived is not None:
                    self.to_resident.labels(a.kind).observe(max(0.0, now - arrived[0]))

    def observe_inputs(
        self, items: Iterable[WarningInstruction | FeedbackEvent], now: float
    ) -> None:
        for item in items:
            if isinstance(item, WarningInstruction):
                if item.status == "exercise":
                    self.drill_intake.inc()
                else:
                    self.intake.labels("warning").inc()
                continue
            self.intake.labels("feedback").inc()
            if isinstance(item, Acknowledged):
                arrived = self._arrived(item.warning_id)
                if arrived is not None:
                    at, kind, station = arrived
                    self.to_ack.labels(kind, station).observe(max(0.0, now - at))
