"""The admin CLI as an operator meets it: --version, account list, progress on long runs, fsck naming the images a
bad blob breaks, and output piped into `head` ending quietly."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

from soko.cli import main
from soko.config import load_settings
from soko.iam.service import Identity
from soko.registry import Registry
from soko.registry.models import RepoRef
from soko.storage.paths import blob_path
from tests.domain import push_image
from tests.oci.helpers import sha256
from tests.registry.test_descriptors import opened_since, registry_descriptors


def _common(settings) -> list[str]:
    return ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "soko 0.1.0"


def test_account_list(registry, settings, capsys):
    identity = Identity(registry.ctx)
    identity.bootstrap_root()
    key_id, _ = identity.credentials.create_account("111122223333")
    registry.repositories.create(RepoRef("111122223333", "team/app"))
    assert main(["account", "list", *_common(settings), "--format", "json"]) == 0
    listed = {entry["AccountId"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(listed) == {settings.account_id, "111122223333"}
    assert listed[settings.account_id]["Default"] is True
    other = listed["111122223333"]
    assert (other["Repositories"], other["RootAccessKeyIds"]) == (1, [key_id])
    assert other["RegistryHost"] == "111122223333.dkr.ecr.us-east-1.localhost"
    assert "SecretAccessKey" not in json.dumps(listed)


def test_commands_leave_no_connection_open(settings, capsys):
    """Commands close the database they opened before they return, also when they refuse their arguments: here,
    nothing is left to the garbage collector (off while they run), so what stays open is what they kept."""
    root = os.path.dirname(os.path.abspath(settings.data_dir))  # (the data directory and the SQLite file)
    assert main(["migrate", *_common(settings)]) == 0  # (the first: the schema, the imports)
    gc.collect()
    before = registry_descriptors(root)
    gc.disable()
    try:
        for _ in range(3):
            assert main(["migrate", *_common(settings)]) == 0
            assert main(["vulndb", "status", *_common(settings)]) == 0
            assert main(["audit", *_common(settings), "--since", "2026-13-45"]) == 2
        assert not opened_since(before, root)
    finally:
        gc.enable()
    assert "migrate: schema is up to date" in capsys.readouterr().out


def test_table_progress_and_errors_that_say_what_to_do(tmp_path, capsys):
    common = ["--data-dir", str(tmp_path / "data")]  # (the embedded SQLite: these checks need no second database)
    assert main(["account", "create", "111122223333", *common]) == 0
    assert main(["account", "list", *common]) == 0
    assert "111122223333" in capsys.readouterr().out.splitlines()[-1]
    assert main(["gc", *common, "--progress", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("gc: would delete") and "gc: done: would delete" in err
    assert main(["account", "create", "111122223333", *common]) == 2
    assert "`soko account list` shows the accounts" in capsys.readouterr().err
    assert main(["audit", *common, "--since", "2026-13-45"]) == 2
    assert "use a duration (15m, 24h, 7d) or a time" in capsys.readouterr().err


def test_fsck_names_the_images_a_bad_blob_breaks_and_shows_progress(registry, settings, capsys):
    ref = RepoRef(settings.account_id, "team/app")
    layer = os.urandom(3 << 20)
    push_image(registry, ref, "v1", [layer, b"other layer"])
    push_image(registry, ref, "v2", [layer])
    with open(os.path.join(registry.ctx.storage.inner.root, "sealed", blob_path(sha256(layer))),
              "r+b") as f:
        f.seek(1000)
        f.write(b"X")  # encrypted at rest: the damage fails authentication
    assert main(["fsck", *_common(settings), "--progress"]) == 1
    out, err = capsys.readouterr()
    assert "tampered-blob: sha256:" in out
    assert "used by: team/app:v1, team/app:v2" in out
    assert "upload the original content again" in out  # what to do
    assert "fsck: 1 problem(s) found" in out
    # the progress line (stderr: stdout stays the report): counts, bytes in human units, rate
    assert "fsck: manifests: 4/4 blobs" in err and "MiB" in err and "/s)" in err


def test_output_into_head_ends_quietly(tmp_path):
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data")}, env={})  # (any database will do)
    registry = Registry.open(settings)
    identity = Identity(registry.ctx)
    for n in range(2000):  # several times what a pipe holds, so the writer meets the closed pipe
        identity.audit.record("authn", None, None, None, "deny", f"test denial {n}", None)
    identity.audit.flush()
    registry.close()
    os.chmod(settings.data_dir, 0o700)  # (else a warning about its mode)
    errors = tmp_path / "stderr"
    command = [sys.executable, "-m", "soko", "audit", *_common(settings), "--limit", "5000"]
    shell = " ".join(f"'{part}'" for part in command) + f" 2>'{errors}' | head -n 1; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    first, status = result.stdout.splitlines()
    assert "test denial" in first
    assert errors.read_text() == ""  # no BrokenPipe traceback, no "Exception ignored"
    assert status == "141"
