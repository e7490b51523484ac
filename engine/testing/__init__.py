"""Helpers for tests and benchmarks: real local services started and stopped by the caller."""

from engine.testing.redis_server import RedisServer, RedisServerError

__all__ = ["RedisServer", "RedisServerError"]
