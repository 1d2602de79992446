"""Everything Soko writes under its data dir is private to its user, whatever the umask: directories 0700, files
0600 (metadata, blobs, upload data, keys). Modes given at creation are only narrowed by the umask, never widened."""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger("soko")

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: str) -> None:
    """`os.makedirs` with every directory it creates 0700 (os.makedirs applies `mode` to the last one only)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if parent != path:
        make_dirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def create_file(path: str) -> None:
    """Create `path` empty and private unless it exists (so SQLite's database and its -wal/-shm, which copy the
    database file's mode, start 0600)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


def data_dir(path: str) -> None:
    """Create the data dir 0700, or warn when an existing one is open to other users."""
    if not os.path.isdir(path):
        make_dirs(path)
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning(
            "data dir %s has mode %04o: other users may read metadata and blobs; run `chmod 700 %s`",
            path,
            mode,
            path,
        )
