"""The live console: static pages (HTML, one script, one stylesheet) that read the API.

Why static files and no front-end build: the people who install the engine need no Node
toolchain, and the pages need nothing a browser does not have (fetch streaming for the live
feed, ``Intl`` for dates). Every value is put into the page as text, and the Content Security
Policy allows scripts from this origin only, so a warning's text cannot run as code.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

__all__ = ["CONSOLE_DIR", "console_routes"]

CONSOLE_DIR = Path(__file__).with_name("console")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    """Starlette's static files with the console's security headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_headers)


def console_routes() -> list[Route | Mount]:
    """``/console/`` (the pages) and ``/`` (a redirect there)."""

    async def home(_: object) -> Response:
        return RedirectResponse("/console/", status_code=307)

    return [
        Route("/", home),
        Mount("/console", app=_ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
