"""Console test helpers: a seeded registry, restricted users (through the real IAM API), and signing in."""

from __future__ import annotations

import json
import re
import time

import httpx

from soko.registry.models import RepoRef
from tests.domain import push_blob

XSS = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
# An identity policy that lets a user list and describe repositories, and nothing else.
LIST_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": "*"}],
}


def push_rich_image(registry, ref: RepoRef, tag: str, *, label: str = "plain", seed: str = "") -> str:
    """An image with a config people look at (platform, env, entrypoint, labels, history) and two layers."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "config": {
                "Env": ["PATH=/usr/bin", f"GREETING={label}"],
                "Entrypoint": ["/bin/app", label],
                "Cmd": ["--serve"],
                "WorkingDir": "/srv",
                "Labels": {"org.opencontainers.image.title": label},
            },
            "history": [{"created_by": f"RUN echo {label}"}, {"created_by": "ENV X=1", "empty_layer": True}],
            "seed": seed,
        }
    ).encode()
    config_digest = push_blob(registry, ref, config)
    layers = [f"layer one {seed}".encode(), f"layer two {seed}".encode()]
    descriptors = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": push_blob(registry, ref, data),
            "size": len(data),
        }
        for data in layers
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    return registry.manifests.put(ref, tag, manifest, None).digest


def make_user(iam, name: str, policy: dict | None) -> tuple[str, str]:
    """An IAM user with an inline policy (none: no permissions at all) and an access key: (id, secret)."""
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="console", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def hidden_csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


def sign_in(client: httpx.Client, key_id: str, secret: str, session_token: str = "") -> httpx.Response:
    form = client.get("/console/signin")
    assert form.status_code == 200
    return client.post(
        "/console/signin",
        data={
            "csrf": hidden_csrf(form.text),
            "access_key_id": key_id,
            "secret_access_key": secret,
            "session_token": session_token,
        },
    )


def wait_for(check, timeout: float = 30.0):
    """Poll until ``check()`` is truthy (webhook delivery runs on the server's job runner) and return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "the server's background job did not get there"
            return value
        time.sleep(0.1)
