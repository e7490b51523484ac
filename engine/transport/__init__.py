"""Transports: raw messages in (intake, feedback), actions out, dead letters aside.

- :mod:`engine.transport.base` — the Protocols the engine drives and the structs they carry.
- :mod:`engine.transport.memory` — trio memory channels (library use, tests).
- :mod:`engine.transport.jsonlines` — JSON lines on stdin/files/FIFOs and stdout/files.
- :mod:`engine.transport.redis_streams` — Redis Streams with consumer groups (production).
"""

from engine.transport.base import (
    DeadLetter,
    DeadLetterSink,
    Delivery,
    FeedbackSource,
    IntakeSource,
    OutboxSink,
    decode_action,
    encode_action,
)
from engine.transport.jsonlines import JsonLinesDeadLetters, JsonLinesIntake, JsonLinesOutbox
from engine.transport.memory import (
    MemoryIntake,
    MemoryOutbox,
    open_memory_intake,
    open_memory_outbox,
)
from engine.transport.redis_streams import (
    RedisDeadLetters,
    RedisOutbox,
    RedisStreamSource,
    RedisTransport,
    SourceOptions,
    StreamNames,
    open_redis_transport,
)

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "Delivery",
    "FeedbackSource",
    "IntakeSource",
    "JsonLinesDeadLetters",
    "JsonLinesIntake",
    "JsonLinesOutbox",
    "MemoryIntake",
    "MemoryOutbox",
    "OutboxSink",
    "RedisDeadLetters",
    "RedisOutbox",
    "RedisStreamSource",
    "RedisTransport",
    "SourceOptions",
    "StreamNames",
    "decode_action",
    "encode_action",
    "open_memory_intake",
    "open_memory_outbox",
    "open_redis_transport",
]
