"""The group's board: every partition owner publishes its warnings' states into Redis, and any
member mirrors them, so any member can answer the API and the console for the whole group.

Why a board and not forwarding: a request to any member then needs no second hop and no
knowledge of who owns what, and a member that owns nothing (or has just restarted) still
answers. The board is a *view*: the journals stay the truth. It holds, per warning, the state
its owner last published, prefixed with the owner's fencing token; the Lua script that writes
it refuses a state older than the one in place, so an owner that stalled past its lease can
never overwrite its successor's view (the same fencing as the journal's).

Keys (all in the ``{<prefix>}`` slot, so a Cluster runs each script on one node):

- ``{wd}:board`` hash: warning id -> 20-digit token + msgpack ``WarningState``;
- ``{wd}:board-log`` stream (trimmed to about :data:`LOG_MAXLEN`): per publish, the ids it
  wrote (msgpack list), so mirrors re-read only those;
- ``{wd}:board-campaigns`` hash: campaign id -> JSON progress, from the campaign's owner;
- ``{wd}:board-stats`` hash: member -> JSON statistics of the partitions it runs.

A warning forgotten by its owner (``retain_ended_s`` after it ended) is deleted from the
board. A warning evicted while nobody owned its partition may stay on the board as ended.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from engine.app import App
from engine.group.client import run_sync
from engine.group.partitions import Keys
from engine.machine import WarningState
from engine.state_feed import StateFeed

log = logging.getLogger("engine.group.board")

__all__ = ["BoardMirror", "BoardPublisher", "board_keys"]

LOG_MAXLEN = 100_000
PUBLISH_EVERY_S = 0.1
"""Changes of one partition within this time go out in one script call."""
CAMPAIGNS_EVERY_S = 1.0
READ_BLOCK_MS = 1000
TOKEN_WIDTH = 20

PUBLISH = """
local board, log = KEYS[1], KEYS[2]
local token = tonumber(ARGV[1])
local written = {}
for i = 3, #ARGV, 2 do
  local id, value = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', board, id)
  if (not current) or tonumber(string.sub(current, 1, 20)) <= token then
    if value == '' then
      if current then redis.call('HDEL', board, id) end
    else
      redis.call('HSET', board, id, string.format('%020d', token) .. value)
    end
    written[#written + 1] = id
  end
end
if #written > 0 then
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[2], '*', 'ids', cmsgpack.pack(written))
end
return #written
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(WarningState).decode
_decode_ids = msgspec.msgpack.Decoder(list[str]).decode


def board_keys(keys: Keys) -> tuple[str, str, str, str]:
    """(board, log, campaigns, stats) key names of the group."""
    tag = f"{{{keys.prefix}}}"
    return f"{tag}:board", f"{tag}:board-log", f"{tag}:board-campaigns", f"{tag}:board-stats"


def decode_entry(value: bytes) -> WarningState:
    """A board value: the token prefix, then the state."""
    return _decode_state(value[TOKEN_WIDTH:])


class BoardPublisher:
    """Publishes one owned partition's states while its engine runs (one per partition)."""

    def __init__(self, client: Any, keys: Keys, token: int) -> None:
        self.client = client
        self.token = token
        self.board, self.log, self.campaigns_key, _ = board_keys(keys)
        self._script = client.register_script(PUBLISH)
        self.published = 0

    def _write(self, pairs: list[bytes | str]) -> int:
        n: int = self._script(keys=[self.board, self.log], args=[self.token, LOG_MAXLEN, *pairs])
        return n

    async def publish(self, app: App, ids: Iterable[str]) -> None:
        engine = app.engine
        pairs: list[bytes | str] = []
        for wid in ids:
            state = engine.status(wid)
            pairs += [wid, _encode(state) if state is not None else b""]
        for i in range(0, len(pairs), 2000):  # bounded script calls: other clients get turns
            self.published += await run_sync(self._write, pairs[i : i + 2000])

    async def run(self, app: App) -> None:
        """Publish every state once (a new owner's view replaces the old owner's), then what
        each loop turn changed, at most every :data:`PUBLISH_EVERY_S`; and the partition's
        campaigns' progress every :data:`CAMPAIGNS_EVERY_S` while it has any."""
        feed: StateFeed = app.engine.feed
        async with trio.open_nursery() as n:
            n.start_soon(self._campaigns, app)
            version: int | None = None
            while True:
                if version is None:
                    version = feed.version
                    await self.publish(app, [s.warning.id for s in app.engine.states()])
                else:
                    await feed.wait_after(version)
                    version, ids = feed.since(version)
                    if ids is None:  # fell behind the feed's log: publish everything again
                        version = None
                        continue
                    await self.publish(app, ids)
                await trio.sleep(PUBLISH_EVERY_S)

    async def _campaigns(self, app: App) -> None:
        while True:
            ids = list(app.campaigns.campaign_ids())
            if ids:
                mapping = {c: msgspec.json.encode(app.campaigns.progress(c)) for c in ids}
                await run_sync(
                    functools.partial(self.client.hset, self.campaigns_key, mapping=mapping)
                )
            await trio.sleep(CAMPAIGNS_EVERY_S)


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class BoardMirror:
    """Every warning on the board, in memory, kept current from the board's log; changes go
    into :attr:`feed`, so the API's live events work as on a single engine."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.board, self.log, self.campaigns_key, self.stats_key = board_keys(keys)
        self.states: dict[str, WarningState] = {}
        self.feed = StateFeed()
        self.ready = trio.Event()
        self.last = "0-0"
        self.reloads = 0
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.member_stats: dict[str, bytes] = {}

    def _read_all(self) -> tuple[str, dict[bytes, bytes]]:
        newest = self.client.xrevrange(self.log, "+", "-", count=1)
        last = newest[0][0].decode() if newest else "0-0"
        return last, self.client.hgetall(self.board)

    async def reload(self) -> None:
        """Read the whole board (on start, and after falling behind the trimmed log)."""
        last, raw = await run_sync(self._read_all)
        fresh = {k.decode(): decode_entry(v) for k, v in raw.items()}
        for wid in set(self.states) | set(fresh):
            self.feed.touch(wid)
        self.states, self.last = fresh, last
        self.reloads += 1
        self.feed.end_turn()

    def _read_next(self) -> tuple[list[str], bool, dict[str, bytes | None]]:
        """(ids changed since ``last``, whether entries were trimmed unseen, their values)."""
        reply = self.client.xread({self.log: self.last}, count=1000, block=READ_BLOCK_MS)
        if not reply:
            return [], False, {}
        entries = reply[0][1]
        # Our last entry was trimmed away: entries after it may have gone unseen.
        first = self.client.xrange(self.log, "-", "+", count=1)
        gap = self.last != "0-0" and bool(first) and _stream_id(first[0][0]) > _stream_id(self.last)
        ids: dict[str, None] = {}
        for _entry_id, fields in entries:
            ids.update(dict.fromkeys(_decode_ids(fields[b"ids"])))
        self.last = entries[-1][0].decode()
        wanted = list(ids)
        values = self.client.hmget(self.board, wanted) if wanted else []
        return wanted, gap, dict(zip(wanted, values, strict=True))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.reload()
        async with trio.open_nursery() as n:
            n.start_soon(self.follow_extras)
            self.ready.set()
            task_status.started()
            await self._follow()

    async def _follow(self) -> None:
        while True:
            ids, gap, values = await run_sync(self._read_next)
            if gap:
                log.warning("board: fell behind the trimmed log; reading the whole board")
                await self.reload()
                continue
            for wid in ids:
                value = values.get(wid)
                if value is None:
                    self.states.pop(wid, None)
                else:
                    self.states[wid] = decode_entry(value)
                self.feed.touch(wid)
            self.feed.end_turn()

    def _read_extras(self) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        return self.client.hgetall(self.campaigns_key), self.client.hgetall(self.stats_key)

    async def follow_extras(self) -> None:
        """Campaign progress and every member's statistics, read every second into
        :attr:`campaigns` and :attr:`member_stats` (the API never waits on Redis to read)."""
        while True:
            campaigns, stats = await run_sync(self._read_extras)
            self.campaigns = {k.decode(): msgspec.json.decode(v) for k, v in campaigns.items()}
            self.member_stats = {k.decode(): v for k, v in stats.items()}
            await trio.sleep(CAMPAIGNS_EVERY_S)


async def publish_stats(client: Any, keys: Keys, member: str, summary: Any) -> None:
    """One member's statistics (a :class:`~engine.stats.Summary`) onto the board."""
    stats_key = board_keys(keys)[3]
    await run_sync(client.hset, stats_key, member, msgspec.json.encode(summary))
