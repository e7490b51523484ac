"""Bad input on every transport, through the real intake path (decode, validate, submit,
durable, ack): the engine keeps running, every bad message is dead-lettered with a reason and
its raw bytes, and the good messages around it are processed and acknowledged. Plus the clean
shutdown of :func:`engine.service.serve` (drain, outbox flushed, snapshot)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import durability
from engine.journal import FsyncPolicy, Journal
from engine.journal.reader import read_journal
from engine.model import Action
from engine.registry.registry import Registry
from engine.scheduler import Engine
from engine.service import ServiceStats, run_feedback, run_intake, serve
from engine.testing import RedisServer
from engine.transport import (
    Delivery,
    JsonLinesDeadLetters,
    JsonLinesIntake,
    StreamNames,
    open_memory_intake,
    open_memory_outbox,
    open_redis_transport,
)
from engine.transport.redis_streams import SourceOptions
from tests.props import examples
from tests.test_durability import DIRECTORY, RULES
from tests.transport_support import garbage, is_garbage, warning_json

# A mix of garbage and valid warnings (ids unique per list).
MIX = st.lists(st.one_of(garbage.map(lambda b: (False, b)), st.just((True, b""))), max_size=25)


def materialise(mix: list[tuple[bool, bytes]]) -> tuple[list[bytes], set[str], int]:
    raws, good = [], set()
    for i, (ok, raw) in enumerate(mix):
        if ok:
            raws.append(warning_json(i % 50))
            good.add(f"w-{i % 50}")
        else:
            raws.append(raw)
    bad = sum(1 for ok, raw in mix if not ok)
    assume(all(is_garbage(r) for ok, r in mix if not ok))
    return raws, good, bad


FEEDBACK_GARBAGE = st.one_of(
    garbage,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["ack", "call", "rocket", 3]),
            "warning_id": st.integers() | st.just("") | st.just("w-1"),
            "result": st.text(max_size=5) | st.none(),
        }
    ).map(lambda d: json.dumps(d).encode()),
)

SETTINGS = settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(mix=MIX, fb_garbage=st.lists(FEEDBACK_GARBAGE, max_size=5))
async def test_memory_transport_garbage(mix: list[tuple[bool, bytes]], fb_garbage: list[bytes]):
    raws, good, bad = materialise(mix)
    send, intake = open_memory_intake()
    fsend, fintake = open_memory_intake(name="fb")
    stats = ServiceStats()
    async with Engine.open(DIRECTORY, RULES) as engine:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_intake, engine, intake, stats)
            nursery.start_soon(run_feedback, engine, fintake, stats)
            for raw in raws:
                await send.send(raw)
            await send.aclose()
            for raw in fb_garbage:
                await fsend.send(raw)
            await fsend.send(b'{"type": "ack", "warning_id": "w-1", "officer": "p"}')
            await fsend.aclose()
        assert len(intake.dead_letters) == bad
        assert all(d.reason and d.source == "memory" for d in intake.dead_letters)
        assert [d.raw for d in intake.dead_letters] == [r for ok, r in mix if not ok]
        assert intake.unacked == {} and fintake.unacked == {}
        assert {wid for wid in good if engine.status(wid) is not None} == good
        assert len(fintake.dead_letters) == len(fb_garbage)
        # the engine is still running: a new warning is taken
        await engine.submit(warning_json(99))
        await engine.durable()
        assert engine.status("w-99") is not None


@SETTINGS
@given(mix=MIX)
async def test_json_lines_garbage(tmp_path_factory: pytest.TempPathFactory, mix):
    raws, good, bad = materialise(mix)
    folder = tmp_path_factory.mktemp("jl")
    src, dead_path = folder / "in.jsonl", folder / "dead.jsonl"
    src.write_bytes(b"".join(r + b"\n" for r in raws))
    dead = JsonLinesDeadLetters(dead_path)
    stats = ServiceStats()
    async with Engine.open(DIRECTORY, RULES) as engine:
        intake = await JsonLinesIntake.open(src, dead_letters=dead)
        await run_intake(engine, intake, stats)  # returns at end of file
        await intake.aclose()
        await dead.aclose()
        assert {wid for wid in good if engine.status(wid) is not None} == good
        assert intake.unacked == set()
    lines = [json.loads(x) for x in dead_path.read_bytes().splitlines()] if bad else []
    assert len(lines) == bad == stats.dead_letters
    line_numbers = [str(i + 1) for i, (ok, _) in enumerate(mix) if not ok]
    assert [x["source_id"] for x in lines] == line_numbers
    assert all(x["reason"] and ("raw" in x or "raw_b64" in x) for x in lines)


_ns = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.mark.redis
@settings(
    max_examples=examples(8),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mix=MIX)
async def test_redis_streams_garbage(server: RedisServer, mix):
    raws, good, bad = materialise(mix)
    p = f"svc{next(_ns)}"
    names = StreamNames(intake=f"{p}:in", feedback=f"{p}:fb", outbox=f"{p}:out", dead=f"{p}:dead")
    r = server.client()
    for raw in raws:
        r.xadd(names.intake, {"raw": raw})
    stats = ServiceStats()
    opts = SourceOptions(consumer="c1", block_s=0.2)
    async with (
        Engine.open(DIRECTORY, RULES) as engine,
        open_redis_transport(server.host, server.port, names=names, options=opts) as t,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(run_intake, engine, t.intake, stats)
        with trio.fail_after(10):
            while stats.warnings + stats.dead_letters < len(raws):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert {wid for wid in good if engine.status(wid) is not None} == good
    dead = r.xrange(names.dead)
    assert len(dead) == bad
    assert [f[b"raw"] for _, f in dead] == [raw for ok, raw in mix if not ok]
    assert all(f[b"reason"] for _, f in dead)
    assert int(r.xpending(names.intake, "wd-engine")["pending"]) == 0


async def start_serve(
    nursery: trio.Nursery,
    engine: Engine,
    intake: object,
    sink: object,
    stop: trio.Event,
    **options: object,
) -> ServiceStats:
    """Start ``serve`` (no signal handling) in ``nursery``; returns its live counters."""
    return await nursery.start(
        lambda task_status: serve(
            engine,
            intake,  # type: ignore[arg-type]
            sink,  # type: ignore[arg-type]
            stop=stop,
            handle_signals=False,
            task_status=task_status,
            **options,  # type: ignore[arg-type]
        )
    )


async def test_serve_shuts_down_cleanly_with_everything_sent_and_a_snapshot(tmp_path: Path):
    send, intake = open_memory_intake()
    sink, out = open_memory_outbox(capacity=10_000)
    stop = trio.Event()
    sent: list[Action] = []
    observed: list[tuple[Action, float]] = []
    accepted: list[object] = []

    def observe(batch: tuple[Action, ...], now: float) -> None:
        observed.extend((a, now) for a in batch)

    async with (
        Journal.open(tmp_path / "j", fsync=FsyncPolicy.interval(2)) as journal,
        Engine.open(DIRECTORY, RULES, journal=journal) as engine,
        trio.open_nursery() as nursery,
    ):
        stats = await start_serve(
            nursery,
            engine,
            intake,
            sink,
            stop,
            observers=[observe],
            input_observers=[lambda items, now: accepted.extend(items)],
        )
        for i in range(40):
            await send.send(warning_json(i))
        with trio.fail_after(5):
            while stats.warnings < 40:
                await trio.sleep(0.005)
        stop.set()
    while True:
        try:
            sent.extend(out.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    assert stats.warnings == 40 and stats.sent == len(sent) == 80
    assert [a for a, _ in observed] == sent  # observers see exactly what was sent, in order
    assert all(now > 1e9 for _, now in observed)  # with the engine's (epoch) time
    assert sorted(w.id for w in accepted) == sorted(f"w-{i}" for i in range(40))  # type: ignore[attr-defined]
    assert intake.unacked == {}
    image = read_journal(tmp_path / "j")
    assert image.snapshot_payload is not None and image.records == []


async def test_intake_is_acked_only_once_the_journal_holds_it(tmp_path: Path):
    """At every ack, the acked warnings are already in the journal files on disk."""
    send, inner = open_memory_intake(batch_size=7)
    folder = tmp_path / "j"
    checked: list[str] = []

    class Checking:
        name = "checking"

        async def receive_batch(self) -> list[Delivery]:
            self.last = await inner.receive_batch()
            return self.last

        async def ack(self, ids: Sequence[str]) -> None:
            image = read_journal(folder)
            journaled = {
                rec.warning.id
                for rec in map(durability.decode_record, image.records)
                if isinstance(rec, durability.Accepted)
            }
            wanted = {json.loads(d.raw)["id"] for d in self.last if d.id in ids}
            assert wanted <= journaled, wanted - journaled
            checked.extend(wanted)
            await inner.ack(ids)

        async def dead_letter(self, delivery: Delivery, reason: str) -> None:
            await inner.dead_letter(delivery, reason)

        async def aclose(self) -> None:
            await inner.aclose()

    async with (
        Journal.open(folder, fsync=FsyncPolicy.always()) as journal,
        Engine.open(DIRECTORY, RULES, journal=journal) as engine,
    ):
        for i in range(30):
            await send.send(warning_json(i))
        await send.aclose()
        await run_intake(engine, Checking(), ServiceStats())
    assert len(checked) == 30


async def test_serve_issues_campaigns_into_the_same_outbox() -> None:
    """A campaign source beside the warnings: good campaigns reach exactly their audience
    through the shared outbox; bad ones are dead-lettered with the reason; stats count them."""
    from engine.campaigns import CampaignService
    from engine.registry.responders import RegistryDirectory
    from engine.service import CampaignFeed
    from tests.small_county import make_registry

    reg = make_registry()
    elderly = [
        reg.add_resident(
            f"R{i}",
            name="甲",
            phone="1",
            address="x",
            grid="01-11",
            officer="P01" if i % 2 else None,
            tags=["elderly"] if i % 3 else [],
        )
        for i in range(12)
    ]
    audience = sorted(r for r in elderly if reg.has_tag(r, "elderly"))
    _send_w, intake = open_memory_intake()
    send_c, campaign_source = open_memory_intake(name="campaigns")
    sink, out = open_memory_outbox(capacity=10_000)
    c_send, c_recv = trio.open_memory_channel[object](1024)
    stop = trio.Event()
    issued: list[str] = []
    seen: list[object] = []
    good = {
        "id": "c1",
        "title": "路段塌方",
        "text": "绕行",
        "audience": "elderly",
        "priority": "urgent",
        "issuer": "county",
    }
    async with (
        Engine.open(RegistryDirectory(reg), RULES) as engine,
        CampaignService.open(reg, c_send) as service,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):
        camp = CampaignFeed(
            campaign_source,
            service,
            c_recv,  # type: ignore[arg-type]
            observers=[lambda batch, now: seen.extend(batch)],
            on_issued=lambda c: issued.append(c.id),
        )
        stats = await start_serve(nursery, engine, intake, sink, stop, campaigns=camp)
        await send_c.send(json.dumps(good).encode())
        await send_c.send(json.dumps({**good, "id": "c2", "audience": "eldery"}).encode())
        await send_c.send(b"{not json")
        with trio.fail_after(5):
            while len(seen) < len(audience) or stats.dead_letters < 2:
                await trio.sleep(0.01)
        stop.set()
    sent = []
    while True:
        try:
            sent.extend(out.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    reached = sorted(int(a.to.removeprefix("resident:")) for a in sent)  # type: ignore[union-attr]
    assert reached == audience  # each once: by chat from P01, or by SMS
    assert stats.campaigns == 1 and issued == ["c1"]
    reasons = [d.reason for d in campaign_source.dead_letters]
    # The reason names the error, the position and our suggestion, never the text typed.
    assert any(r.startswith("audience: unknown tag; did you mean elderly") for r in reasons)
    assert not any("eldery" in r for r in reasons)
    assert any("malformed" in r.lower() for r in reasons)
    assert campaign_source.unacked == {}


async def test_accepted_campaigns_survive_restarts_until_they_end(tmp_path: Path) -> None:
    """Journaled campaigns: an acked campaign that has not ended is issued again after a
    restart; one that finished (or was cancelled) is not."""
    from engine.campaigns import CampaignService
    from engine.registry.responders import RegistryDirectory
    from engine.service import CampaignFeed

    reg = elderly_county(6)
    base = {"title": "t", "text": "x", "audience": "elderly", "issuer": "county"}
    # Routine waits for the officer's confirmation (or quiet hours); urgent goes at once.
    routine = json.dumps({**base, "id": "c-routine", "priority": "routine"}).encode()
    urgent = json.dumps({**base, "id": "c-urgent", "priority": "urgent"}).encode()

    async def lifetime(send_first: list[bytes], then: object = None) -> list[str]:
        _w, intake = open_memory_intake()
        send_c, source = open_memory_intake(name="campaigns")
        sink, _out = open_memory_outbox(capacity=10_000)
        c_send, c_recv = trio.open_memory_channel[object](1024)
        stop = trio.Event()
        async with (
            Journal.open(tmp_path / "j", fsync=FsyncPolicy.always()) as journal,
            Engine.open(RegistryDirectory(reg), RULES, journal=journal) as engine,
            CampaignService.open(
                reg,
                c_send,
                on_ended=lambda cid, _s: engine.campaign_records.end(cid),  # type: ignore[arg-type]
            ) as service,
            trio.open_nursery() as nursery,
        ):
            pending_at_start = [cid for cid, _ in engine.campaign_records.pending()]
            camp = CampaignFeed(source, service, c_recv)  # type: ignore[arg-type]
            stats = await start_serve(nursery, engine, intake, sink, stop, campaigns=camp)
            for raw in send_first:
                await send_c.send(raw)
            with trio.fail_after(5):
                while stats.campaigns < len(send_first):
                    await trio.sleep(0.01)
                while urgent in send_first and service.progress("c-urgent").state != "done":
                    await trio.sleep(0.01)
            for cid in pending_at_start:  # issued again on start: known to the new service
                assert service.progress(cid).state in ("scheduled", "running")
            if then == "cancel":  # control on the campaigns stream, as an admin sends it
                await send_c.send(b'{"control": "cancel", "campaign_id": "c-nope"}')
                await send_c.send(b'{"control": "cancel", "campaign_id": "c-routine"}')
                with trio.fail_after(5):
                    while service.progress("c-routine").state != "cancelled":
                        await trio.sleep(0.01)
                    while stats.dead_letters < 1:
                        await trio.sleep(0.01)
            stop.set()
        return pending_at_start

    assert await lifetime([routine, urgent]) == []
    assert await lifetime([]) == ["c-routine"]  # the finished urgent one is not issued again
    assert await lifetime([], then="cancel") == ["c-routine"]
    assert await lifetime([]) == []  # cancelled: ended for good


async def test_serve_dead_letters_warnings_that_cannot_be_acted_on():
    """Expired on arrival, or issued an hour ahead of the engine's clock: each is refused with
    its reason where the centre can see it, and counted; the next good warning is acted on."""
    send, intake = open_memory_intake()
    sink, out = open_memory_outbox(capacity=1000)
    stop = trio.Event()
    now = datetime.now(UTC)
    expired = {**json.loads(warning_json(1, now - timedelta(days=2))), "id": "late"}
    ahead = {**json.loads(warning_json(2, now + timedelta(hours=1))), "id": "ahead"}
    async with Engine.open(DIRECTORY, RULES) as engine, trio.open_nursery() as nursery:
        stats = await start_serve(nursery, engine, intake, sink, stop)
        for raw in (json.dumps(expired).encode(), json.dumps(ahead).encode(), warning_json(3)):
            await send.send(raw)
        with trio.fail_after(5):
            while stats.warnings + stats.dead_letters < 3:
                await trio.sleep(0.005)
        stop.set()
    reasons = {json.loads(d.raw)["id"]: d.reason for d in intake.dead_letters}
    assert reasons.keys() == {"late", "ahead"} and stats.dead_letters == 2
    assert reasons["late"].startswith("expires: ") and "before arrival" in reasons["late"]
    assert reasons["ahead"].startswith("issued_at: ") and "ahead" in reasons["ahead"]
    assert stats.warnings == 1 and engine.status("w-3") is not None
    assert engine.status("late") is None and engine.status("ahead") is None
    sent = [a for batch in iter_nowait(out) for a in batch]
    assert {a.warning_id for a in sent} == {"w-3"}


def iter_nowait(channel: trio.MemoryReceiveChannel[tuple[Action, ...]]):
    while True:
        try:
            yield channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


async def test_a_campaign_id_stays_used_across_restarts(tmp_path: Path):
    """The fuzz report's case: c-dup-1 accepted (and finished), the engine restarted (its clean
    stop snapshots and compacts the journal), then c-dup-1 again with other content. It must be
    refused with the reason, not issued again under the same action keys; a new id works."""
    from engine.campaigns import CampaignService
    from engine.registry.responders import RegistryDirectory
    from engine.service import CampaignFeed

    reg = elderly_county(4)
    base = {"title": "t", "audience": "elderly", "issuer": "county", "priority": "urgent"}

    async def run(raws: list[bytes]) -> tuple[ServiceStats, list[str]]:
        _w, intake = open_memory_intake()
        send_c, source = open_memory_intake(name="campaigns")
        sink, _out = open_memory_outbox(capacity=10_000)
        c_send, c_recv = trio.open_memory_channel[object](1024)
        stop = trio.Event()
        async with (
            Journal.open(tmp_path / "j", fsync=FsyncPolicy.always()) as journal,
            Engine.open(RegistryDirectory(reg), RULES, journal=journal) as engine,
            CampaignService.open(reg, c_send) as service,  # type: ignore[arg-type]
            trio.open_nursery() as nursery,
        ):
            camp = CampaignFeed(source, service, c_recv)  # type: ignore[arg-type]
            stats = await start_serve(nursery, engine, intake, sink, stop, campaigns=camp)
            for raw in raws:
                await send_c.send(raw)
            with trio.fail_after(5):
                while stats.campaigns + stats.dead_letters < len(raws):
                    await trio.sleep(0.01)
            stop.set()
        return stats, [d.reason for d in source.dead_letters]

    first = json.dumps({**base, "id": "c-dup-1", "text": "第一版"}).encode()
    again = json.dumps({**base, "id": "c-dup-1", "text": "另一版", "audience": "all"}).encode()
    fresh = json.dumps({**base, "id": "c-new-2", "text": "新的"}).encode()
    stats, reasons = await run([first])
    assert stats.campaigns == 1 and reasons == []
    stats, reasons = await run([again, fresh])
    assert stats.campaigns == 1 and len(reasons) == 1
    assert reasons[0].startswith("id: a campaign id not used before (c-dup-1 was accepted")


def test_campaign_ids_are_rebuilt_from_records_and_from_snapshots() -> None:
    """Without a snapshot the ids come from CampaignIssued records (ended ones included); with
    one, from its campaign_ids; a snapshot written before this field existed still loads."""
    records = [
        durability.encode(durability.CampaignIssued("c1", b"{}")),
        durability.encode(durability.CampaignIssued("c2", b"{}")),
        durability.encode(durability.CampaignEnded("c1")),
    ]
    rebuilt = durability.rebuild(None, records, RULES)
    assert rebuilt.campaign_ids == {"c1", "c2"} and list(rebuilt.campaigns) == ["c2"]
    snap = durability.EngineSnapshot(
        version=durability.SNAPSHOT_VERSION,
        taken_at=0.0,
        states=[],
        unsent=[],
        campaigns=[durability.CampaignIssued("c2", b"{}")],
        campaign_ids=["c1", "c2"],
    )
    again = durability.rebuild(durability.encode(snap), [], RULES)
    assert again.campaign_ids == {"c1", "c2"} and list(again.campaigns) == ["c2"]
    older = msgspec.msgpack.encode(
        {"version": durability.SNAPSHOT_VERSION, "taken_at": 0.0, "states": [], "unsent": []}
    )
    assert durability.rebuild(older, [], RULES).campaign_ids == set()


def elderly_county(n: int) -> Registry:
    """The small test county plus ``n`` elderly residents, all contacts of officer P01."""
    from tests.small_county import make_registry

    reg = make_registry()
    for i in range(n):
        reg.add_resident(
            f"R{i}", name="甲", phone="1", address="x", grid="01-11", officer="P01", tags=[]
        )
        reg.set_tag(reg.n_ids - 1, "elderly")
    return reg
