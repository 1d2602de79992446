"""A pull-through cache rule deleted (or changed) takes its upstream client with it: the process that deletes it
closes the client at once, or when the pull still streaming through it ends (it is not cut off); another process
of the deployment does at its next rule lookup in the account. Before, it stayed open until the process ended."""

from __future__ import annotations

import hashlib
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


def test_a_pull_that_read_a_rule_before_it_changed_closes_its_client_when_it_ends(registry) -> None:
    """A pull holds the rule as it read it, and asks for the upstream client only once the rule was deleted or
    updated (in this process: delete_rule, update_rule; in another: after this one's next look at the rules), when
    there was no client to retire yet: the client made for it closes when that pull ends, not at the next change.
    A pull of the rule as it is now keeps its client for the next pulls."""
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    here, elsewhere = PullThroughCache(registry, store), PullThroughCache(registry, store)
    layers = {prefix: f"a layer pulled through {prefix}".encode() for prefix in ("deleted", "updated", "elsewhere")}
    layers["now"] = b"a layer pulled through the rule as it is now"
    routes = {"/v2/": answer(200)}
    for layer in layers.values():
        routes[f"/v2/team/app/blobs/sha256:{hashlib.sha256(layer).hexdigest()}"] = answer(200, layer)
    try:
        with hostile_server(routes) as url:
            port = int(url.rsplit(":", 1)[1])
            now = registry.ctx.clock()
            secret = store.create(ACCOUNT, "ecr-pullthroughcache/up", secret_value("one"), None, None)
            for prefix in ("deleted", "updated", "elsewhere", "looked"):
                here.rules.create(Rule(ACCOUNT, prefix, url, None, "ROOT", None, 1, now, now))

            def pull(cache: PullThroughCache, rule: Rule, layer: bytes) -> None:
                ref = RepoRef(ACCOUNT, f"{rule.prefix}/team/app")
                fetched = cache.blob(ref, rule, f"sha256:{hashlib.sha256(layer).hexdigest()}", allowed)
                assert b"".join(fetched.pieces) == layer  # type: ignore[union-attr]

            read = {prefix: here.rule_for(RepoRef(ACCOUNT, f"{prefix}/team/app")) for prefix in ("deleted", "updated")}
            stale = elsewhere.rule_for(RepoRef(ACCOUNT, "elsewhere/team/app"))
            assert stale is not None and None not in read.values()
            here.delete_rule(ACCOUNT, "deleted")
            updated = here.update_rule(ACCOUNT, "updated", secret.arn, now)
            here.delete_rule(ACCOUNT, "elsewhere")
            assert elsewhere.rule_for(RepoRef(ACCOUNT, "looked/team/app")) is not None  # its look at the rules
            for cache, rule in ((here, read["deleted"]), (here, read["updated"]), (elsewhere, stale)):
                pull(cache, rule, layers[rule.prefix])  # type: ignore[union-attr]
                assert cache._clients.open_count() == 0
            wait_until(lambda: established_to(port) == 0, "a client made for a changed rule stayed open", timeout=10)

            pull(here, updated, layers["now"])  # the rule as it is now: its client stays for the next pulls
            assert here._clients.open_count() == 1 and established_to(port) == 1
    finally:
        here.close()
        elsewhere.close()


def test_a_rule_made_again_with_the_version_of_a_deleted_one_keeps_its_client(registry) -> None:
    """A rule deleted and made again at the same time (a stopped clock: the same creation time and version) is
    current once the rules are read again: its pulls share the slot's client, not one each."""
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    cache = PullThroughCache(registry, store)
    layers = [f"layer {i}".encode() for i in range(2)]
    routes = {"/v2/": answer(200)}
    for layer in layers:
        routes[f"/v2/team/app/blobs/sha256:{hashlib.sha256(layer).hexdigest()}"] = answer(200, layer)
    try:
        with hostile_server(routes) as url:
            now = registry.ctx.clock()
            ref = RepoRef(ACCOUNT, "up/team/app")
            cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", None, 1, now, now))
            assert cache.rule_for(ref) is not None
            cache.delete_rule(ACCOUNT, "up")
            cache.rules.create(Rule(ACCOUNT, "up", url, None, "ROOT", None, 1, now, now))
            for layer in layers:
                rule = cache.rule_for(ref)
                assert rule is not None
                fetched = cache.blob(ref, rule, f"sha256:{hashlib.sha256(layer).hexdigest()}", allowed)
                assert b"".join(fetched.pieces) == layer  # type: ignore[union-attr]
                assert cache._clients.open_count() == 1
    finally:
        cache.close()
