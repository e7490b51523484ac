"""Console watchers for benchmarks/board.py: N server-sent-event streams in their own process.

Each watcher is one ``GET /api/v1/events`` on a raw trio socket (no HTTP client library: a
few microseconds of CPU per chunk), with its own token, as one console tab would hold. For
every warning id that starts with ``--prefix`` it records ``time.time()`` when the first
``changed`` event naming it arrived (the moment the board could draw the row). The ids are
found with a regular expression on the rows' ``"id":"..."`` keys, not by decoding the JSON:
the rows' other fields never carry that key, and ``gone`` ids are bare strings.

Protocol with the parent: once every watcher has its ``hello`` event this prints ``ready N``;
it then records until a line arrives on stdin (or stdin closes, or ``--max-seconds`` pass) and
prints one JSON object::

    {"watchers": [{"label": ..., "seen": {id: time}, "frames": n, "bytes": n,
                   "resets": n, "closed": bool}], "cpu": s}

``cpu`` is this process's CPU time from ``ready`` to the end (not its start-up or connects).

    python3 -m benchmarks.board_watch --port P --tokens FILE --prefix h100- [--count N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import trio

PATH = "/api/v1/events"
CONNECT_S = 60.0  # all watchers connected and greeted
CHANGED = b"event: changed\n"


class Watcher:
    """One SSE stream; ``seen`` maps a warning id to the first time a ``changed`` event had it."""

    def __init__(self, label: str, token: str, prefix: str) -> None:
        self.label = label
        self.token = token
        self.ids = re.compile(rb'"id":"(' + re.escape(prefix.encode()) + rb'[^"]*)"')
        self.seen: dict[str, float] = {}
        self.frames = 0
        self.bytes = 0
        self.resets = 0
        self.closed = False
        self.buf = b""

    async def connect(self, host: str, port: int) -> None:
        self.stream = await trio.open_tcp_stream(host, port)
        request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        await self.stream.send_all(request.encode())
        await self._until(b"\r\n\r\n")
        status = int(self.buf.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"{self.label}: GET {PATH} answered {status}")
        await self._until(b"event: hello")
        await self._until(b"\n\n")  # the end of the hello frame
        self.buf = self.buf[self.buf.find(b"\n\n", self.buf.find(b"event: hello")) + 2 :]

    async def _until(self, marker: bytes) -> None:
        while marker not in self.buf:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise RuntimeError(f"{self.label}: the server closed the stream")
            self.buf += chunk

    async def record(self) -> None:
        """Read until cancelled or the server closes. Only whole frames (up to the last blank
        line) are searched, the rest waits for the next read: an event's name and its data
        line, or an id, may be split across two reads."""
        seen = self.seen
        while True:
            chunk = await self.stream.receive_some(65536)
            at = time.time()
            if not chunk:
                self.closed = True
                return
            self.bytes += len(chunk)
            data = self.buf + chunk
            cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
            whole, self.buf = data[:cut], data[cut:]
            if not whole:
                continue
            for frame in whole.split(b"\n\n"):
                if CHANGED in frame:
                    self.frames += 1
                    for m in self.ids.finditer(frame):
                        wid = m.group(1).decode()
                        if wid not in seen:
                            seen[wid] = at
                elif b"event: reset" in frame:
                    self.resets += 1


async def stdin_line() -> None:
    """Return when a line (or end of file) arrives on stdin."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while True:
            chunk = await stream.receive_some(4096)
            if not chunk or b"\n" in chunk:
                return


async def run(
    host: str, port: int, tokens: list[tuple[str, str]], prefix: str, max_seconds: float
) -> dict[str, object]:
    watchers = [Watcher(label, token, prefix) for label, token in tokens]
    with trio.fail_after(CONNECT_S):
        async with trio.open_nursery() as nursery:
            for w in watchers:
                nursery.start_soon(w.connect, host, port)
    print(f"ready {len(watchers)}", flush=True)
    cpu = time.process_time()
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            for w in watchers:
                nursery.start_soon(w.record)
            await stdin_line()
            nursery.cancel_scope.cancel()
    cpu = time.process_time() - cpu
    for w in watchers:
        with trio.move_on_after(2):
            await w.stream.aclose()
    return {
        "watchers": [
            {
                "label": w.label,
                "seen": w.seen,
                "frames": w.frames,
                "bytes": w.bytes,
                "resets": w.resets,
                "closed": w.closed,
            }
            for w in watchers
        ],
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="JSON file: [[label, token], ...]")
    parser.add_argument("--count", type=int, help="only the first N tokens")
    parser.add_argument("--prefix", required=True, help="record warning ids starting with this")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    a = parser.parse_args()
    with open(a.tokens) as f:
        tokens = [tuple(t) for t in json.load(f)][: a.count]
    out = trio.run(run, a.host, a.port, tokens, a.prefix, a.max_seconds)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
