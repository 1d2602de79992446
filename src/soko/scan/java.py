"""Maven coordinates in Java archives: ``META-INF/maven/<group>/<artifact>/pom.properties`` inside a jar, war or ear,
and inside the archives it nests (Spring Boot's ``BOOT-INF/lib/*.jar``, a war's ``WEB-INF/lib``), to a fixed depth.

A zip is read from its central directory, so the archive is spooled to a temporary file (memory up to 8 MiB, then
disk) while its layer streams past; only the properties files and nested archives are read from it, each bounded."""

from __future__ import annotations

import io
import tempfile
import zipfile

from soko.scan.limits import ImageUnreadable

ARCHIVES = (".jar", ".war", ".ear", ".par", ".sar", ".jpi", ".hpi", ".lpkg")
MAX_DEPTH = 3  # an archive in an archive in an archive
MAX_MEMBERS = 100_000
MAX_PROPERTIES = 1 << 20
MAX_NESTED = 256 << 20
SPOOL_MEMORY = 8 << 20


def is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVES)


def read(stream, size: int, limit: int) -> list[dict]:
    """The coordinates in the archive ``stream`` (a tar entry of ``size`` bytes)."""
    if size > limit:
        raise ImageUnreadable(f"a Java archive is {size} bytes (limit {limit})")
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        while data := stream.read(1 << 16):
            spool.write(data)
        spool.seek(0)
        return _archive(spool, "", 1)


def _archive(fileobj, inner: str, depth: int) -> list[dict]:
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError):
        return []  # not a zip after all: nothing to report, as other scanners
    found: list[dict] = []
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ImageUnreadable(f"a Java archive has more than {MAX_MEMBERS} entries")
        for info in members:
            name = info.filename
            try:
                if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                    if info.file_size <= MAX_PROPERTIES:
                        coords = _properties(archive.read(info))
                        if coords:
                            found.append({**coords, "inner": inner})
                elif depth < MAX_DEPTH and is_archive(name) and not info.is_dir():
                    if info.file_size > MAX_NESTED:
                        continue
                    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as nested, archive.open(info) as src:
                        copied = 0
                        while data := src.read(1 << 16):
                            copied += len(data)
                            if copied > MAX_NESTED:  # a size the header understated: a zip bomb
                                raise ImageUnreadable("a nested Java archive is larger than its header says")
                            nested.write(data)
                        nested.seek(0)
                        found.extend(_archive(nested, f"{inner}!{name}" if inner else name, depth + 1))
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
                continue  # one unreadable member (encrypted, unknown compression) spoils nothing else
    return found


def _properties(data: bytes) -> dict | None:
    fields = {}
    for line in io.StringIO(data.decode("utf-8", "replace")):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("groupId") and fields.get("artifactId") and fields.get("version"):
        return {"group": fields["groupId"], "artifact": fields["artifactId"], "version": fields["version"]}
    return None
