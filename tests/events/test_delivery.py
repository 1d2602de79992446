"""Webhook delivery (both databases): a real HTTP receiver on loopback gets every event as documented, in order,
signed; outages are retried with backoff on the domain clock and end in dead letters; nothing is lost."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa

from soko.events import Delivery
from soko.events.targets import KIND
from soko.jobs import JobRunner
from soko.meta.schema import event_outbox, event_targets, jobs
from soko.registry.models import RepoRef
from tests.domain import old_and_new_with_an_expiry_rule, push_image
from tests.events.receiver import verify

ACCOUNT = "000000000000"
SECRET = "a-shared-secret-of-some-length"


def outbox_rows(registry) -> list:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(event_outbox).order_by(event_outbox.c.id)).all()


def test_the_receiver_gets_each_event_exactly_as_the_outbox_holds_it_signed_and_in_order(
    registry, targets, delivery, receiver, clock
) -> None:
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    ref = RepoRef(ACCOUNT, "events/app")
    digest = push_image(registry, ref, "v1", [b"layer one"])
    registry.manifests.put(ref, "v2", registry.manifests.get(ref, "v1").payload, None)  # a second tag: PUSH
    registry.manifests.delete(ref, "v1")  # the tag: DELETE
    target_id = _target_id(registry, "hook")
    assert delivery.drain(target_id) == len(outbox_rows(registry)) == 4  # CREATE of the repository, PUSH, PUSH, DELETE
    assert delivery.drain(target_id) == 0

    rows = outbox_rows(registry)
    assert [r["body"] for r in receiver.requests] == [row.body.encode() for row in rows]  # byte for byte
    kinds = [
        (e["detail-type"], e["detail"].get("action-type"), e["detail"].get("image-tag")) for e in receiver.events()
    ]
    assert kinds == [
        ("Soko Repository Action", "CREATE", None),
        ("ECR Image Action", "PUSH", "v1"),
        ("ECR Image Action", "PUSH", "v2"),
        ("ECR Image Action", "DELETE", "v1"),
    ]
    push = receiver.events()[1]
    assert push["source"] == "aws.ecr" and push["account"] == ACCOUNT and push["region"] == "us-east-1"
    assert push["version"] == "0" and push["resources"] == [] and push["time"] == "2027-01-15T08:00:00Z"
    assert push["detail"] == {
        "result": "SUCCESS",
        "repository-name": "events/app",
        "image-digest": digest,
        "action-type": "PUSH",
        "image-tag": "v1",
        "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
        "artifact-media-type": "application/vnd.oci.image.config.v1+json",
    }
    for request, row in zip(receiver.requests, rows, strict=True):
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert request["path"] == "/hook"
        assert headers["content-type"] == "application/json"
        assert headers["x-soko-event-id"] == row.event_id == json.loads(request["body"])["id"]
        assert headers["x-soko-delivery-attempt"] == "1"
        assert verify(request, SECRET)
        assert not verify(request, "another-secret-entirely")
    status = targets.status(ACCOUNT)[0]
    assert status.delivered == 4 and status.backlog == 0 and status.failures == 0


def test_a_pattern_selects_events_and_other_accounts_events_never_go_out(
    registry, targets, delivery, receiver, clock
) -> None:
    pattern = {"source": ["aws.ecr"], "detail": {"action-type": ["PUSH"], "image-tag": [{"prefix": "release-"}]}}
    targets.create(ACCOUNT, "releases", receiver.url, secret=SECRET, pattern=json.dumps(pattern))
    ref = RepoRef(ACCOUNT, "events/app")
    push_image(registry, ref, "dev-1", [b"a"])
    push_image(registry, ref, "release-1", [b"b"])
    push_image(registry, RepoRef("111111111111", "events/app"), "release-9", [b"c"])
    assert delivery.drain(_target_id(registry, "releases")) == 1
    assert [e["detail"]["image-tag"] for e in receiver.events()] == ["release-1"]
    assert targets.status(ACCOUNT)[0].backlog == 0  # the skipped ones are passed too


def test_a_receiver_down_for_a_while_gets_everything_in_order_after_backoff(
    registry, targets, delivery, receiver, clock
) -> None:
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET, max_attempts=10)
    target_id = _target_id(registry, "hook")
    ref = RepoRef(ACCOUNT, "events/app")
    receiver.stop()  # connection refused
    for i in range(3):
        push_image(registry, ref, f"v{i}", [f"layer {i}".encode()])
    waits = []
    for attempt in range(1, 5):
        assert delivery.drain(target_id) == 0
        status = targets.status(ACCOUNT)[0]
        assert status.attempts == attempt and status.last_error and "refused" in status.last_error.lower()
        waits.append(status.next_attempt_at - clock.now)
        assert delivery.drain(target_id) == 0  # backing off: no attempt before its time
        assert targets.status(ACCOUNT)[0].attempts == attempt
        clock.now = status.next_attempt_at
    assert waits == [2.0, 4.0, 8.0, 16.0]  # event_retry_base, doubling
    receiver.status = 503  # up, but failing: still a failure
    receiver.start()
    assert delivery.drain(target_id) == 0
    assert len(receiver.requests) == 1 and receiver.requests[0]["headers"]["X-Soko-Delivery-Attempt"] == "5"
    clock.now += 32.0
    receiver.status = 200
    assert delivery.drain(target_id) == 4  # CREATE and three PUSHes
    events = receiver.unique_events()
    assert [e["detail"].get("image-tag") for e in events] == [None, "v0", "v1", "v2"]
    assert [e["id"] for e in events] == [r.event_id for r in outbox_rows(registry)]
    status = targets.status(ACCOUNT)[0]
    assert status.attempts == 0 and status.next_attempt_at is None and status.delivered == 4


def test_after_max_attempts_an_event_is_dead_lettered_and_redeliver_sends_it_again(
    registry, targets, delivery, receiver, clock
) -> None:
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET, max_attempts=2)
    target_id = _target_id(registry, "hook")
    receiver.status = 500
    registry.repositories.create(RepoRef(ACCOUNT, "events/one"))
    delivery.drain(target_id)
    clock.now += 10
    delivery.drain(target_id)  # the second failure: dead letter
    (letter,) = targets.dead_letters(ACCOUNT)
    assert letter["status"] == "dead" and letter["attempts"] == 2 and "HTTP 500" in letter["last_error"]
    status = targets.status(ACCOUNT)[0]
    assert status.dead == 1 and status.backlog == 0 and status.failures == 2
    receiver.status = 200
    registry.repositories.create(RepoRef(ACCOUNT, "events/two"))
    assert delivery.drain(target_id) == 1  # the line moved on past the dead letter
    assert targets.redeliver(ACCOUNT, "hook") == 1
    assert delivery.drain(target_id) == 1
    assert targets.dead_letters(ACCOUNT) == []
    assert [e["detail"]["repository-name"] for e in receiver.unique_events()] == ["events/one", "events/two"]
    assert receiver.requests[-1]["headers"]["X-Soko-Event-Id"] == letter["event_id"]


def test_an_event_is_delivered_even_if_no_runner_ran_when_it_was_committed(registry, targets, receiver, clock) -> None:
    """The server was down between commit and delivery: the next runner delivers it (the outbox kept it)."""
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    registry.repositories.create(RepoRef(ACCOUNT, "events/later"))
    runner = JobRunner(registry.ctx, [Delivery(registry.ctx, linger=0.0).job()], tick=0.05)
    runner.start()
    try:
        receiver.wait_for(1)
    finally:
        runner.stop()
    assert [e["detail"]["repository-name"] for e in receiver.events()] == ["events/later"]


def test_two_runners_at_once_deliver_each_event_once(registry, targets, receiver, clock) -> None:
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    for i in range(20):
        registry.repositories.create(RepoRef(ACCOUNT, f"events/r{i}"))
    runners = [
        JobRunner(registry.ctx, [Delivery(registry.ctx, linger=0.2).job()], tick=0.02, owner=f"runner-{n}")
        for n in range(2)
    ]
    for runner in runners:
        runner.start()
    try:
        receiver.wait_for(20)
        for i in range(20, 30):  # more while both run
            registry.repositories.create(RepoRef(ACCOUNT, f"events/r{i}"))
        receiver.wait_for(30)
    finally:
        for runner in runners:
            runner.stop()
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) == len(set(ids)) == 30
    assert [e["detail"]["repository-name"] for e in receiver.events()] == [f"events/r{i}" for i in range(30)]


def test_a_runner_killed_mid_delivery_leaves_the_event_to_the_next_which_sends_the_same_id(
    registry, targets, receiver, clock
) -> None:
    """The first runner's POST reaches the receiver, then its process dies (its lease stays held and lapses);
    the next runner takes the job over and sends the event again with the same id: the receiver dedupes."""
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    registry.repositories.create(RepoRef(ACCOUNT, "events/crash"))
    target_id = _target_id(registry, "hook")
    held = receiver.hold = threading.Event()
    first = Delivery(registry.ctx, linger=0.0)
    crashed = threading.Thread(target=first.drain, args=(target_id,), daemon=True)
    with registry.ctx.write() as conn:  # the dead process's lease, as it held it
        conn.execute(sa.update(jobs).where(jobs.c.kind == KIND).values(owner="elsewhere:1:dead", lease_until=1.0))
    crashed.start()
    receiver.wait_for(1)
    # the process is gone before it could record the delivery: what it would have written never is
    runner = JobRunner(registry.ctx, [Delivery(registry.ctx, linger=0.0).job()], tick=0.05)
    receiver.hold = None
    runner.start()
    try:
        receiver.wait_for(2)
    finally:
        runner.stop()
        held.set()  # the dead process's connection: answered now, and what it records finds the target moved on
        crashed.join(10)
    assert targets.status(ACCOUNT)[0].delivered == 1
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert len(receiver.unique_events()) == 1
    assert receiver.unique_events()[0]["detail"]["repository-name"] == "events/crash"


def test_a_lingering_run_is_woken_by_each_commit_and_sends_them_on_one_connection(
    registry, targets, receiver, clock
) -> None:
    """Delivery waits on the events generation, not a timer: with the fallback poll at a minute, each commit is
    still delivered at once; the run keeps one connection to the receiver for all of them."""
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    runner = JobRunner(registry.ctx, [Delivery(registry.ctx, linger=60.0, poll=60.0).job()], tick=0.05)
    runner.start()
    try:
        for i in range(3):
            registry.repositories.create(RepoRef(ACCOUNT, f"events/woken-{i}"))
            receiver.wait_for(i + 1, timeout=15)  # a timer-driven run would take the 60 s poll
    finally:
        runner.stop()
    assert [e["detail"]["repository-name"] for e in receiver.events()] == [f"events/woken-{i}" for i in range(3)]
    assert len({r["client_port"] for r in receiver.requests}) == 1


def test_a_lifecycle_expiry_is_delivered_as_its_delete_and_its_expiry_event(
    registry, targets, delivery, receiver, clock
) -> None:
    from soko.registry.lifecycle_runner import LifecycleRunner

    ref = RepoRef(ACCOUNT, "events/life")
    old = old_and_new_with_an_expiry_rule(registry, clock, ref, 3)
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)  # from here on
    LifecycleRunner(registry).run()
    assert delivery.drain(_target_id(registry, "hook")) == 2
    assert [r["body"] for r in receiver.requests] == [row.body.encode() for row in outbox_rows(registry)[-2:]]
    delete, expiry = receiver.events()  # the expiry's detail is pinned in tests/registry/test_unit_of_work.py
    assert (delete["source"], delete["detail-type"]) == ("aws.ecr", "ECR Image Action")
    assert delete["detail"] == {
        "result": "SUCCESS",
        "repository-name": "events/life",
        "image-digest": old,
        "action-type": "DELETE",
        "image-tag": "v1",
    }
    assert (expiry["source"], expiry["detail-type"], expiry["detail"]["rule-priority"]) == (
        "soko.registry",
        "Soko Lifecycle Expiry",
        3,
    )
    assert expiry["resources"] == [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/events/life"]


def test_events_enabled_off_stops_delivery_and_the_target_catches_up_after(registry, targets, receiver, clock) -> None:
    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    registry.settings.events_enabled = False
    assert Delivery(registry.ctx).job().interval == 0  # the job kind is off
    registry.repositories.create(RepoRef(ACCOUNT, "events/quiet"))  # the outbox still has it (replication reads it)
    registry.settings.events_enabled = True
    assert Delivery(registry.ctx, linger=0.0).drain(_target_id(registry, "hook")) == 1


def _target_id(registry, name: str) -> int:
    with registry.ctx.db.read() as conn:
        return int(conn.execute(sa.select(event_targets.c.id).where(event_targets.c.name == name)).scalar_one())


@pytest.fixture(autouse=True)
def _quiet_clock(clock) -> None:
    """Every test here runs on the settable clock."""


def test_a_push_that_fails_sends_nothing(registry, targets, delivery, receiver, clock) -> None:
    from soko.errors import ManifestBlobUnknown

    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    ref = RepoRef(ACCOUNT, "events/app")
    registry.repositories.create(ref)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [],
    }
    with pytest.raises(ManifestBlobUnknown):
        registry.manifests.put(ref, "v1", json.dumps(manifest).encode(), None)  # rolled back
    assert delivery.drain(_target_id(registry, "hook")) == 1
    assert [e["detail-type"] for e in receiver.events()] == ["Soko Repository Action"]


def test_the_servers_own_runner_delivers_and_metrics_show_it(targets, server, registry, receiver) -> None:
    import httpx

    targets.create(ACCOUNT, "hook", receiver.url, secret=SECRET)
    registry.repositories.create(RepoRef(ACCOUNT, "events/served"))
    receiver.wait_for(1)
    for _ in range(100):  # the delivery is recorded right after the receiver answered
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        if 'soko_event_deliveries_total{account="000000000000",target="hook"} 1.0' in text:
            break
        threading.Event().wait(0.05)
    assert 'soko_event_deliveries_total{account="000000000000",target="hook"} 1.0' in text
    assert 'soko_event_backlog{account="000000000000",target="hook"} 0.0' in text
    assert 'soko_event_dead_letters{account="000000000000",target="hook"} 0.0' in text
    assert "soko_event_delivery_lag_seconds" in text and "soko_event_last_delivery_lag_seconds" in text
    assert SECRET not in text


def test_tail_follows_events_live(registry, settings) -> None:
    import os
    import subprocess
    import sys

    registry.repositories.create(RepoRef(ACCOUNT, "events/before"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
    args = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    last = subprocess.run(
        [sys.executable, "-m", "soko", "events", "tail", "--last", "1", "--count", "1", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert json.loads(last.stdout)["detail"]["repository-name"] == "events/before"
    after = outbox_rows(registry)[-1].id
    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "soko",
            "events",
            "tail",
            "--count",
            "2",
            "--after",
            str(after),
            "--pattern",
            '{"detail": {"repository-name": [{"prefix": "events/live"}]}}',
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for name in ("events/live-1", "events/other", "events/live-2"):
            registry.repositories.create(RepoRef(ACCOUNT, name))
        out, _ = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert [json.loads(line)["detail"]["repository-name"] for line in out.splitlines()] == [
        "events/live-1",
        "events/live-2",
    ]
