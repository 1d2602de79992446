"""A pull-through cache's upstream client is built for the version of the rule's secret it read; when the secret
changes, the next pull gets a client with the new credentials and the old one is closed once the pull still
streaming through it ends (it is not cut off, and its connections do not stay open for the life of the process)."""

from __future__ import annotations

import hashlib
import json
import threading

from soko.iam.service import Identity
from soko.pullthrough.cache import PullThroughCache
from soko.pullthrough.rules import Rule
from soko.registry.models import RepoRef
from soko.secrets.store import SecretStore, SecretValue
from tests.rawhttp import wait_until
from tests.remote.upstreams import answer, hostile_server

ACCOUNT = "000000000000"
BLOB = bytes(range(256)) * (3 * 4096)  # 3 MiB: pieces of 1 MiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
SMALL = b"another layer"
SMALL_DIGEST = "sha256:" + hashlib.sha256(SMALL).hexdigest()


def established_to(port: int) -> int:
    """This host's TCP connections to ``port`` on loopback that are open (ESTABLISHED)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            _, _local, remote, state = line.split()[:4]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                count += 1
    return count


def secret_value(token: str) -> SecretValue:
    return SecretValue(json.dumps({"username": "puller", "accessToken": token}), None)


def paused_blob(go: threading.Event):
    """A route sending BLOB: 2.5 MiB, a pause until ``go`` is set, then the rest."""

    def blob(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BLOB)))
        handler.end_headers()
        handler.wfile.write(BLOB[: 5 << 19])
        handler.wfile.flush()
        assert go.wait(30)
        handler.wfile.write(BLOB[5 << 19 :])

    return blob


def test_a_changed_secret_replaces_the_client_without_cutting_a_pull_short(registry) -> None:
    go = threading.Event()
    blob = paused_blob(go)

    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    cache = PullThroughCache(registry, store)
    routes = {
        "/v2/": answer(200),
        f"/v2/team/app/blobs/{DIGEST}": blob,
        f"/v2/team/app/blobs/{SMALL_DIGEST}": answer(200, SMALL),
    }
    try:
        with hostile_server(routes) as url:
            port = int(url.rsplit(":", 1)[1])
            secret = store.create(ACCOUNT, "ecr-pullthroughcache/up", secret_value("one"), None, None)
            now = registry.ctx.clock()
            rule = cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", secret.arn, 1, now, now))
            ref = RepoRef(ACCOUNT, "up/team/app")
            fetch = cache.blob(ref, rule, DIGEST, lambda _action: None)
            pieces = iter(fetch.pieces)
            received = [next(pieces)]  # the pull is under way, with the client of the secret's first version

            store.put_value(ACCOUNT, secret.arn, secret_value("two"), None)
            # the next pull through the rule: a client for the second version (its connection kept for the next)
            other = cache.blob(ref, rule, SMALL_DIGEST, lambda _action: None)
            assert b"".join(other.pieces) == SMALL
            both = established_to(port)
            assert both == 2

            go.set()
            received.extend(pieces)  # the pull goes on through the old client to its end
            assert b"".join(received) == BLOB
            # once that pull is done, the old client (and its connection) is closed; the new one stays
            wait_until(lambda: established_to(port) == 1, "the old version's client was never closed", timeout=10)
    finally:
        cache.close()
