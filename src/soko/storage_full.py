"""A full disk (blob storage or the database) is an answer, not a crash: pushes get a retryable 503 whose error
body says storage is full, the log gets one line per minute instead of a traceback per request.

Why 503 (Retry-After: 60) and not 507: 503 is the status registries' clients (docker, containerd, skopeo, botocore)
and load balancers already treat as "try again later, perhaps elsewhere"; 507 is WebDAV's and clients handle it
as any unknown failure. Distribution's own code for it is UNAVAILABLE.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from soko.errors import StorageFull, StorageUnavailable
from soko.storage.base import StorageUnreachable

log = logging.getLogger("soko.storage")

LOG_INTERVAL = 60.0
RETRY_AFTER = "60"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# SQLite: SQLITE_FULL; PostgreSQL: SQLSTATE 53100 disk_full ("could not extend file ... No space left on device").
_DATABASE_FULL = ("database or disk is full", "No space left on device", "could not extend file", "disk_full")

_lock = threading.Lock()
_last_logged = 0.0
_suppressed = 0


def storage_full(exc: BaseException) -> StorageUnavailable | None:
    """The retryable StorageUnavailable error `exc` amounts to — storage full (an OSError ENOSPC/EDQUOT, or a
    database out of space) or an object store failing after its retries — else None. Logs the first one, then at
    most one line per LOG_INTERVAL (with how many were not logged)."""
    if isinstance(exc, StorageUnavailable):
        return exc
    seen: set[int] = set()
    cause: BaseException | None = exc
    where = ""
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, StorageUnreachable):
            _log("blob storage", cause, "is unavailable")
            return StorageUnavailable(f"blob storage is unavailable ({cause}); retry later")
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            where = "blob storage"
            break
        if type(cause).__name__ in ("OperationalError", "DiskFull") and any(s in str(cause) for s in _DATABASE_FULL):
            where = "the database"
            break
        cause = cause.__cause__ or cause.__context__ or getattr(cause, "orig", None)
    else:
        return None
    _log(where, cause)
    return StorageFull(f"{where} is full: the registry cannot store more data now; retry later")


def _log(where: str, cause: BaseException | None, state: str = "is full") -> None:
    global _last_logged, _suppressed
    now = time.monotonic()
    with _lock:
        if _last_logged and now - _last_logged < LOG_INTERVAL:
            _suppressed += 1
            return
        suppressed, _suppressed, _last_logged = _suppressed, 0, now
    log.error(
        "%s %s (%s): requests that need it are refused with 503 until it recovers%s",
        where,
        state,
        str(cause)[:200],
        f" ({suppressed} more refused since the last report)" if suppressed else "",
    )
