"""``/healthz`` and ``/readyz`` for load balancers and orchestrators: unauthenticated, cheap, never metered or audited.

* ``/healthz``: the process answers (liveness). Nothing else is checked, so a database outage never makes an
  orchestrator restart every node at once.
* ``/readyz``: this node can serve (readiness): the database answers and its schema is at this code's newest
  migration, and the storage is reachable and writable. Otherwise 503 with ``{"status": "unavailable",
  "reason": …}`` naming what failed and what to do.

The checks run on a pool thread with a time limit and their answer is shared for ``CACHE_SECONDS``, so any number of
probes costs at most one database round trip per second and a hung database cannot pile up threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from soko.http.messages import Request, Response, error_response

if TYPE_CHECKING:
    from soko.registry import Registry

log = logging.getLogger("soko.health")

PATHS = ("/healthz", "/readyz")
CACHE_SECONDS = 1.0
TIMEOUT_SECONDS = 5.0
_JSON = "application/json"
_ALIVE = Response(200, {"Cache-Control": "no-store"}, b'{"status":"ok"}', _JSON)


class Health:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._answer: tuple[float, Response] | None = None
        self._running: asyncio.Future | None = None
        self._probe: asyncio.Future | None = None  # the checks on a pool thread (may outlive a timeout)

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            message = f"{request.method} {request.path} is not supported: use GET"
            return error_response(405, "UNSUPPORTED", message, headers={"Allow": "GET, HEAD"})
        if request.path == "/healthz":
            return _ALIVE
        cached = self._answer
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        if self._running is None:  # one check at a time, whatever the number of probes
            self._running = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._running)

    async def _check(self) -> Response:
        try:
            return self._answer_for(await self._probe_problem())
        finally:
            self._running = None  # whatever happened, the next probe may check again

    async def _probe_problem(self) -> str | None:
        # A check that hung past the timeout keeps its pool thread: later probes wait on that same check instead of
        # starting more threads (and database connections) behind it.
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().run_in_executor(None, self.problem)
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), TIMEOUT_SECONDS)
        except TimeoutError:
            return f"the readiness checks took more than {TIMEOUT_SECONDS:.0f} s: is the database or storage hung?"
        except Exception as exc:
            return f"the readiness checks failed: {_short(exc)}"

    def _answer_for(self, problem: str | None) -> Response:
        if problem is None:
            response = Response(200, {"Cache-Control": "no-store"}, b'{"status":"ready"}', _JSON)
        else:
            log.warning("not ready: %s", problem)
            body = json.dumps({"status": "unavailable", "reason": problem}).encode()
            response = Response(503, {"Cache-Control": "no-store", "Retry-After": "5"}, body, _JSON)
        self._answer = (time.monotonic(), response)
        return response

    def problem(self) -> str | None:
        """What keeps this node from serving, or None (runs on a pool thread)."""
        ctx = self.registry.ctx
        try:
            current = ctx.db.schema_revision()
        except Exception as exc:
            return f"database: cannot query it ({_short(exc)}); check database_url and that the server is up"
        head = ctx.db.head_revision()
        if current != head:
            return (
                f"database: schema is at migration {current or 'none'}, this code needs {head}; "
                "run `soko migrate` (or restart one node, which migrates on start)"
            )
        try:
            ctx.storage.check()
        except Exception as exc:
            return f"storage: {_short(exc)}; check the data directory's mount, permissions and free space"
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
