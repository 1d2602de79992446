"""cargo-auditable's dependency list in Rust executables: the ``.dep-v0`` section holds zlib-compressed JSON
(``{"packages":[{"name","version","source","kind","dependencies","root"}]}``).

Section headers sit at the end of an ELF file, after the section they describe, and a layer streams past once, so
the section is found by its content instead: every zlib header (``0x78`` and a valid flag byte) in the executable
starts a trial inflation that must produce ``{"`` in its first bytes and a JSON object with a ``packages`` list by its
end. Random bytes fail within a few bytes (real executables hold ~100 zlib-like headers per MiB); the trials alive at
once, the trials started per executable and per image (``Limits.audit_trials``), and the inflated size are bounded.
An executable past its bound is searched no further: a hostile one costs about a second, not hours.
"""

from __future__ import annotations

import json
import re
import zlib

_ZLIB = re.compile(rb"\x78[\x01\x5e\x9c\xda]")
_MAX_TRIALS = 64  # alive at once
_MAX_STARTS = 1 << 16  # started per executable (~1 s); a real 600 MiB executable has fewer
_MAX_JSON = 8 << 20


class _Trial:
    __slots__ = ("inflater", "out")

    def __init__(self) -> None:
        self.inflater = zlib.decompressobj()
        self.out = bytearray()

    def feed(self, data: bytes | memoryview) -> bool | bytes:
        """False: not a dependency list; True: undecided; bytes: the inflated JSON."""
        try:
            self.out += self.inflater.decompress(data, _MAX_JSON + 1 - len(self.out))
        except zlib.error:
            return False
        if len(self.out) >= 2 and not self.out.startswith(b'{"'):
            return False
        if len(self.out) > _MAX_JSON:
            return False
        if self.inflater.eof:
            try:
                doc = json.loads(self.out)
            except (ValueError, UnicodeDecodeError):
                return False
            return bytes(self.out) if isinstance(doc, dict) and isinstance(doc.get("packages"), list) else False
        return True


class AuditSearch:
    """Fed an executable's bytes in order; ``found`` is the first dependency list (JSON bytes), if any."""

    def __init__(self, budget: list[int] | None = None) -> None:
        self.tail = b""
        self.trials: list[_Trial] = []
        self.found: bytes | None = None
        self.starts = _MAX_STARTS
        self.budget = budget if budget is not None else [_MAX_STARTS]  # shared by an image's executables

    def feed(self, data: bytes) -> None:
        if self.found is not None or not data:
            return
        alive = []
        for trial in self.trials:
            result = trial.feed(data)
            if isinstance(result, bytes):
                self.found = result
                return
            if result:
                alive.append(trial)
        self.trials = alive
        buf = self.tail + data
        view = memoryview(buf)  # a trial reads from its start without a copy per candidate
        for match in _ZLIB.finditer(buf):
            if self.starts <= 0 or self.budget[0] <= 0:
                break
            self.starts -= 1
            self.budget[0] -= 1
            trial = _Trial()
            result = trial.feed(view[match.start():])
            if isinstance(result, bytes):
                self.found = result
                return
            if result and len(self.trials) < _MAX_TRIALS:
                self.trials.append(trial)
        self.tail = buf[-1:]


class Tee:
    """A stream that shows every byte read through it to an ``AuditSearch``."""

    def __init__(self, stream, search: AuditSearch) -> None:
        self.stream = stream
        self.search = search

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.search.feed(data)
        return data
