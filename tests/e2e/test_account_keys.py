"""Per-account service keys through real clients: skopeo pushes one image into two accounts (stored once, each
account's wrap of its key apart), an image into one account only; after ``soko account-key shred`` of that account
its pulls fail and ``soko fsck`` reports its own content as crypto-shredded, while the other account still pulls the
shared image; a push afterwards works again under a new key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .aws_cli import create_account, soko_cli
from .images import build_image
from .layout import assert_same_content
from .servers import run_fsck, soko_login, soko_root_key, start_soko
from .skopeo import Skopeo

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

ACCOUNT_B = "222233334444"


def _stored_blobs(data_dir: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(data_dir / "storage" / "sealed" / "blobs") for f in files]


def test_one_layer_in_two_accounts_each_through_its_own_key(tmp_path: Path) -> None:
    if not Skopeo.available():
        pytest.skip("skopeo is not installed")
    server = start_soko(tmp_path / "data")
    try:
        account_a = soko_root_key(server.data_dir)["AccountId"]
        b_key = create_account(server.data_dir, ACCOUNT_B)
        assert server.credentials is not None
        a = Skopeo.create(tmp_path / "skopeo-a", {server.host: server.credentials})
        b = Skopeo.create(tmp_path / "skopeo-b", {server.host: soko_login(server, b_key)})
        shared = build_image(tmp_path / "shared", "v1", "account-keys/shared", [1 << 20])
        own = build_image(tmp_path / "own", "v1", "account-keys/own-of-a", [300_000])
        dest = f"docker://{server.host}/team/app:v1"
        a.copy(shared.ref, dest)
        b.copy(shared.ref, dest)  # the same layer (and config) in the other account's repository
        a.copy(own.ref, f"docker://{server.host}/team/own:v1")
        shared_blobs, own_blobs = shared.closure(), own.closure()
        manifests = {shared.top_digest(), own.top_digest()}  # (they live in the database)
        expected = sorted(d.split(":")[1] for d in set(shared_blobs) | set(own_blobs) if d not in manifests)
        assert sorted(p.name for p in _stored_blobs(server.data_dir)) == expected  # once per digest, not per account
        for runner, name in ((a, "a"), (b, "b")):
            pulled = shared.with_path(tmp_path / f"pulled-{name}")
            runner.copy(dest, pulled.ref)
            assert_same_content(shared_blobs, pulled.closure())
        assert run_fsck(server.data_dir).returncode == 0

        shred = soko_cli(server.data_dir, "account-key", "shred", "--account", account_a, "--yes")
        assert "crypto-shredded" in shred.stdout
        for repo in ("team/app", "team/own"):  # A's content no longer opens, shared or not
            failed = a.copy(f"docker://{server.host}/{repo}:v1", shared.with_path(tmp_path / "x").ref, check=False)
            assert failed.returncode != 0
        pulled = shared.with_path(tmp_path / "pulled-b-after")
        b.copy(dest, pulled.ref)  # B's own key still opens what B holds
        assert_same_content(shared_blobs, pulled.closure())
        fsck = run_fsck(server.data_dir)
        assert fsck.returncode != 0 and "crypto-shredded" in fsck.stdout + fsck.stderr
        only_a = set(own_blobs) - set(shared_blobs) - manifests
        assert only_a and all(d in fsck.stdout + fsck.stderr for d in only_a)

        # a push makes A a new key and stores its content anew (into a new repository: the old ones still list the
        # shredded layers as present, so a client would skip their upload — delete them, as for a deleted KMS key)
        a.copy(own.ref, f"docker://{server.host}/team/own-again:v1")
        pulled = own.with_path(tmp_path / "pulled-own")
        a.copy(f"docker://{server.host}/team/own-again:v1", pulled.ref)
        assert_same_content(own_blobs, pulled.closure())
    finally:
        assert server.stop() == 0
