"""Helpers for tests and benchmarks: real local services started and stopped by the caller, and
a directory from plain mappings."""

from engine.testing.directory import StaticDirectory
from engine.testing.redis_server import RedisServer, RedisServerError

__all__ = ["RedisServer", "RedisServerError", "StaticDirectory"]
