"""Whatever the umask, the data dir is 0700 and what Soko stores in it 0600 (SQLite, blobs, uploads, keys); an
existing data dir open to others draws a warning at start. File modes only: SQLite is enough."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from soko.config import load_settings
from soko.iam.service import Identity
from soko.registry import Registry
from soko.registry.models import RepoRef
from tests.oci.helpers import sha256


@pytest.fixture
def open_umask():
    previous = os.umask(0o022)  # the usual umask: without explicit modes everything is world-readable
    yield
    os.umask(previous)


def _modes(root: str) -> dict[str, int]:
    found = {root: stat.S_IMODE(os.stat(root).st_mode)}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            found[path] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_data_dir_is_private_whatever_the_umask(tmp_path, open_umask, caplog) -> None:
    data_dir = str(tmp_path / "nested" / "data")
    settings = load_settings(overrides={"data_dir": data_dir}, env={})
    with caplog.at_level(logging.WARNING):
        registry = Registry.open(settings)
    try:
        Identity(registry.ctx).bootstrap_root()  # master.key and root-credentials
        ref = RepoRef(settings.account_id, "modes")
        done = registry.uploads.start(ref)
        writer = registry.uploads.begin_chunk(ref, done.id, 0)
        writer.write(b"layer")
        writer.finish()
        registry.uploads.complete(ref, done.id, sha256(b"layer"))
        pending = registry.uploads.start(ref)
        writer = registry.uploads.begin_chunk(ref, pending.id, 0)
        writer.write(b"half")
        writer.finish()
        modes = _modes(data_dir)
    finally:
        registry.close()
    names = {os.path.relpath(p, data_dir) for p in modes}
    assert {"metadata.db", "metadata.db-wal", "master.key", "root-credentials", "generation"} <= names
    assert any(
        n.startswith("storage/sealed/blobs/sha256/") and os.path.isfile(os.path.join(data_dir, n)) for n in names
    )
    assert any(n.startswith("storage/sealed/uploads/") and n.endswith("/data") for n in names)
    opened = {os.path.relpath(p, data_dir): oct(m) for p, m in modes.items() if m & 0o077}
    assert opened == {}
    assert all(m == 0o700 for p, m in modes.items() if os.path.isdir(p))
    assert "mode" not in caplog.text  # a fresh data dir draws no warning


def test_an_existing_data_dir_open_to_others_draws_a_warning(tmp_path, caplog) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    settings = load_settings(overrides={"data_dir": str(data_dir)}, env={})
    with caplog.at_level(logging.WARNING):
        Registry.open(settings).close()
    assert f"data dir {data_dir} has mode 0755" in caplog.text and "chmod 700" in caplog.text
