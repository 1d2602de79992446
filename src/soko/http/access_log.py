"""The access log: one JSON line per request (setting ``access_log``: ``stderr``, a file path, or ``off``).

Fields: ``time`` (UTC, ms), ``request_id``, ``source`` (client address), ``endpoint`` (public or a VPC endpoint
id), ``principal`` (ARN), ``account`` (the registry addressed), ``method``, ``path``, ``status``, ``bytes_in``,
``bytes_out``, ``duration_ms``, ``user_agent``. Never the query string (presigned SigV4 URLs carry signatures
there), nor any header but the user agent, and the token in a presigned ``/layers/`` path is replaced by ``…``.
Successful ``/healthz`` and ``/readyz`` probes are not logged (load balancers send them every few seconds).

A request costs one formatted line (a few µs) and a list append on the event loop; a writer thread writes the lines
in batches about every ``FLUSH_SECONDS``, so a slow or blocked stderr (a full pipe nobody reads) never stalls
requests: past ``MAX_PENDING`` lines waiting, new ones are dropped and counted, and the count is logged when
writing resumes.
Several worker processes append to the same file or stderr; each batch is whole lines in one ``write``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from json.encoder import encode_basestring_ascii

from soko.http.messages import Request

log = logging.getLogger("soko.access")

FLUSH_SECONDS = 0.5
MAX_PENDING = 100_000
_PRESIGNED = "/layers/"
_PROBES = ("/healthz", "/readyz")


def loggable_path(path: str, limit: int = 200) -> str:
    """A request's path for a log line: at most ``limit`` characters, and a presigned layer URL's token (the
    credential) replaced by ``…``."""
    return _PRESIGNED + "…" if path.startswith(_PRESIGNED) else path[:limit]


def open_access_log(destination: str) -> AccessLog | None:
    """``stderr`` (default), ``off`` (or empty), or a file path (appended to, created 0600)."""
    value = destination.strip()
    if value.lower() in ("", "off", "none", "false", "0"):
        return None
    if value.lower() in ("stderr", "-"):
        return AccessLog(2, close_fd=False)
    try:
        fd = os.open(value, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        message = f"cannot open the access log {value!r} ({exc.strerror}); fix access_log or set it to 'off'"
        raise ValueError(message) from None
    return AccessLog(fd, close_fd=True)


def _str(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


class AccessLog:
    def __init__(self, fd: int, close_fd: bool) -> None:
        self._fd = fd
        self._close_fd = close_fd
        self._lines: list[str] = []
        self._middles: dict[tuple, tuple[str, str]] = {}  # (the request's repeated fields) -> their escaped JSON
        self._dropped = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._second = -1
        self._stamp = ""
        self._thread = threading.Thread(target=self._run, name="soko-access-log", daemon=True)
        self._thread.start()

    def record(self, request: Request, status: int, bytes_out: int, started: float, now: float) -> None:
        """One finished request (``started``/``now``: ``time.perf_counter()`` values)."""
        path = request.path
        if status == 200 and path in _PROBES:
            return
        path = loggable_path(path, 1024)
        context = request.context
        principal = request.principal
        if context is not None:
            request_id, source, endpoint = context.request_id, context.source_ip, context.endpoint
        else:
            request_id, source, endpoint = None, request.client.rpartition(":")[0].strip("[]"), None
        # Written out rather than json.dumps'd: a third of the cost on the hottest path. Every string goes through
        # JSON's own escaping (to ASCII: a crafted path or user agent cannot break a line or forge another). The part
        # from the source to the path repeats from request to request (a client pulling): escaped once, remembered.
        arn = principal.arn if principal is not None else None
        key = (source, endpoint, arn, request.account, request.method, path, request.headers.get("user-agent"))
        middle = self._middles.get(key)
        if middle is None:
            middle = (
                f'"source":{_str(source)},"endpoint":{_str(endpoint)},"principal":{_str(arn)},'
                f'"account":{_str(request.account)},"method":{_str(request.method)},"path":{_str(path)},'
            ), f'"user_agent":{_str((key[-1] or "")[:256])}}}\n'
            if len(self._middles) >= 4096:
                self._middles.clear()
            self._middles[key] = middle
        line = (
            f'{{"time":"{self._time()}","request_id":{_str(request_id)},{middle[0]}'
            f'"status":{int(status)},"bytes_in":{int(request.bytes_in)},"bytes_out":{int(bytes_out)},'
            f'"duration_ms":{(now - started) * 1000:.3f},{middle[1]}'
        )
        with self._lock:
            if len(self._lines) >= MAX_PENDING:
                self._dropped += 1
                return
            self._lines.append(line)

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("the access log could not keep up: %d line(s) dropped; is its destination blocked?", dropped)
        if not lines:
            return
        data = "".join(lines).encode()
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            log.warning("could not write the access log (%s); %d line(s) lost", exc.strerror, len(lines))

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(5)
        self.flush()
        if self._close_fd:
            os.close(self._fd)
