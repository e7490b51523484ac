"""The README's message examples are real messages: the engine's own decoders accept them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from engine.campaigns.model import decode_campaign
from engine.cli import MESSAGES, main
from engine.machine import validate_warning
from engine.model import Action, decode_feedback, decode_warning
from engine.rules.escalation import load_escalation

README = Path(__file__).resolve().parent.parent / "README.md"
FEEDBACK_TYPES = {"ack", "call", "read", "visit", "outcome"}


def examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Message formats", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_there_are_examples_of_every_kind() -> None:
    kinds = {kind_of(json.loads(line)) for line in examples()}
    assert kinds == {"warning", "feedback", "action", "campaign"}


def kind_of(obj: dict[str, object]) -> str:
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
    else:
        decode_campaign(line)


@pytest.mark.parametrize("message", list(MESSAGES))
def test_schema_command_prints_a_json_schema(message: str) -> None:
    result = CliRunner().invoke(main, ["schema", message])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert "$defs" in schema and ("$ref" in schema or "anyOf" in schema)
