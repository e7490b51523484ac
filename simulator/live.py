"""``simulate --serve``: watch the simulated month live in the console.

The replay runs the real engine under trio's MockClock with a *rate* (``speed`` simulated
seconds per real second) instead of autojump, and the engine's HTTP side (API and console)
runs beside it in the same loop. Tokens are made for this run only, in a temporary folder, and
die with it; the links printed carry them in the URL fragment, which browsers never send.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

from engine.access.audit import AuditLog
from engine.access.tokens import TokenStore
from engine.app import App
from engine.web.server import parse_bind, serve_http, web_app

__all__ = ["LiveConsole"]


class LiveConsole:
    """The HTTP side of a live replay, with one token per role and links to print."""

    def __init__(self, bind: str, speed: float, say: Callable[[str], None]) -> None:
        parse_bind(bind)  # ValueError naming what was expected
        if speed <= 0:
            raise ValueError(f"--speed must be above 0, not {speed:g}")
        self.bind = bind
        self.speed = speed
        self.say = say
        self.stop = trio.Event()
        self.folder = Path(tempfile.mkdtemp(prefix="wd-live-"))
        self.tokens = TokenStore.load(self.folder / "tokens.json")
        self.audit = AuditLog(self.folder / "audit.jsonl")

    async def serve(self, app: App, *, task_status: trio.TaskStatus[None]) -> None:
        reg = app.config.registry
        contact = next((o for o in reg.officers if o.grids), reg.officers[0])
        roles = [
            ("centre", "centre", None),
            ("chief", f"chief of station {contact.station}", contact.station),
            ("officer", f"officer {contact.key}", contact.key),
            ("admin", "county admin", None),
        ]
        links = [(label, self.tokens.create(role, subject)) for role, label, subject in roles]  # type: ignore[arg-type]
        asgi = web_app(app, lambda: not self.stop.is_set(), self.tokens, self.audit)
        async with trio.open_nursery() as n:
            addresses = await n.start(
                lambda task_status: serve_http(
                    asgi, self.bind, self.stop, task_status=task_status, time_scale=self.speed
                )
            )
            host = addresses[0].split("://", 1)[-1].replace("0.0.0.0", "127.0.0.1")
            self.say(f"console at http://{host}/console/ ({self.speed:g} simulated s per s)")
            for label, token in links:
                self.say(f"  {label}: http://{host}/console/#token={token}")
            task_status.started()
            await self.stop.wait()

    async def linger(self) -> None:
        """The period is over: keep serving (the final state stays browsable) until Ctrl-C
        or SIGTERM."""
        self.say("the simulated period is over; the console stays up until Ctrl-C")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        self.stop.set()
        self.audit.close()
