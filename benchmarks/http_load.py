"""An open-loop HTTP/1.1 load generator for ``POST /api/v1/warnings``, in its own process.

benchmarks/http.py runs one of these per rate, so the client's CPU is not the measuring
process's (and costs far less than httpx: raw bytes over a few keep-alive connections, no
client library, every request body built before the clock starts).

Request ``i`` is due at ``start + i / rate`` (``time.perf_counter()``, the system-wide
monotonic clock, so the parent can compare it with its own readings). A connection that is
free takes the next due request; when none is free the request waits and its latency still
counts from the time it was due. One JSON object on stdout::

    {"sent": {warning id: due time}, "lat": [seconds to 202], "errors": n, "late": s,
     "cpu": s}

``cpu`` is this process's CPU time while sending (not its start-up); ``late`` is the largest
delay between a request's due time and the generator handing it to the connections: how far
the generator itself fell behind.

    python3 -m benchmarks.http_load --port P --token T --rate 500 --seconds 5 --tag h500
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import trio

from engine.testing.messages import warning_bytes

PATH = "/api/v1/warnings"
TIMEOUT_S = 30.0


def request(host: str, token: str, body: bytes, get: str | None = None) -> bytes:
    if get is not None:  # the floor: a request that does no work of its own
        return f"GET {get} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.closing = False  # the server said "connection: close" (hypercorn: every 1,000)

    async def exchange(self, raw: bytes) -> int:
        """Send ``raw``, read one response; its status (0 if the server closed)."""
        await self.stream.send_all(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if not await self._more():
                return 0
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                self.closing = True
        total = end + 4 + length
        while len(self.buf) < total:
            if not await self._more():
                return 0
        del self.buf[:total]
        return status

    async def _more(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buf += chunk
        return bool(chunk)


async def run(
    host: str,
    port: int,
    token: str,
    rate: float,
    seconds: float,
    tag: str,
    residents: int,
    connections: int,
    get: str | None = None,
) -> dict[str, object]:
    n = int(rate * seconds)
    bodies = [
        request(f"{host}:{port}", token, warning_bytes(f"{tag}-{i}", i * 7 % residents), get)
        for i in range(n)
    ]
    ok = 202 if get is None else 200
    conns = [Connection(await trio.open_tcp_stream(host, port)) for _ in range(connections)]
    sent: dict[str, float] = {}
    lat: list[float] = []
    errors = 0
    late = 0.0
    send, receive = trio.open_memory_channel[tuple[int, float]](n + 1)
    offset = trio.current_time() - time.perf_counter()
    start = time.perf_counter() + 0.05

    async def worker(conn: Connection) -> None:
        nonlocal errors
        async for i, at in receive:
            status = 0
            with trio.move_on_after(TIMEOUT_S):
                try:
                    status = await conn.exchange(bodies[i])
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    status = 0
            if status == ok:
                lat.append(time.perf_counter() - at)
            else:
                errors += 1
            if status == 0 or conn.closing:  # reconnect for the next one
                await conn.stream.aclose()
                conn.stream = await trio.open_tcp_stream(host, port)
                conn.buf.clear()
                conn.closing = False

    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(worker, c)
        for i in range(n):
            at = start + i / rate
            await trio.sleep_until(at + offset)
            late = max(late, time.perf_counter() - at)
            sent[f"{tag}-{i}"] = at
            send.send_nowait((i, at))
        await send.aclose()
    cpu = time.process_time() - cpu
    for c in conns:
        await c.stream.aclose()
    return {"sent": sent, "lat": lat, "errors": errors, "late": late, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--residents", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--get", metavar="PATH", help="GET this path instead (expects 200)")
    a = parser.parse_args()
    out = trio.run(
        run, a.host, a.port, a.token, a.rate, a.seconds, a.tag, a.residents, a.connections, a.get
    )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
