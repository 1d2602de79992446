"""The pull-through fill job on images it can never store: an upstream index that is malformed or nests too deep, an
image over the image size quota. It gives them up (bounded, with the reason) instead of failing on a KeyError,
recursing without end, or retrying for good; and a pull of an invalid upstream index is the upstream's failure."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from soko.iam.service import Identity
from soko.meta.schema import jobs, pull_through_pending
from soko.pullthrough.cache import FILL_ATTEMPTS, FILL_DEPTH, FILL_JOB, PullThroughCache, StoreFailed, UpstreamFailed
from soko.pullthrough.rules import Rule
from soko.registry.models import RepoRef
from soko.secrets.store import SecretStore
from tests.remote.upstreams import answer, hostile_server

ACCOUNT = "000000000000"
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def allowed(_action: str) -> None:
    return None


@pytest.fixture
def served(registry) -> Iterator[tuple[PullThroughCache, dict, Rule]]:
    """A cache, the upstream's routes (filled by the test; repository ``img`` upstream) and a rule for it."""
    cache = PullThroughCache(registry, SecretStore(registry.ctx, Identity(registry.ctx).master))
    routes: dict = {"/v2/": answer(200, b"{}")}
    try:
        with hostile_server(routes) as url:
            now = registry.ctx.clock()
            yield cache, routes, cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", None, 1, now, now))
    finally:
        cache.close()


def serve_manifest(routes: dict, reference: str, document: dict) -> str:
    payload = json.dumps(document).encode()
    for ref in (reference, digest_of(payload)):
        routes[f"/v2/img/manifests/{ref}"] = answer(200, payload, {"Content-Type": document["mediaType"]})
    return digest_of(payload)


def pending(registry) -> list[str]:
    with registry.ctx.db.read() as conn:
        return sorted(conn.execute(sa.select(pull_through_pending.c.digest)).scalars())


def fill_jobs(registry) -> list[str]:
    with registry.ctx.db.read() as conn:
        return list(conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == FILL_JOB)).scalars())


def repository_id(registry, ref: RepoRef) -> int:
    return registry.repositories.get(ref).id


def test_an_invalid_upstream_index_is_the_upstreams_failure(served) -> None:
    cache, routes, rule = served
    serve_manifest(routes, "v1", {"schemaVersion": 2, "mediaType": INDEX, "manifests": [{"mediaType": IMAGE}]})
    with pytest.raises(UpstreamFailed) as failed:  # (503 UNAVAILABLE, as every upstream failure; was 400)
        cache.manifest(RepoRef(ACCOUNT, "up/img"), rule, "v1", allowed, record_pull=False)
    assert failed.value.code == "UpstreamUnavailable" and "not a valid manifest" in failed.value.message


def test_indexes_nested_deeper_than_the_bound_are_given_up(registry, served) -> None:
    cache, routes, rule = served
    layer = os.urandom(1000)
    config = b'{"architecture":"amd64","os":"linux"}'
    routes[f"/v2/img/blobs/{digest_of(layer)}"] = answer(200, layer)
    routes[f"/v2/img/blobs/{digest_of(config)}"] = answer(200, config)
    image = {
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": 37},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": 1000}],
    }
    child, child_type = serve_manifest(routes, "leaf", image), IMAGE
    for level in range(FILL_DEPTH + 1):
        child = serve_manifest(
            routes,
            f"level{level}",
            {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [{"mediaType": child_type, "digest": child, "size": 1}],
            },
        )
        child_type = INDEX
    ref = RepoRef(ACCOUNT, "up/img")
    top = cache.manifest(ref, rule, f"level{FILL_DEPTH}", allowed, record_pull=False)
    assert pending(registry) == [top.digest]
    result = cache.fill(f"{repository_id(registry, ref)}:{top.digest}")
    assert result is not None and "gave up" in result and "deeper" in result
    assert pending(registry) == [] and fill_jobs(registry) == []


def test_a_malformed_pending_index_is_given_up(registry, served) -> None:
    """(an index pending from an earlier version, before indexes were checked on their way in)"""
    cache, _routes, rule = served
    ref = RepoRef(ACCOUNT, "up/img")
    payload = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [{"mediaType": IMAGE}]}).encode()
    with registry.ctx.transaction(invalidates=True) as tx:
        repo_id = registry.repositories.id_for_pull_through(tx, ref)
    cache._pend(repo_id, "v1", digest_of(payload), INDEX, payload, cache._sync_event(ref, rule, "v1", None))
    result = cache.fill(f"{repo_id}:{digest_of(payload)}")  # (was a KeyError, for good)
    assert result is not None and "gave up" in result and "without a valid digest" in result
    assert pending(registry) == [] and fill_jobs(registry) == []


def test_an_image_that_cannot_be_stored_is_given_up_after_its_attempts(registry, served) -> None:
    cache, routes, rule = served
    layers = [os.urandom(100_000), os.urandom(100_000)]
    for layer in layers:
        routes[f"/v2/img/blobs/{digest_of(layer)}"] = answer(200, layer)
    image = {
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(layers[0]),
            "size": 100_000,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(x), "size": len(x)}
            for x in layers
        ],
    }
    digest = serve_manifest(routes, "v1", image)
    registry.repositories.quotas.set(ACCOUNT, "max_image_size", 150_000)  # each blob under it, the image over
    ref = RepoRef(ACCOUNT, "up/img")
    assert cache.manifest(ref, rule, "v1", allowed, record_pull=False).digest == digest
    key = f"{repository_id(registry, ref)}:{digest}"
    with pytest.raises(StoreFailed):  # retried (a quota may be raised meanwhile)
        cache.fill(key)
    assert pending(registry) == [digest]
    with registry.ctx.db.write() as conn:  # the job runner's count of its failed runs in a row
        conn.execute(sa.update(jobs).where(jobs.c.key == key).values(attempts=FILL_ATTEMPTS - 1))
    result = cache.fill(key)
    assert result is not None and "gave up" in result and f"after {FILL_ATTEMPTS} attempts" in result
    assert pending(registry) == [] and fill_jobs(registry) == []
