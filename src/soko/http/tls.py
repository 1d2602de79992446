"""TLS on Soko's own listeners: the certificate and key files, checked before use and reloaded when they change.

granian (rustls) reads the PEM files when a listener starts, so a renewed certificate is picked up by starting new
listeners on the same sockets and closing the old ones: connections already open finish on the old certificate,
new ones get the new one, and no connection is refused in between. Each worker checks the files' identity (inode,
size, mtime) every ``tls_reload_interval`` (10 s); that covers certbot and cert-manager, which replace files or
symlinks, with no signal to deliver to every worker. A half-written renewal (certificate and key not matching
yet) is logged and retried on the next check while the old certificate goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("soko.tls")


class TlsError(ValueError):
    """The configured certificate or key cannot be used (the message says which and what to do)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str

    @classmethod
    def from_settings(cls, settings) -> TlsFiles | None:
        cert, key = settings.tls_cert, settings.tls_key
        if not cert and not key:
            return None
        if not (cert and key):
            raise TlsError("TLS needs both tls_cert and tls_key (--tls-cert/--tls-key, SOKO_TLS_CERT/SOKO_TLS_KEY)")
        return cls(os.path.abspath(cert), os.path.abspath(key))

    def check(self) -> None:
        """Refuse a private key other users may read, and a certificate and key that do not load or match."""
        try:
            mode = os.stat(self.key).st_mode
        except OSError as exc:
            raise TlsError(f"cannot read the TLS private key {self.key}: {exc.strerror}") from None
        if mode & stat.S_IROTH:
            raise TlsError(
                f"the TLS private key {self.key} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
                f"restrict it with: chmod 600 {self.key}"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:  # (an OSError too: first)
            raise TlsError(
                f"cannot use the TLS certificate {self.cert} with the key {self.key} ({exc.reason or exc}): "
                "both must be PEM, the key unencrypted, and the certificate (chain first) must match the key"
            ) from None
        except OSError as exc:
            raise TlsError(f"cannot read {exc.filename or self.cert}: {exc.strerror}") from None

    def stamp(self) -> tuple[int, ...]:
        """What changes when either file is replaced or rewritten (symlinks followed, as certbot's live/ links)."""
        values: list[int] = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)
                values += [st.st_ino, st.st_size, st.st_mtime_ns]
            except OSError:
                values += [-1, -1, -1]
        return tuple(values)


async def watch(files: TlsFiles, restart: Callable[[], None], interval: float) -> None:
    """Call ``restart`` (start listeners with the files as they are now) whenever the files change and check out."""
    stamp = refused = files.stamp()
    while True:
        await asyncio.sleep(interval)
        current = files.stamp()
        if current in (stamp, refused):
            continue
        try:
            files.check()
        except TlsError as exc:
            log.error("the TLS files changed but cannot be used (still serving the previous ones): %s", exc)
            refused = current  # checked again once they change again
            continue
        stamp = current
        restart()
        log.info("reloaded the TLS certificate %s", files.cert)
