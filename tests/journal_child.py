"""Child process for tests/test_journal_crash.py: append forever, print each acknowledged id.

    python3 -m tests.journal_child FOLDER

Recovers the journal, prints ``ready <next id>``, then four tasks append records ``<id>`` (ids
taken in write order) and a fifth snapshots the id list every 20 ms. A line ``<id>`` is printed
only after ``append`` returned, i.e. once the record is durable (policy ``always``). The parent
kills this process with SIGKILL at random moments.
"""

from __future__ import annotations

import sys

import msgspec
import trio

from engine.journal import FsyncPolicy, Journal


async def main(folder: str) -> None:
    async with Journal.open(folder, fsync=FsyncPolicy.always()) as j:
        state: list[int] = []
        if j.snapshot_payload is not None:
            state = msgspec.msgpack.decode(j.snapshot_payload, type=list[int])
        state += [int(r) for r in j.replay()]
        counter = state[-1] + 1 if state else 0
        print(f"ready {counter}", flush=True)

        async def appender() -> None:
            nonlocal counter
            while True:
                rid = counter
                counter += 1
                state.append(rid)  # no checkpoint between this and the write in append()
                await j.append(b"%d" % rid)
                sys.stdout.write(f"{rid}\n")
                sys.stdout.flush()

        async def snapshotter() -> None:
            while True:
                await trio.sleep(0.02)
                await j.snapshot(msgspec.msgpack.encode(state))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(appender)
            nursery.start_soon(snapshotter)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
