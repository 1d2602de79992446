"""A full disk: pushes get a retryable 503 UNAVAILABLE saying storage is full (ECR: ServiceUnavailableException),
one log line per minute instead of a traceback per request, no upload row without data; and once space is freed,
pushes work again. Injected ENOSPC on both databases, and a real 4 MiB tmpfs (needs root to mount)."""

from __future__ import annotations

import errno
import logging
import os
import subprocess

import httpx
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from soko import storage_full
from soko.meta.schema import uploads
from tests.conftest import serve
from tests.oci.helpers import assert_oci_error, push_blob, sha256


def _upload_rows(registry) -> int:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar()


@pytest.fixture(autouse=True)
def fresh_log_interval(monkeypatch):
    monkeypatch.setattr(storage_full, "_last_logged", 0.0, raising=False)
    monkeypatch.setattr(storage_full, "_suppressed", 0, raising=False)


def test_enospc_is_a_retryable_503_logged_once(server, client, aws, monkeypatch, caplog) -> None:
    # Where the bytes meet the disk: below the encryption layer (an upload writes through a view of its own key).
    storage = server.registry.ctx.storage
    disk = getattr(storage, "inner", storage)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk, "put_content", full)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            response = client.post("/v2/full/app/blobs/uploads/")
            body = assert_oci_error(response, 503, "UNAVAILABLE")
            assert "blob storage is full" in body["errors"][0]["message"]
            assert response.headers["Retry-After"] == "60"
        with pytest.raises(ClientError) as refused:
            aws("ecr").initiate_layer_upload(repositoryName="full/app")
    assert refused.value.response["Error"]["Code"] == "ServiceUnavailableException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert _upload_rows(server.registry) == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "is full" in errors[0].getMessage() and errors[0].exc_info is None
    monkeypatch.undo()
    push_blob(client, "full/app", b"space again")


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_real_full_filesystem(tiny_disk, registry, settings, caplog) -> None:
    from soko.storage import FilesystemDriver

    registry.ctx.storage = FilesystemDriver(str(tiny_disk / "storage"))
    filler = tiny_disk / "filler"
    with serve(settings, registry) as server, httpx.Client(
        base_url=server.url, timeout=30, headers=server.basic_auth
    ) as client:
        push_blob(client, "tiny/app", b"fits")
        with open(filler, "wb", buffering=0) as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        data = os.urandom(512 * 1024)
        with caplog.at_level(logging.ERROR):
            for _ in range(2):
                response = client.post("/v2/tiny/app/blobs/uploads/", params={"digest": sha256(data)}, content=data)
                assert_oci_error(response, 503, "UNAVAILABLE")
        assert _upload_rows(registry) == 0
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        filler.unlink()  # space freed: pushes work again
        assert push_blob(client, "tiny/app", data) == sha256(data)
