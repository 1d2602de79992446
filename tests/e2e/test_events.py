"""Events end to end: a real ``soko serve`` process, a webhook target added with ``soko events add``, images pushed
with skopeo, and a real receiver on loopback. The PUSH events carry what ECR's do; a server killed (SIGKILL) after
sending an event but before recording it sends the same event again, with the same id, once it is back, and then
the one committed after it that it never sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.events.receiver import Receiver, verify

from .layout import OCI_MANIFEST, ImageRef
from .servers import E2E_TARGET, RegistryServer, start_soko
from .skopeo import Skopeo
from .test_skopeo_roundtrip import docker_ref, push

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-registry"),
    pytest.mark.skipif(E2E_TARGET != "soko", reason="Soko's events"),
]

SECRET = "e2e-webhook-secret-0123456789"
ENV = {"SOKO_EVENT_TARGET_ALLOW_CIDRS": "127.0.0.1/32"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    if r.hold is not None:
        r.hold.set()
    r.stop()


def soko_events(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")} | ENV
    return subprocess.run(
        [sys.executable, "-m", "soko", "events", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )


def pushes(receiver: Receiver) -> list[dict]:
    return [e for e in receiver.unique_events() if e["detail-type"] == "ECR Image Action"]


def test_skopeo_pushes_produce_push_events_and_a_killed_server_sends_them_again(
    tmp_path: Path, receiver: Receiver, images: dict[str, ImageRef]
) -> None:
    data_dir = tmp_path / "soko"
    server: RegistryServer = start_soko(data_dir, env=ENV)
    try:
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET)
        soko_events(
            data_dir,
            "add",
            "hook",
            "--url",
            receiver.url,
            "--secret-file",
            str(secret_file),
            "--pattern",
            json.dumps({"source": ["aws.ecr"]}),
        )
        skopeo = Skopeo.create(tmp_path / "skopeo-home")
        skopeo.add_registry(server.host, server.credentials)
        image = images["single"]
        push(skopeo, image, docker_ref(server, "e2e/events", "v1"))
        receiver.wait_for(1)
        (event,) = pushes(receiver)
        assert event["source"] == "aws.ecr" and event["account"] == "000000000000" and event["resources"] == []
        assert event["detail"] == {
            "result": "SUCCESS",
            "repository-name": "e2e/events",
            "image-digest": image.top_digest(),
            "action-type": "PUSH",
            "image-tag": "v1",
            "manifest-media-type": OCI_MANIFEST,  # umoci leaves it out of the manifest; skopeo sends it
            "artifact-media-type": json.loads(image.top_manifest())["config"]["mediaType"],
        }
        assert verify(receiver.requests[0], SECRET)

        # The next event reaches the receiver, which holds its answer; one more is committed behind it (never
        # sent: order), and the server dies before recording either.
        receiver.hold = held = threading.Event()
        push(skopeo, image, docker_ref(server, "e2e/events", "v2"))
        receiver.wait_for(2)
        push(skopeo, image, docker_ref(server, "e2e/events", "v3"))
        server.kill()
    finally:
        server.kill()
    held.set()
    receiver.hold = None
    server = start_soko(data_dir, env=ENV)
    try:
        # what the dead server had not recorded comes again (the held v2, and v1 if its write was still pending)
        receiver.wait_until(lambda r: len(pushes(r)) == 3, timeout=60)
        held_body = receiver.requests[1]["body"]
        again = [r for r in receiver.requests[2:] if r["body"] == held_body]  # the same event, the same id
        assert again and again[0]["headers"]["X-Soko-Event-Id"] == json.loads(held_body)["id"]
        assert [e["detail"]["image-tag"] for e in pushes(receiver)] == ["v1", "v2", "v3"]  # deduped, in order
        status = json.loads(soko_events(data_dir, "targets", "--format", "json").stdout)[0]
        assert status["backlog"] == 0 and status["dead"] == 0
    finally:
        server.stop()
