"""The RedisServer helper: a real redis-server on a free loopback port, owned and cleaned up."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from engine.testing import RedisServer, RedisServerError

pytestmark = pytest.mark.redis


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port``, from /proc/net/tcp and tcp6."""
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            if len(addr_hex) == 8:  # IPv4, little-endian hex
                found.append(socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1]))
            else:
                raw = bytes.fromhex(addr_hex)
                v6 = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, v6))
    return found


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_starts_answers_ping_and_stops_cleanly() -> None:
    with RedisServer() as srv:
        assert srv.running
        assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
        r = srv.client()
        assert r.ping() is True
        assert redis.Redis.from_url(srv.url, socket_timeout=10).ping() is True
        assert r.config_get("save") == {"save": ""}
        assert r.config_get("appendonly") == {"appendonly": "no"}
        assert r.config_get("daemonize") == {"daemonize": "no"}
        workdir = srv.dir
        assert workdir is not None and workdir.is_dir()
        port = srv.port
    assert not srv.running
    assert srv.process is None
    assert not workdir.exists()
    assert _refuses(port)


def test_listens_on_loopback_only() -> None:
    with RedisServer() as srv:
        assert srv.client().config_get("bind") == {"bind": "127.0.0.1"}
        assert _listening_addresses(srv.port) == ["127.0.0.1"]


def test_two_servers_get_different_ports_and_separate_data() -> None:
    with RedisServer() as a, RedisServer() as b:
        assert a.port != b.port
        a.client().set("k", "a")
        assert b.client().get("k") is None
        assert a.client().get("k") == b"a"


def test_extra_config_is_applied() -> None:
    with RedisServer({"appendonly": "yes", "appendfsync": "always"}) as srv:
        r = srv.client()
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("appendfsync") == {"appendfsync": "always"}
        r.xadd("s", {"f": "v"})
        assert r.xlen("s") == 1


def test_reserved_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="bind"):
        RedisServer({"bind": "0.0.0.0"})


def test_bad_config_fails_with_the_server_log() -> None:
    srv = RedisServer({"no-such-directive": "1"})
    with pytest.raises(RedisServerError, match=r"(?s)exited with code.*no-such-directive"):
        srv.start()
    assert not srv.running
    assert srv.dir is None  # temp dir removed on failure


def test_stopped_even_when_the_block_raises() -> None:
    srv = RedisServer()
    with pytest.raises(KeyError), srv:
        port = srv.port
        raise KeyError("boom")
    assert not srv.running
    assert _refuses(port)
    srv.stop()  # idempotent


def test_missing_binary_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"redis-server was not found.*bash tests/run\.sh"):
        RedisServer().start()
