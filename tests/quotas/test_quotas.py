"""Per-account quota overrides: repositories, image size and tags per image, on both APIs and both databases."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from soko.cli import main
from soko.errors import LimitExceeded, TooLarge
from soko.registry.models import RepoRef
from tests.domain import push_image

OTHER = "111122223333"


def test_repository_quota_is_per_account(registry, server, aws) -> None:
    quotas = registry.repositories.quotas
    assert quotas.get(registry.settings.account_id, "max_repositories") == registry.settings.max_repositories
    quotas.set(registry.settings.account_id, "max_repositories", 2)
    ecr = aws("ecr")
    ecr.create_repository(repositoryName="quota/one")
    ecr.create_repository(repositoryName="quota/two")
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(repositoryName="quota/three")
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"
    assert "(2)" in exc.value.response["Error"]["Message"]
    # Another account keeps the deployment default.
    assert quotas.get(OTHER, "max_repositories") == registry.settings.max_repositories
    quotas.set(registry.settings.account_id, "max_repositories", None)
    ecr.create_repository(repositoryName="quota/three")


def test_image_size_and_tag_quotas(registry) -> None:
    account = registry.settings.account_id
    ref = RepoRef(account, "quota/size")
    registry.repositories.quotas.set(account, "max_image_size", 100)
    with pytest.raises(TooLarge):
        push_image(registry, ref, "big", [b"x" * 200])  # refused while the layer uploads
    registry.repositories.quotas.set(account, "max_image_size", None)
    digest = push_image(registry, ref, "v1", [b"small"])
    registry.repositories.quotas.set(account, "max_tags_per_image", 2)
    payload = registry.manifests.get(ref, digest).payload
    registry.manifests.put(ref, "v2", payload, None)
    with pytest.raises(LimitExceeded):
        registry.manifests.put(ref, "v3", payload, None)
    assert hashlib.sha256(payload).hexdigest() in digest


def test_soko_account_quota_cli(registry, settings, capsys) -> None:
    args = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    assert main(["account", "quota", OTHER, "max_image_size", "20GB", *args]) == 0
    out = capsys.readouterr().out
    assert "max_image_size" in out and "20000000000" in out and "(account override)" in out
    assert registry.repositories.quotas.get(OTHER, "max_image_size") == 20_000_000_000
    assert main(["account", "quota", OTHER, "max_image_size", "default", *args]) == 0
    assert registry.repositories.quotas.get(OTHER, "max_image_size") == settings.max_image_size
    assert main(["account", "quota", OTHER, "no_such_quota", "1", *args]) == 2
