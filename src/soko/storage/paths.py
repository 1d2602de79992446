"""The storage layout: every path Soko keeps in a storage driver, and how to read one back.

::

    blobs/<algorithm>/<first two hex>/<hex>      a blob's content (digest-addressed; nothing else lives here)
    uploads/<upload id>/data                     an in-flight upload's data (its row in ``uploads`` makes it real);
                                                 ``copy-<uuid>``: a blob re-encrypted for a mount across keys (no row)
    trash/<algorithm>-<hex>                      a blob the collector moved aside before committing its deletion
    <path>~parts/<start offset, 16 hex digits>   one part of a file stored as parts (drivers without append)
    keyed/<keyspace>/<algorithm>/<2 hex>/<hex>  a blob's copy under a customer key (keyspace ``kms/<key id>`` or
                                                 ``dsse/<key id>``: repositories with encryptionType KMS, KMS_DSSE)
    archive/blobs/<algorithm>/<first two hex>/<hex>.<token>
                                                 a blob's copy in the archive tier (the archive store; the token
                                                 makes each copy a path of its own: the blob row names the live one)
    sealed/<any of the above>                    the same, encrypted (``soko.crypto``): what Soko writes today; the
                                                 paths above hold plaintext written by versions before encryption

Paths are '/'-separated keys relative to the driver's root; drivers refuse anything else (``base.check_path``).
"""

from __future__ import annotations

BLOBS = "blobs"
UPLOADS = "uploads"
TRASH = "trash"
KEYED = "keyed"
ARCHIVE = "archive"  # the archive tier's blob copies (in the archive store: by default the same store)
ARCHIVE_BLOBS = f"{ARCHIVE}/{BLOBS}"
SEALED = "sealed"  # encrypted content: sealed/<logical path>; reserved, never a logical path itself
PARTS = "~parts/"  # '~' is outside the digest and upload-id alphabets, so a part never looks like a blob or upload


def blob_path(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"{BLOBS}/{algorithm}/{hex_[:2]}/{hex_}"


def blob_digest(path: str) -> str | None:
    """The digest a path under ``blobs/`` stores, or None when the path is not a blob's (a stray file)."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != BLOBS:
        return None
    return f"{parts[1]}:{parts[3]}"


def keyed_path(keyspace: str, digest: str) -> str:
    """Where the copy of ``digest`` under ``keyspace`` (``kms/<key id>`` | ``dsse/<key id>``) is stored."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{KEYED}/{keyspace}/{algorithm}/{hex_[:2]}/{hex_}"


def keyed_copy(path: str) -> tuple[str, str] | None:
    """(keyspace, digest) of a path under ``keyed/``, or None when it is not a copy's (a stray file)."""
    parts = path.split("/")
    if len(parts) != 6 or parts[0] != KEYED:
        return None
    return f"{parts[1]}/{parts[2]}", f"{parts[3]}:{parts[5]}"


def archive_blob_path(digest: str, token: str) -> str:
    """A new copy of the blob in the archive tier (``token``: hex, unique per copy)."""
    return f"{ARCHIVE}/{blob_path(digest)}.{token}"


def archive_blob_digest(path: str) -> str | None:
    """The digest an archive copy's path stores, or None for a stray file."""
    if not path.startswith(ARCHIVE + "/"):
        return None
    parts = path[len(ARCHIVE) + 1 :].split("/")
    if len(parts) != 4 or parts[0] != BLOBS or "." not in parts[3]:
        return None
    return f"{parts[1]}:{parts[3].split('.', 1)[0]}"


def is_archive(path: str) -> bool:
    return path.startswith(ARCHIVE + "/")


def upload_dir(upload_id: str) -> str:
    """Everything an upload session keeps in storage (deleted as a whole when the session ends)."""
    return f"{UPLOADS}/{upload_id}"


def upload_path(upload_id: str) -> str:
    return f"{upload_dir(upload_id)}/data"


def upload_id_of(path: str) -> str | None:
    """The session a path under ``uploads/`` belongs to."""
    parts = path.split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == UPLOADS else None


def trash_path(digest: str) -> str:
    return f"{TRASH}/{digest.replace(':', '-')}"


def trash_digest(path: str) -> str:
    return path.rsplit("/", 1)[-1].replace("-", ":", 1)


def whole_object(path: str) -> bool:
    """Whether ``path`` (a blob's or a trashed blob's) can only be one whole object: content reaches it by a move,
    which always stores one, and nothing lives below it, so deleting it needs no listing."""
    if path.startswith(SEALED + "/"):
        path = path[len(SEALED) + 1 :]
    parts = path.split("/")
    return (
        blob_digest(path) is not None
        or keyed_copy(path) is not None
        or archive_blob_digest(path) is not None
        or (len(parts) == 2 and parts[0] == TRASH)
    )


def part_path(path: str, start: int) -> str:
    """The part of ``path`` that starts at byte ``start``."""
    return f"{path}{PARTS}{start:016x}"


def part_start(path: str) -> int:
    return int(path.rsplit("/", 1)[1], 16)


def parted_file(path: str) -> str | None:
    """The file a part belongs to, or None when ``path`` is not a part."""
    return path.split(PARTS, 1)[0] if PARTS in path else None
