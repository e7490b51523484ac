"""Reading a child process's output with a deadline, so a silent child fails a test instead of
hanging it. ``proc.stdout.readline()`` blocks forever when the child never writes; this does not.
"""

from __future__ import annotations

import os
import select
import time
from typing import IO


class ChildTimeout(AssertionError):
    """The child did not write what was expected in time. Carries what it did write."""


class LineReader:
    """Lines from a pipe, each read bounded by a deadline (``select`` on the raw fd)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._buf = bytearray()
        self.eof = False

    def readline(self, timeout: float = 20.0) -> bytes:
        """The next line without its ``\\n``; raises :class:`ChildTimeout` after ``timeout`` s,
        and returns ``b""`` at end of output."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self.eof:
                rest, self._buf = bytes(self._buf), bytearray()
                return rest
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildTimeout(f"no line within {timeout:g} s; partial: {bytes(self._buf)!r}")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    self.eof = True
                self._buf += chunk

    def take_buffered(self) -> bytes:
        """Bytes read from the pipe but not yet returned as lines (read the rest elsewhere)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest

    def lines(self, n: int, timeout: float = 20.0) -> list[bytes]:
        """Exactly ``n`` lines, all within ``timeout`` s in total."""
        deadline = time.monotonic() + timeout
        out: list[bytes] = []
        while len(out) < n:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if not line and self.eof:
                raise ChildTimeout(f"output ended after {len(out)} of {n} lines")
            out.append(line)
        return out
