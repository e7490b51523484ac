"""The README's message examples are real messages: the engine's own decoders accept them."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from engine.campaigns.campaign import decode_campaign, decode_control
from engine.cli import MESSAGES, main
from engine.machine import validate_warning
from engine.model import Action, InvalidWarning, Responders, decode_feedback, decode_warning
from engine.registry.changes import decode_change
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.testing.directory import StaticDirectory

README = Path(__file__).resolve().parent.parent / "README.md"
FEEDBACK_TYPES = {"ack", "call", "read", "visit", "outcome"}


def examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Message formats", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_there_are_examples_of_every_kind() -> None:
    kinds = {kind_of(json.loads(line)) for line in examples()}
    assert kinds == {"warning", "feedback", "action", "campaign", "control", "registry"}


def kind_of(obj: dict[str, object]) -> str:
    if "control" in obj:
        return "control"
    if "ext_id" in obj:
        return "registry"
    if "audience" in obj:
        return "campaign"
    if obj.get("type") in FEEDBACK_TYPES:
        return "feedback"
    if "action" in obj:
        return "action"
    return "warning"


@pytest.mark.parametrize("line", examples())
def test_example_decodes(line: str) -> None:
    kind = kind_of(json.loads(line))
    if kind == "warning":
        validate_warning(decode_warning(line), load_escalation())
    elif kind == "feedback":
        decode_feedback(line)
    elif kind == "action":
        msgspec.json.decode(line, type=Action)
    elif kind == "control":
        decode_control(line)
    elif kind == "registry":
        decode_change(line)
    else:
        decode_campaign(line)


@pytest.mark.parametrize("message", list(MESSAGES))
def test_schema_command_prints_a_json_schema(message: str) -> None:
    result = CliRunner().invoke(main, ["schema", message])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert "$defs" in schema and ("$ref" in schema or "anyOf" in schema)


def _readme_warnings() -> list[str]:
    return [line for line in examples() if kind_of(json.loads(line)) == "warning"]


async def _paste_into_engine(at: datetime) -> tuple[Engine, list[str]]:
    """Submit every README warning to an engine whose clock reads ``at``; the reasons of those
    it refuses, in order."""
    reasons: list[str] = []
    directory = StaticDirectory(county_centre="cc", fallback=Responders(county_centre="cc"))
    async with Engine.open(directory, wall_clock=lambda: at) as engine:
        for line in _readme_warnings():
            try:
                await engine.submit(line)
            except InvalidWarning as exc:
                reasons.append(str(exc))
        engine.close()
        async for _ in engine.actions():
            pass
    return engine, reasons


async def test_readme_warnings_are_acted_on_when_they_are_current() -> None:
    first = decode_warning(_readme_warnings()[0])
    last = max(decode_warning(w).issued_at for w in _readme_warnings())
    engine, reasons = await _paste_into_engine(last + timedelta(minutes=1))
    assert reasons == []
    assert engine.stats.actions > 0 and engine.status(first.id) is not None


async def test_readme_warnings_pasted_a_year_later_say_why_nothing_happens() -> None:
    """Whatever the date, the examples stay usable: a year on, every alert and update is
    refused with the reason (it expired before it arrived); only the cancel is taken."""
    first = decode_warning(_readme_warnings()[0])
    engine, reasons = await _paste_into_engine(first.issued_at + timedelta(days=365))
    cancels = [w for w in _readme_warnings() if decode_warning(w).msg_type == "cancel"]
    assert len(reasons) == len(_readme_warnings()) - len(cancels) > 0
    assert all(r.startswith("expires: ") and "before arrival" in r for r in reasons)
    assert engine.stats.actions == 0 and engine.stats.dead_letters == len(reasons)


def test_library_examples_import_only_the_public_api() -> None:
    """The README's Python examples use ``from engine import ...`` and nothing deeper, and
    every name they import is in ``engine.__all__``."""
    import engine

    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    imports = [m for b in blocks for m in re.findall(r"^from (engine\S*) import (.+)$", b, re.M)]
    assert imports and {module for module, _ in imports} == {"engine"}
    names = {n.strip() for _, names in imports for n in names.split(",")}
    assert names <= set(engine.__all__), names - set(engine.__all__)
