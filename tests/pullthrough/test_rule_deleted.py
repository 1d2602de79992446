"""A pull-through cache rule deleted (or changed) takes its upstream client with it: the process that deletes it
closes the client at once, or when the pull still streaming through it ends (it is not cut off); another process
of the deployment does at its next rule lookup in the account. Before, it stayed open until the process ended."""

from __future__ import annotations

import threading

from soko.iam.service import Identity
from soko.pullthrough.cache import PullThroughCache
from soko.pullthrough.rules import Rule
from soko.registry.models import RepoRef
from soko.secrets.store import SecretStore
from tests.pullthrough.test_secret_change import (
    BLOB,
    DIGEST,
    SMALL,
    SMALL_DIGEST,
    established_to,
    paused_blob,
    secret_value,
)
from tests.rawhttp import wait_until
from tests.remote.upstreams import answer, hostile_server

ACCOUNT = "000000000000"


def allowed(_action: str) -> None:
    return None


def test_a_deleted_rule_closes_its_client_once_its_last_pull_ends(registry) -> None:
    go = threading.Event()
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    cache = PullThroughCache(registry, store)
    routes = {"/v2/": answer(200), f"/v2/team/app/blobs/{DIGEST}": paused_blob(go)}
    try:
        with hostile_server(routes) as url:
            port = int(url.rsplit(":", 1)[1])
            now = registry.ctx.clock()
            rule = cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", None, 1, now, now))
            fetch = cache.blob(RepoRef(ACCOUNT, "up/team/app"), rule, DIGEST, allowed)
            pieces = iter(fetch.pieces)
            received = [next(pieces)]  # a pull under way through the rule's client
            assert established_to(port) == 1

            cache.delete_rule(ACCOUNT, "up")
            assert cache._clients.open_count() == 1  # retired, still streaming
            go.set()
            received.extend(pieces)  # the pull runs to its end
            assert b"".join(received) == BLOB
            wait_until(lambda: established_to(port) == 0, "the deleted rule's client was never closed", timeout=10)
            assert cache._clients.open_count() == 0
    finally:
        cache.close()


def test_another_process_closes_the_client_of_a_rule_deleted_or_changed_elsewhere(registry) -> None:
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    deleting, serving = PullThroughCache(registry, store), PullThroughCache(registry, store)
    routes = {"/v2/": answer(200), f"/v2/team/app/blobs/{SMALL_DIGEST}": answer(200, SMALL)}
    try:
        with hostile_server(routes) as url:
            port = int(url.rsplit(":", 1)[1])
            now = registry.ctx.clock()
            secret = store.create(ACCOUNT, "ecr-pullthroughcache/up", secret_value("one"), None, None)
            for prefix, arn in (("gone", None), ("changed", None), ("kept", secret.arn)):
                deleting.rules.create(Rule(ACCOUNT, prefix, url, None, "ROOT", arn, 1, now, now))
            for prefix in ("gone", "changed", "kept"):
                ref = RepoRef(ACCOUNT, f"{prefix}/team/app")
                rule = serving.rule_for(ref)
                assert rule is not None
                fetched = serving.blob(ref, rule, SMALL_DIGEST, allowed)
                assert b"".join(fetched.pieces) == SMALL  # type: ignore[union-attr]
            assert established_to(port) == 3 and serving._clients.open_count() == 3

            deleting.delete_rule(ACCOUNT, "gone")
            deleting.update_rule(ACCOUNT, "changed", secret.arn, now)
            assert serving.rule_for(RepoRef(ACCOUNT, "kept/team/app")) is not None  # its next look at the rules
            assert serving._clients.open_count() == 1
            wait_until(lambda: established_to(port) == 1, "the clients of the rules gone were never closed", timeout=10)
    finally:
        deleting.close()
        serving.close()
