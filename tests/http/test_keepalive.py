"""Idle kept-alive connections are closed after keepalive_timeout, not sooner: a client (or proxy) whose pool
keeps connections up to its own idle timeout must find them open, or a reused connection breaks under a request."""

from __future__ import annotations

import socket
import time

import pytest

from soko.config import Settings


def _get(sock: socket.socket, host: str) -> bytes:
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _connect(server) -> socket.socket:
    host, port = server.host.split(":")
    return socket.create_connection((host, int(port)), timeout=15)


@pytest.fixture
def database_url(tmp_path):  # nothing here touches metadata beyond start-up: SQLite is enough
    return f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture
def keepalive() -> float | None:
    return None  # the default


@pytest.fixture
def settings(settings, keepalive) -> Settings:
    if keepalive is not None:
        settings.keepalive_timeout = keepalive
    return settings


def test_an_idle_connection_stays_open_between_requests(server) -> None:
    assert Settings().keepalive_timeout > 90  # above Go's pool expiry (skopeo, docker, containerd) and ALB's 60 s
    with _connect(server) as sock:
        assert _get(sock, server.host).startswith(b"HTTP/1.1 200")
        time.sleep(3)  # idle, as a pooled connection is
        assert _get(sock, server.host).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("keepalive", [1.0])
def test_an_idle_connection_is_closed_after_the_timeout(server) -> None:
    with _connect(server) as sock:
        assert _get(sock, server.host).startswith(b"HTTP/1.1 200")
        sock.settimeout(15)
        assert sock.recv(1) == b""  # closed by the server (a generous bound: the timeout is 1 s)
