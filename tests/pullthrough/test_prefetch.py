"""A fresh manifest's prefetch takes one of its PREFETCH_SLOTS before it starts a thread: while fetches under way
hold every slot, a manifest pull starts none (no thread that would find no slot and end at once), and once they
end the next fresh manifest's blobs are prefetched again."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from soko.iam.service import Identity
from soko.pullthrough.cache import PREFETCH_SLOTS, PullThroughCache
from soko.pullthrough.rules import Rule
from soko.registry.models import RepoRef
from soko.secrets.store import SecretStore
from tests.rawhttp import wait_until
from tests.remote.upstreams import answer, hostile_server

ACCOUNT = "000000000000"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _serve_image(routes: dict, name: str, blobs: list[bytes], route=answer) -> list[str]:
    """Upstream repository ``name`` with one image tagged v1: ``blobs`` are its config and layers (``route(200,
    body)`` serves each); their digests."""
    descriptors = [{"mediaType": "application/octet-stream", "digest": _digest(b), "size": len(b)} for b in blobs]
    document = {"schemaVersion": 2, "mediaType": IMAGE, "config": descriptors[0], "layers": descriptors[1:]}
    routes[f"/v2/{name}/manifests/v1"] = answer(200, json.dumps(document).encode(), {"Content-Type": IMAGE})
    for blob in blobs:
        routes[f"/v2/{name}/blobs/{_digest(blob)}"] = route(200, blob)
    return [_digest(b) for b in blobs]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads started from now on."""
    names: list[str] = []

    class Counted(threading.Thread):
        def start(self) -> None:
            names.append(self.name)
            super().start()

    monkeypatch.setattr(threading, "Thread", Counted)
    return names


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_no_prefetch_thread_while_every_slot_is_taken(registry, started: list[str]) -> None:
    release = threading.Event()
    asked: list[str] = []

    def hanging(status: int, body: bytes):  # the headers at once, the body when the test lets go
        def route(handler) -> None:
            asked.append(handler.path)
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.flush()
            assert release.wait(30)
            handler.wfile.write(body)

        return route

    cache = PullThroughCache(registry, SecretStore(registry.ctx, Identity(registry.ctx).master))
    routes: dict = {"/v2/": answer(200, b"{}")}
    held = _serve_image(routes, "held", [b"held %d" % i for i in range(PREFETCH_SLOTS)], hanging)
    crowded = _serve_image(routes, "crowded", [b"crowded config", b"crowded layer"])
    later = _serve_image(routes, "later", [b"later config", b"later layer"])
    try:
        with hostile_server(routes) as url:
            now = registry.ctx.clock()
            rule = cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", None, 1, now, now))

            def pull(name: str) -> None:
                cache.manifest(RepoRef(ACCOUNT, f"up/{name}"), rule, "v1", lambda _: None, record_pull=False)

            pull("held")  # its blobs' fetches take every slot, and hang
            wait_until(lambda: len(asked) == PREFETCH_SLOTS, "the prefetch did not fetch every blob")
            assert started.count("pull-through-prefetch") == 1
            pull("crowded")
            assert started.count("pull-through-prefetch") == 1  # no slot: no thread
            assert not any(d in path for d in crowded for path in asked)

            release.set()
            wait_until(lambda: not _alive("pull-through-fetch"), "the held fetches did not end")
            for digest in held:
                registry.blobs.open(RepoRef(ACCOUNT, "up/held"), digest)  # stored
            pull("later")  # slots free again: prefetched as before
            assert started.count("pull-through-prefetch") == 2
            ref = RepoRef(ACCOUNT, "up/later")
            wait_until(lambda: not _alive("pull-through-fetch") and not _alive("pull-through-prefetch"), "prefetch")
            for digest in later:
                registry.blobs.open(ref, digest)
    finally:
        release.set()
        cache.close()
