"""``simulate --serve``: watch the simulated month live in the console.

The replay runs the real engine under trio's MockClock with a *rate* (``speed`` simulated
seconds per real second) instead of autojump, and the engine's HTTP side (API, console,
metrics, health) is served beside it in the same trio run, so the board shows the month as it
plays: warnings arriving, deadlines counting down at the replay's speed (the API sends the
clock's ``rate``), escalations, acknowledgements.

Tokens and the audit log are made for this run only, in a temporary folder removed when the
run ends: the tokens die with it. The links printed carry a token in the URL fragment
(``#token=``), which browsers never send to a server and the console drops from the address
bar.

Ctrl-C (or SIGTERM) while the period plays stops the run without a report. Once the period is
over, time stands still (the clock's rate drops to :data:`STILL`: no more escalations, the
board's countdowns stop) and the console stays up, showing the final state, until Ctrl-C;
then the usual summary and reports follow (taken when the period ended).
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio
import trio.testing

from engine.access.audit import AuditLog
from engine.access.policy import Role
from engine.access.tokens import TokenStore
from engine.app import App
from engine.web.server import parse_bind, serve_http, web_app

__all__ = ["STILL", "LiveConsole"]

STILL = 1e-9
"""The clock's rate once the period is over: time stands still, to a billionth. Not 0: the API
turns its real-time waits (the event stream's 0.1 s pacing, its heartbeat) into trio time by
multiplying by the rate, and at 0 they would not wait at all."""


class LiveConsole:
    """The HTTP side of a live replay (:class:`simulator.replay.Live`), with a token per role
    and links to print. Use it as a context manager: leaving it removes the tokens."""

    def __init__(self, bind: str, speed: float, say: Callable[[str], None]) -> None:
        parse_bind(bind)  # ValueError naming what was expected
        if speed <= 0:
            raise ValueError(f"--speed must be above 0, not {speed:g}")
        self.bind = bind
        self.speed = speed
        self.say = say
        self.interrupted = False
        """Ctrl-C came while the period was playing: the replay ended early, no report."""
        self._period_over = False
        self._signalled = trio.Event()
        self._stop = trio.Event()
        self._folder = tempfile.TemporaryDirectory(prefix="wd-live-")
        folder = Path(self._folder.name)
        self.tokens = TokenStore.load(folder / "tokens.json")
        self.audit = AuditLog(folder / "audit.jsonl")

    def __enter__(self) -> LiveConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the audit log and remove the run's tokens."""
        self.audit.close()
        self._folder.cleanup()

    async def serve(
        self, app: App, end_period: Callable[[], None], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Serve the console until the replay's nursery is cancelled; started once the socket
        is bound and the links are printed."""
        reg = app.config.registry
        contact = next((o for o in reg.officers if o.grids), reg.officers[0])
        roles: list[tuple[Role, str | None, str]] = [
            ("centre", None, "centre (everything, county-wide)"),
            ("chief", contact.station, f"chief of station {contact.station}"),
            ("officer", contact.key, f"officer {contact.key} (grids {', '.join(contact.grids)})"),
            ("admin", None, "county admin (campaigns, statistics)"),
        ]
        links = [
            (what, self.tokens.create(role, who, "simulate --serve")) for role, who, what in roles
        ]
        asgi = web_app(app, lambda: not self._stop.is_set(), self.tokens, self.audit)
        async with trio.open_nursery() as n:
            # serve_http scales hypercorn's timeouts by the clock's rate (the speed).
            addresses = await n.start(partial(serve_http, asgi, self.bind, self._stop))
            host = addresses[0].split("://", 1)[-1].replace("0.0.0.0", "127.0.0.1")
            self.say(
                f"live console at http://{host}/console/ "
                f"({self.speed:g} simulated seconds per second); open a link:"
            )
            for what, token in links:
                self.say(f"  {what}: http://{host}/console/#token={token}")
            self.say("the tokens are for this run only; Ctrl-C stops it")
            # The first Ctrl-C ends the run in order; a second one while it closes interrupts.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for _ in signals:
                    break
            if not self._period_over:
                self.interrupted = True
                wall = app.config.wall_clock() if app.config.wall_clock else None
                at = f" at {wall:%Y-%m-%d %H:%M} simulated time" if wall else ""
                self.say(f"stopped{at}: no report for a period cut short")
                end_period()
            else:  # time moves again, so that shutdown's timeouts can pass
                _set_rate(self.speed)
            self._signalled.set()
            self._stop.set()  # hypercorn closes its listeners, then returns

    async def linger(self) -> None:
        """The period is over: time stops (the engine escalates nothing more, the board's
        countdowns stand still) and the console keeps serving the final state until Ctrl-C or
        SIGTERM; at once if the period was cut short by one."""
        self._period_over = True
        if self._signalled.is_set():
            return
        _set_rate(STILL)
        self.say("the simulated period is over and time stands still; Ctrl-C ends the run")
        await self._signalled.wait()


def _set_rate(rate: float) -> None:
    clock = trio.lowlevel.current_clock()
    if isinstance(clock, trio.testing.MockClock):
        clock.rate = rate
