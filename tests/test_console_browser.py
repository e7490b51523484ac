"""The live console in a real browser: Debian's chromium driven by playwright, against a real
``warn-dispatch serve --http`` process.

What a person does, step by step: the centre's board shows a warning submitted through the API
by itself; an officer opens the warning, acknowledges it and sees the timeline change; the
audience builder shows an unknown tag with its suggestion and where it is; an officer of
another station cannot open the warning. Screenshots of the main pages are kept under
``$WD_ARTIFACTS`` (default ``tests/artifacts/``) for people to look at.

No skips: without ``/usr/bin/chromium`` (``tests/run.sh`` installs it) these tests fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from engine.access.tokens import TokenStore
from engine.registry.registry import Registry
from engine.testing.messages import warning_bytes
from engine.testing.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("WD_ARTIFACTS", ROOT / "tests" / "artifacts"))
RESIDENTS = 20_000
UI_TIMEOUT_MS = 10_000


@dataclass
class Console:
    base: str
    tokens: dict[str, str]
    residents: list[int]
    """Contacts of officer ``tokens['officer']`` (station ``tokens['chief']``), each with a
    phone of their own: ``serve`` correlates warnings about one resident or phone into one
    incident, so each test's warning is about the next of them."""
    officer: str
    other_officer: str

    def submit(self, warning_id: str, resident: int | None = None) -> None:
        if resident is None:
            resident = self.residents.pop(0)
        r = httpx.post(
            f"{self.base}/api/v1/warnings",
            content=warning_bytes(warning_id, resident),
            headers={"authorization": f"Bearer {self.tokens['centre']}"},
            timeout=10,
        )
        assert r.status_code == 202, r.text


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One engine with its console for the module: a generated county, tokens for each role."""
    home = tmp_path_factory.mktemp("console")
    env = {**os.environ, "WARN_DISPATCH_HOME": str(home)}
    cli = [sys.executable, "-m", "engine.cli"]
    county = home / "county"
    subprocess.run(
        [*cli, "county", "generate", "--residents", str(RESIDENTS), str(county)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    reg = Registry.load(county)
    # The officer with the most contacts: each test's warning is about another of them.
    counts = np.bincount(reg.officer[reg.officer >= 0].astype(np.int64))
    busiest = int(counts.argmax())
    theirs: list[int] = []
    phones: set[str] = set()
    for r in np.flatnonzero(reg.officer == busiest).tolist():
        if reg.phone[r] not in phones:
            theirs.append(r)
            phones.add(reg.phone[r])
    assert len(theirs) >= 4, "the busiest officer has too few contacts for these tests"
    mine = reg.resident(theirs[0])
    assert mine.officer is not None
    other = next(
        o.key
        for o in reg.officers
        if o.station != mine.station and o.role in ("community_officer", "auxiliary")
    )
    store = TokenStore.load(home / "tokens.json")
    tokens = {
        "centre": store.create("centre", None),
        "admin": store.create("admin", None),
        "chief": store.create("chief", mine.station),
        "officer": store.create("officer", mine.officer),
        "other": store.create("officer", other),
    }
    port = free_port()
    with (home / "out.jsonl").open("wb") as out, (home / "err.log").open("wb") as err:
        proc = subprocess.Popen(
            [
                *cli,
                "serve",
                "--county",
                str(county),
                "--journal",
                str(home / "journal"),
                "--http",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "err.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve --http not ready within 60 s"
            time.sleep(0.2)
        yield Console(base, tokens, theirs, mine.officer, other)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # end of intake: the engine drains and stops
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: tests/run.sh installs chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def login(page: Page, console: Console, who: str, where: str = "#/board") -> None:
    page.goto(f"{console.base}/console/#token={console.tokens[who]}")
    expect(page.locator("#whoami")).not_to_be_empty()
    # The token left the address bar as soon as it was read.
    assert "token=" not in page.url
    page.goto(f"{console.base}/console/{where}")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_board_shows_a_warning_submitted_through_the_api(console: Console, page: Page) -> None:
    login(page, console, "centre")
    expect(page.get_by_test_id("live")).to_have_class("live on")
    assert page.locator('tr[data-id="w-board"]').count() == 0
    submitted = time.monotonic()
    console.submit("w-board")
    row = page.locator('tr[data-id="w-board"]')
    expect(row).to_be_visible(timeout=5_000)
    shown = time.monotonic() - submitted
    assert shown < 5, shown
    expect(row).to_contain_text("电诈")
    # The countdown to the next deadline runs: it reads m:ss and changes by itself.
    left = row.locator("td[data-deadline]")
    first = left.inner_text()
    assert ":" in first
    page.wait_for_timeout(1_500)
    assert left.inner_text() != first
    shot(page, "board")
    page.click("#lang")
    expect(row).to_contain_text("fraud")
    expect(page.locator("h1")).to_contain_text("Active warnings")
    shot(page, "board-en")
    page.click("#lang")  # back to Chinese for the next tests' screenshots
    expect(page.locator("h1")).to_contain_text("进行中的预警")


def test_an_officer_acknowledges_and_the_timeline_changes(console: Console, page: Page) -> None:
    console.submit("w-ack")
    login(page, console, "officer", "#/warning/w-ack")
    timeline = page.get_by_test_id("timeline").locator("li")
    expect(timeline.first).to_be_visible()
    before = timeline.count()
    expect(page.get_by_test_id("acked-by")).to_have_text("—")
    # The officer asked to act sees the resident unmasked: whom to call.
    page.click('button[data-act="ack"]')
    expect(page.get_by_test_id("act-result")).to_have_text("已提交。")
    expect(page.get_by_test_id("acked-by")).to_have_text(console.officer)
    expect(timeline).to_have_count(before + 1, timeout=5_000)
    expect(timeline.last).to_contain_text("acked")
    expect(page.locator('button[data-act="ack"]')).to_have_count(0)  # acked: nothing to ack
    shot(page, "warning")


def test_an_officer_cannot_open_another_stations_warning(console: Console, page: Page) -> None:
    console.submit("w-theirs")
    answers: list[int] = []
    page.on(
        "response",
        lambda r: answers.append(r.status) if "/api/v1/warnings/w-theirs" in r.url else None,
    )
    login(page, console, "other", "#/warning/w-theirs")
    expect(page.get_by_test_id("error")).to_contain_text("不在您的辖区内")
    assert answers and set(answers) == {404}
    assert page.locator('button[data-act="ack"]').count() == 0
    # Nor does it reach the board of that officer.
    page.goto(f"{console.base}/console/#/board")
    expect(page.get_by_test_id("board")).to_be_visible()
    page.wait_for_timeout(500)
    assert page.locator('tr[data-id="w-theirs"]').count() == 0


def test_the_audience_builder_shows_an_unknown_tag_with_its_suggestion(
    console: Console, page: Page
) -> None:
    login(page, console, "centre", "#/audience")
    box = page.locator("#expr")
    box.fill("elderly & ~warned_7d")
    expect(page.get_by_test_id("count")).to_have_text(re.compile(r"^[\d,]+$"))
    good = int(page.get_by_test_id("count").inner_text().replace(",", ""))
    assert 0 < good < RESIDENTS
    box.fill("eldrly & ~warned_7d")
    error = page.get_by_test_id("expr-error")
    expect(error).to_contain_text("elderly")
    expect(error.locator("mark")).to_have_text("eldrly")
    expect(page.get_by_test_id("count")).to_have_text("—")
    shot(page, "audience-error")
    box.fill("elderly & ~warned_7d")
    expect(error).to_be_empty()
    shot(page, "audience")


def test_the_other_pages_render_for_their_roles(console: Console, page: Page) -> None:
    login(page, console, "admin", "#/campaigns")
    campaign = {
        "id": "c-browser",
        "title": "反诈提醒",
        "text": "请勿向陌生账户转账",
        "audience": "elderly",
        "issuer": "county",
        "priority": "routine",
    }
    r = httpx.post(
        f"{console.base}/api/v1/campaigns",
        json=campaign,
        headers={"authorization": f"Bearer {console.tokens['admin']}"},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    expect(page.locator('tr[data-id="c-browser"]')).to_be_visible(timeout=5_000)
    shot(page, "campaigns")
    login(page, console, "chief", "#/officers")
    expect(page.locator("#whoami")).to_contain_text("所长")
    rows = page.get_by_test_id("officers").locator("tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() > 1
    shot(page, "officers")
    page.goto(f"{console.base}/console/#/grids")
    cells = page.get_by_test_id("grid-map").locator(".cell")
    expect(cells.first).to_be_visible()
    assert cells.count() > 1
    shot(page, "grids")
