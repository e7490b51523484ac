"""The trio shell for campaigns: issue, confirm, pace, defer, send, count, cancel.

Embedding::

    send, recv = trio.open_memory_channel[CampaignAction](1024)   # merge recv with the outbox
    async with CampaignService.open(registry, send) as campaigns:
        progress = await campaigns.issue(campaign)    # CampaignError for bad input, nothing sent
        campaigns.confirm(task_id, officer="P0312")   # routine tasks wait for this one click
        campaigns.read(campaign_id, resident_id)      # read receipt from the chat adapter
        campaigns.progress(campaign_id)               # Progress counts
        campaigns.cancel(campaign_id)                 # unsent residents are dropped

Why a trio task per officer task: each officer account sends at its own pace (a token bucket,
see ``pacing``) and waits for its own officer's click, which is exactly what a task waiting on
an event and sleeping until its next slot does. A county-wide campaign is ~1,400 such tasks.
Residents are expanded from the task's id array one at a time as their slot comes up, so the
outbox never holds more than its channel's capacity.

Per-resident status lives in one uint8 array per campaign, aligned with the plan's ids; counts
are a ``bincount`` of it, so they cannot drift from what happened. Time comes only from
``trio.current_time()``; quiet hours use ``wall_clock(trio_time)``, injectable for tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import IntEnum

import numpy as np
import trio

from engine.campaigns.campaign import (
    REASON_TEXT,
    Campaign,
    CampaignAction,
    CampaignClosed,
    CampaignState,
    Channel,
    ChatSend,
    ConfirmRequest,
    Disposition,
    DuplicateCampaign,
    InvalidCampaign,
    Outcome,
    Plan,
    Progress,
    Reason,
    SendTask,
    SmsSend,
    TaskClosed,
    TaskNotYours,
    TaskState,
    UnknownCampaign,
    UnknownTask,
    decode_campaign,
)
from engine.campaigns.ledger import Ledger
from engine.campaigns.pacing import TokenBucket
from engine.campaigns.planning import apply_plan, plan_campaign
from engine.campaigns.policy import CampaignPolicy, load_campaign_policy
from engine.registry.registry import Registry

log = logging.getLogger("engine.campaigns")

WallClock = Callable[[float], datetime]
"""Maps a trio time to the aware wall-clock datetime it stands for."""


class SendStatus(IntEnum):
    """Per-resident delivery status within one campaign."""

    PENDING = 0  # to be sent (waiting for start, quiet hours, confirmation or its pace slot)
    IN_FLIGHT = 1  # being put in the outbox
    SENT = 2
    READ = 3
    DROPPED = 4  # cancelled, expired, or left the registry / the officer's contacts
    SKIPPED = 5  # capped or duplicate at planning


class _Task:
    """Runtime state of one officer's send task."""

    __slots__ = ("confirmed", "deferred_until", "spec", "state")

    def __init__(self, spec: SendTask, urgent: bool) -> None:
        self.spec = spec
        self.state: TaskState = "waiting"
        self.confirmed = trio.Event()
        self.deferred_until: float | None = None
        if urgent:
            self.confirmed.set()


class _Run:
    """Runtime state of one campaign."""

    __slots__ = ("plan", "routine", "scope", "sms_deferred_until", "state", "status", "tasks")

    def __init__(self, plan: Plan, exercise: bool = False) -> None:
        self.plan = plan
        self.routine = plan.campaign.priority == "routine"
        self.status = np.where(
            (plan.reason <= Reason.SMS) & (not exercise),
            np.uint8(SendStatus.PENDING),
            np.uint8(SendStatus.SKIPPED),
        ).astype(np.uint8)
        self.tasks = {} if exercise else {t.id: _Task(t, not self.routine) for t in plan.tasks}
        self.state: CampaignState = "done" if exercise else "scheduled"
        self.scope = trio.CancelScope(deadline=plan.expires)
        self.sms_deferred_until: float | None = None

    @property
    def category(self) -> str | None:
        """The cap category, or None for urgent content (which neither checks nor uses caps)."""
        return self.plan.campaign.category if self.routine else None


class _Account:
    """One officer chat account: its pace, and whether an urgent alert is using it."""

    __slots__ = ("bucket", "lot", "urgent")

    def __init__(self, rate: float, burst: int) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.urgent = 0
        self.lot = trio.lowlevel.ParkingLot()


def default_wall_clock() -> WallClock:
    """Anchor the wall clock to trio's clock now; later readings follow trio's clock."""
    wall0, t0 = datetime.now(UTC), trio.current_time()
    return lambda t: wall0 + timedelta(seconds=t - t0)


class CampaignService:
    """All campaigns of one engine process. Create with :meth:`open` (needs a running trio)."""

    def __init__(
        self,
        registry: Registry,
        outbox: trio.MemorySendChannel[CampaignAction],
        nursery: trio.Nursery,
        *,
        policy: CampaignPolicy | None = None,
        wall_clock: WallClock | None = None,
        ledger: Ledger | None = None,
        on_ended: Callable[[str, CampaignState], object] | None = None,
        exercise_recipients: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.registry = registry
        self.exercise_recipients = exercise_recipients or (lambda: ())
        """Who an exercise campaign's notice goes to (the rules' exercise recipients, read at
        each issue so a reload applies)."""
        self.on_ended = on_ended
        """Told when a campaign is done, cancelled or expired (not when the service stops)."""
        self.policy = policy if policy is not None else load_campaign_policy()
        self.wall_clock = wall_clock if wall_clock is not None else default_wall_clock()
        p = self.policy
        self.ledger = ledger or Ledger(
            p.cap_window_s,
            p.routine_cap,
            p.category_caps,
            epoch=trio.current_time(),
            dedupe_s=p.dedupe_s,
        )
        self._out = outbox
        self._nursery = nursery
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, tuple[_Run, _Task]] = {}
        self._accounts: dict[str, _Account] = {}
        self._sms = TokenBucket(p.sms_rate, p.sms_burst)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        registry: Registry,
        outbox: trio.MemorySendChannel[CampaignAction],
        **options: object,
    ) -> AsyncIterator[CampaignService]:
        """Run the service for the ``async with``; leaving it stops all sending.

        Options: ``policy``, ``wall_clock``, ``ledger``, ``on_ended`` (see the constructor).
        """
        async with trio.open_nursery() as nursery:
            service = cls(registry, outbox, nursery, **options)  # type: ignore[arg-type]
            try:
                yield service
            finally:
                nursery.cancel_scope.cancel()

    # --- public API ----------------------------------------------------------------------

    async def issue(self, campaign: Campaign | bytes | str) -> Progress:
        """Validate, plan and start a campaign; returns its first progress.

        Raises a :class:`CampaignError` (bad field, unknown tag, empty audience, expired,
        duplicate id) before anything changes, so a refused campaign has sent nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(campaign, Campaign):
            if not isinstance(campaign, bytes | str):
                raise InvalidCampaign("(campaign)", "a Campaign or its JSON")
            campaign = decode_campaign(campaign)
        if campaign.id in self._runs:
            raise DuplicateCampaign(f"campaign {campaign.id!r} was already issued")
        now = trio.current_time()
        self.ledger.ensure(self.registry.n_ids)
        plan = plan_campaign(
            campaign,
            self.registry,
            self.ledger,
            self.policy,
            now=now,
            wall_now=self.wall_clock(now),
        )
        # Validation is over: from here on nothing raises.
        if campaign.status == "exercise":
            return self._exercise(plan)
        apply_plan(plan, self.ledger)
        run = _Run(plan)
        self._runs[campaign.id] = run
        for task_id, task in run.tasks.items():
            self._tasks[task_id] = (run, task)
        self._nursery.start_soon(self._run_campaign, run)
        progress = self.progress(campaign.id)
        log.info(
            "campaign %s (%s, %s) issued by %s: %d resolved, %d capped, %d duplicate, "
            "%d tasks, %d by SMS%s",
            campaign.id,
            campaign.priority,
            campaign.category,
            campaign.issuer,
            progress.resolved,
            progress.capped,
            progress.duplicate,
            progress.tasks,
            progress.sms,
            ", deferred by quiet hours" if plan.deferred else "",
        )
        self.ledger.forget_contents(now, {r.plan.content_key for r in self._runs.values()})
        return progress

    def _exercise(self, plan: Plan) -> Progress:
        """An exercise campaign: the plan stands as the answer to "what would it do?", the
        ledger (frequency caps, duplicates) is left as it was, no resident and no officer's
        task gets anything, and each exercise recipient gets one notice saying what it would
        have sent."""
        c = plan.campaign
        run = _Run(plan, exercise=True)
        self._runs[c.id] = run
        p = self.progress(c.id)
        recipients = tuple(self.exercise_recipients())
        text = (
            f"[exercise] {c.text}\n\n(exercise campaign {c.id}: would reach {p.to_send} of "
            f"{p.resolved} residents, {p.tasks} officers' tasks, {p.sms} by SMS; "
            f"{p.capped} capped, {p.duplicate} duplicate)"
        )
        for who in recipients:
            self._emit_soon(
                ChatSend(
                    key=f"campaign/{c.id}/exercise/{who}",
                    campaign_id=c.id,
                    task_id=f"{c.id}/exercise",
                    officer=who,
                    to=f"officer:{who}",
                    priority=c.priority,
                    title=f"[exercise] {c.title}",
                    text=text,
                    media=c.media,
                    exercise=True,
                )
            )
        log.info(
            "exercise campaign %s issued by %s: would reach %d of %d residents; %d recipients "
            "told, caps untouched",
            c.id,
            c.issuer,
            p.to_send,
            p.resolved,
            len(recipients),
        )
        if self.on_ended is not None:
            self.on_ended(c.id, "done")
        return p

    def confirm(self, task_id: str, officer: str | None = None) -> bool:
        """An officer's one click: send this routine task. False if nothing changed (already
        confirmed, urgent, or already finished)."""
        found = self._tasks.get(task_id)
        if found is None:
            raise UnknownTask(f"no send task {task_id!r}")
        run, task = found
        if officer is not None and officer != task.spec.officer:
            raise TaskNotYours(f"task {task_id!r} belongs to officer {task.spec.officer!r}")
        if run.state in ("cancelled", "expired"):
            raise CampaignClosed(f"campaign {run.plan.campaign.id!r} is {run.state}")
        if task.confirmed.is_set():
            return False
        task.confirmed.set()
        return True

    def read(self, campaign_id: str, resident: int) -> bool:
        """A read receipt. True if it changed a sent message to read; False for a repeat or a
        resident this campaign did not send to (receipts may come late or twice)."""
        run = self._run(campaign_id)
        pos = self._position(run, resident)
        if pos is None or run.status[pos] != SendStatus.SENT:
            return False
        run.status[pos] = SendStatus.READ
        return True

    def cancel(self, campaign_id: str) -> Progress:
        """Stop a campaign: unsent residents are dropped (their cap slots freed), officers'
        confirm prompts withdrawn. Cancelling a finished campaign changes nothing."""
        run = self._run(campaign_id)
        if run.state in ("scheduled", "running"):
            self._close(run, "cancelled")
            log.info("campaign %s cancelled", campaign_id)
        return self.progress(campaign_id)

    def campaign_ids(self) -> list[str]:
        """Every campaign this service has issued (running or finished)."""
        return list(self._runs)

    def progress(self, campaign_id: str) -> Progress:
        run = self._run(campaign_id)
        plan = run.plan
        by_reason = np.bincount(plan.reason, minlength=len(Reason))
        by_status = np.bincount(run.status, minlength=len(SendStatus))
        pending = int(by_status[SendStatus.PENDING] + by_status[SendStatus.IN_FLIGHT])
        now = trio.current_time()
        waiting_start = run.state == "scheduled" and now < plan.not_before
        awaiting = confirmed = confirmed_tasks = deferred = 0
        deferred_until = plan.not_before if waiting_start and plan.deferred else None
        for task in run.tasks.values():
            left = int(np.count_nonzero(run.status[task.spec.pos] <= SendStatus.IN_FLIGHT))
            if task.confirmed.is_set():
                confirmed_tasks += 1
                confirmed += task.spec.count
            elif run.state in ("scheduled", "running"):
                awaiting += left
            if task.state == "deferred":
                deferred += left
                deferred_until = task.deferred_until
        if run.sms_deferred_until is not None:
            deferred += int(np.count_nonzero(run.status[plan.sms_pos] <= SendStatus.IN_FLIGHT))
            deferred_until = run.sms_deferred_until
        if waiting_start and plan.deferred:
            deferred = pending
        return Progress(
            campaign_id=campaign_id,
            state=run.state,
            resolved=int(plan.ids.size),
            capped=int(by_reason[Reason.CAPPED_TOTAL] + by_reason[Reason.CAPPED_CATEGORY]),
            duplicate=int(by_reason[Reason.DUPLICATE]),
            to_send=int(by_reason[Reason.CHAT] + by_reason[Reason.SMS]),
            sms=int(by_reason[Reason.SMS]),
            tasks=len(plan.tasks),
            confirmed_tasks=confirmed_tasks,
            confirmed=confirmed,
            awaiting_confirmation=awaiting,
            deferred=deferred,
            pending=pending,
            sent=int(by_status[SendStatus.SENT] + by_status[SendStatus.READ]),
            read=int(by_status[SendStatus.READ]),
            dropped=int(by_status[SendStatus.DROPPED]),
            deferred_until=deferred_until if deferred else None,
            exercise=plan.campaign.status == "exercise",
        )

    def explain(self, campaign_id: str, resident: int) -> Disposition:
        """What happened to one resident in one campaign, and why (ids only, no names)."""
        run = self._run(campaign_id)
        pos = self._position(run, resident)
        if pos is None:
            return Disposition(
                campaign_id=campaign_id,
                resident=resident,
                outcome="not_in_audience",
                channel="none",
                officer=None,
                reason="not matched by the audience expression when the campaign was issued",
            )
        reason = Reason(int(run.plan.reason[pos]))
        status = SendStatus(int(run.status[pos]))
        officer = None
        if reason == Reason.CHAT:  # the task that holds it (the officer may have changed since)
            officer = next(t.spec.officer for t in run.tasks.values() if self._in(t.spec.pos, pos))
        channel: Channel = (
            "chat" if reason == Reason.CHAT else "sms" if reason == Reason.SMS else "none"
        )
        text = REASON_TEXT[reason]
        outcome: Outcome = "pending"
        if reason == Reason.DUPLICATE:
            outcome = "duplicate"
        elif reason in (Reason.CAPPED_TOTAL, Reason.CAPPED_CATEGORY):
            outcome = "capped"
        elif status in (SendStatus.SENT, SendStatus.READ):
            outcome = "read" if status == SendStatus.READ else "sent"
        elif status == SendStatus.DROPPED:
            outcome = "dropped"
            text = (
                f"not sent: campaign {run.state}"
                if run.state in ("cancelled", "expired")
                else ("not sent: left the registry or the officer's contacts")
            )
        else:
            text = f"to be sent ({text})"
            if run.plan.deferred and trio.current_time() < run.plan.not_before:
                text += (
                    f"; deferred by quiet hours until {self.wall_clock(run.plan.not_before):%H:%M}"
                )
        return Disposition(
            campaign_id=campaign_id,
            resident=resident,
            outcome=outcome,
            channel=channel,
            officer=officer,
            reason=text,
        )

    def task_ids(self, campaign_id: str) -> list[str]:
        return list(self._run(campaign_id).tasks)

    def task_state(self, task_id: str) -> TaskState:
        found = self._tasks.get(task_id)
        if found is None:
            raise UnknownTask(f"no send task {task_id!r}")
        return found[1].state

    # --- internals -----------------------------------------------------------------------

    def _run(self, campaign_id: str) -> _Run:
        run = self._runs.get(campaign_id)
        if run is None:
            raise UnknownCampaign(f"no campaign {campaign_id!r}")
        return run

    @staticmethod
    def _in(ids: np.ndarray, resident: int) -> bool:
        i = int(np.searchsorted(ids, resident))
        return i < ids.size and int(ids[i]) == resident

    def _position(self, run: _Run, resident: int) -> int | None:
        ids = run.plan.ids
        i = int(np.searchsorted(ids, resident))
        return i if i < ids.size and int(ids[i]) == resident else None

    def _account(self, officer: str) -> _Account:
        acct = self._accounts.get(officer)
        if acct is None:
            acct = self._accounts[officer] = _Account(
                self.policy.officer_rate, self.policy.officer_burst
            )
        return acct

    def _emit_soon(self, action: CampaignAction) -> None:
        """From synchronous code: into the outbox now, or as soon as it has room."""
        try:
            self._out.send_nowait(action)
        except trio.WouldBlock:
            self._nursery.start_soon(self._out.send, action)
        except trio.BrokenResourceError:
            log.error("campaign outbox closed: %s dropped", type(action).__name__)

    def _close(self, run: _Run, state: CampaignState) -> None:
        """Cancelled or expired: drop every PENDING resident now. IN_FLIGHT ones are settled by
        their sending task (sent if the outbox took them, dropped if not)."""
        run.state = state
        plan = run.plan
        for task in run.tasks.values():
            unsent = int(np.count_nonzero(run.status[task.spec.pos] <= SendStatus.IN_FLIGHT))
            if task.state not in ("done", "dropped"):
                task.state = "dropped"
                self._emit_soon(
                    TaskClosed(
                        key=f"campaign/{plan.campaign.id}/{task.spec.officer}/closed",
                        campaign_id=plan.campaign.id,
                        task_id=task.spec.id,
                        officer=task.spec.officer,
                        reason="cancelled" if state == "cancelled" else "expired",
                        unsent=unsent,
                    )
                )
        drop = np.flatnonzero(run.status == SendStatus.PENDING)
        run.status[drop] = SendStatus.DROPPED
        self.ledger.release(plan.ids[drop], plan.content_key, run.category)
        run.sms_deferred_until = None
        run.scope.cancel()

    async def _run_campaign(self, run: _Run) -> None:
        with run.scope:
            await trio.sleep_until(run.plan.not_before)
            run.state = "running"
            async with trio.open_nursery() as nursery:
                for task in run.tasks.values():
                    nursery.start_soon(self._run_task, run, task)
                if run.plan.sms_ids.size:
                    nursery.start_soon(self._run_sms, run)
        if run.state in ("scheduled", "running") and run.scope.cancelled_caught:
            self._close(run, "expired")
            log.info("campaign %s expired", run.plan.campaign.id)
        elif run.state in ("scheduled", "running"):
            run.state = "done"
        if self.on_ended is not None:  # not reached when the service itself is stopping
            self.on_ended(run.plan.campaign.id, run.state)

    async def _quiet(self, run: _Run, task: _Task | None) -> None:
        """Routine content waits out quiet hours (deferred, not dropped)."""
        while True:
            now = trio.current_time()
            wait = self.policy.quiet.remaining(self.wall_clock(now))
            if wait <= 0:
                return
            until = now + wait
            if task is None:
                run.sms_deferred_until = until
            else:
                task.state, task.deferred_until = "deferred", until
            try:
                await trio.sleep_until(until)
            finally:
                if task is None:
                    run.sms_deferred_until = None
                else:
                    task.state, task.deferred_until = "sending", None

    def _still_ok(self, resident: int, officer_index: int | None) -> bool:
        """Live, and (for chat) still this officer's contact: privacy holds at send time."""
        reg = self.registry
        if not reg.is_live(resident):
            return False
        return officer_index is None or int(reg.officer[resident]) == officer_index

    async def _run_task(self, run: _Run, task: _Task) -> None:
        c, spec = run.plan.campaign, task.spec
        acct = self._account(spec.officer)
        if run.routine:
            task.state = "awaiting_confirmation"
            await self._emit(
                ConfirmRequest(
                    key=f"campaign/{c.id}/{spec.officer}/confirm",
                    campaign_id=c.id,
                    task_id=spec.id,
                    officer=spec.officer,
                    title=c.title,
                    residents=spec.count,
                )
            )
            await task.confirmed.wait()
        else:
            acct.urgent += 1
        task.state = "sending"
        try:
            for rid, pos in zip(spec.ids.tolist(), spec.pos.tolist(), strict=True):
                if run.status[pos] != SendStatus.PENDING:
                    continue
                if not self._still_ok(rid, spec.officer_index):
                    self._drop(run, pos, rid)
                    continue
                await self._wait_for_slot(run, task, acct.bucket, acct)
                action = ChatSend(
                    key=f"campaign/{c.id}/{spec.officer}/{rid}/1",
                    campaign_id=c.id,
                    task_id=spec.id,
                    officer=spec.officer,
                    to=f"resident:{rid}",
                    priority=c.priority,
                    title=c.title,
                    text=c.text,
                    media=c.media,
                )
                await self._deliver(run, pos, rid, action)
            task.state = "done"
        finally:
            if not run.routine:
                acct.urgent -= 1
                if not acct.urgent:
                    acct.lot.unpark_all()

    async def _wait_for_slot(
        self, run: _Run, task: _Task | None, bucket: TokenBucket, acct: _Account | None
    ) -> None:
        """Wait for a paced send slot. Routine content also waits out quiet hours (checked again
        after pacing, since the slot may fall inside them) and lets urgent alerts go first."""
        while True:
            if run.routine:
                await self._quiet(run, task)
                while acct is not None and acct.urgent:
                    await acct.lot.park()
            await trio.sleep_until(bucket.reserve(trio.current_time()))
            if not run.routine or not self.policy.quiet.remaining(
                self.wall_clock(trio.current_time())
            ):
                return

    async def _run_sms(self, run: _Run) -> None:
        c, plan = run.plan.campaign, run.plan
        for rid, pos in zip(plan.sms_ids.tolist(), plan.sms_pos.tolist(), strict=True):
            if run.status[pos] != SendStatus.PENDING:
                continue
            if not self._still_ok(rid, None):
                self._drop(run, pos, rid)
                continue
            await self._wait_for_slot(run, None, self._sms, None)
            action = SmsSend(
                key=f"campaign/{c.id}/sms/{rid}/1",
                campaign_id=c.id,
                to=f"resident:{rid}",
                priority=c.priority,
                title=c.title,
                text=c.text,
                media=c.media,
            )
            await self._deliver(run, pos, rid, action)

    def _drop(self, run: _Run, pos: int, rid: int) -> None:
        run.status[pos] = SendStatus.DROPPED
        self.ledger.release(np.array([rid]), run.plan.content_key, run.category)

    async def _deliver(self, run: _Run, pos: int, rid: int, action: CampaignAction) -> None:
        """Into the outbox, then recorded as sent; if the outbox never took it, dropped."""
        run.status[pos] = SendStatus.IN_FLIGHT
        try:
            await self._emit(action)
        except BaseException:
            run.status[pos] = SendStatus.DROPPED
            self.ledger.release(np.array([rid]), run.plan.content_key, run.category)
            raise
        run.status[pos] = SendStatus.SENT
        self.ledger.commit(np.array([rid]), run.category, trio.current_time())

    async def _emit(self, action: CampaignAction) -> None:
        """trio's ``send`` is cancel-atomic: if it raises Cancelled, the action was not sent."""
        await self._out.send(action)
