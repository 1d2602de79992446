"""Lifecycle policies over the ECR API: Put/Get/DeleteLifecyclePolicy with ECR's validation, Terraform's
aws_ecr_lifecycle_policy call sequence, and the asynchronous preview (one per repository, the waiter, the
paginator, filters) evaluated on images pushed for real."""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError, WaiterError

from tests.ecr.test_images import error_of, image_parts, make_repo, put

ACCOUNT = "000000000000"
KEEP_TWO_TAGGED = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "expire untagged",
                "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                              "countNumber": 1},
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": "keep two release images",
                "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan",
                              "countNumber": 2},
                "action": {"type": "expire"},
            },
        ]
    }
)  # fmt: skip
FAST = {"Delay": 1, "MaxAttempts": 20}


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def test_put_get_delete(ecr, server):
    make_repo(server)
    out = ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    assert (out["registryId"], out["repositoryName"], out["lifecyclePolicyText"]) == (ACCOUNT, "app", KEEP_TWO_TAGGED)
    got = ecr.get_lifecycle_policy(repositoryName="app")
    assert got["lifecyclePolicyText"] == KEEP_TWO_TAGGED
    assert got["lastEvaluatedAt"].timestamp() == 0  # ECR answers it always: the epoch until first evaluated
    deleted = ecr.delete_lifecycle_policy(repositoryName="app")
    assert deleted["lifecyclePolicyText"] == KEEP_TWO_TAGGED
    assert deleted["lastEvaluatedAt"].timestamp() == 0
    for call in (ecr.get_lifecycle_policy, ecr.delete_lifecycle_policy):
        with pytest.raises(ClientError) as exc:
            call(repositoryName="app")
        code, message = error_of(exc)
        assert code == "LifecyclePolicyNotFoundException"
        assert message == (
            f"Lifecycle policy does not exist for the repository with name 'app' in the registry with id '{ACCOUNT}'"
        )
    with pytest.raises(ClientError) as exc:
        ecr.put_lifecycle_policy(repositoryName="missing", lifecyclePolicyText=KEEP_TWO_TAGGED)
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_last_evaluated_at_is_returned(ecr, server):
    import sqlalchemy as sa

    from soko.meta.schema import lifecycle_policies

    make_repo(server)
    ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    with server.registry.ctx.write() as conn:  # what the lifecycle runner records
        conn.execute(sa.update(lifecycle_policies).values(last_evaluated_at=1_700_000_000.0))
    assert ecr.get_lifecycle_policy(repositoryName="app")["lastEvaluatedAt"].timestamp() == 1_700_000_000.0
    assert ecr.delete_lifecycle_policy(repositoryName="app")["lastEvaluatedAt"].timestamp() == 1_700_000_000.0


@pytest.mark.parametrize(
    ("policy", "detail"),
    [
        ({"rules": []}, "array is too short"),
        ({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                                       "countNumber": 1}, "action": {"type": "expire"}}],
          "extra": "key-padding-padding-padding-padding"}, ""),
        ({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan",
                                                       "countNumber": 1}, "action": {"type": "expire"}}]}, ""),
    ],
)  # fmt: skip
def test_invalid_policies_are_refused_with_ecrs_message(ecr, server, policy, detail):
    make_repo(server)
    text = json.dumps(policy).ljust(100)
    with pytest.raises(ClientError) as exc:
        ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=text)
    code, message = error_of(exc)
    assert code == "InvalidParameterException"
    prefix = "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "
    assert message.startswith(prefix + "'Lifecycle policy validation failure: ")
    assert detail in message


def test_transition_rules_are_stored_now_that_archive_exists(ecr, server):
    # The runner archives what they select (tests/ecr/test_archive.py); PutLifecyclePolicy stores them verbatim.
    make_repo(server)
    archive = json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days",
                                  "countNumber": 30},
                    "action": {"type": "transition", "targetStorageClass": "archive"},
                }
            ]
        }
    )  # fmt: skip
    ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=archive)
    assert ecr.get_lifecycle_policy(repositoryName="app")["lifecyclePolicyText"] == archive


def test_policy_text_length_limits(ecr, server):
    from tests.ecr.test_images import raw_json

    make_repo(server)
    for text in ("{}", "x" * 30_721):
        status, body = raw_json(server, "PutLifecyclePolicy", {"repositoryName": "app", "lifecyclePolicyText": text})
        assert status == 400 and body["__type"] == "InvalidParameterException", body
    status, body = raw_json(server, "PutLifecyclePolicy", {"repositoryName": "app"})
    assert status == 400 and body["__type"] == "InvalidParameterException"
    status, body = raw_json(server, "StartLifecyclePolicyPreview", {"repositoryName": "app", "lifecyclePolicyText": 7})
    assert status == 400 and body["__type"] in ("SerializationException", "InvalidParameterException")


def test_terraform_aws_ecr_lifecycle_policy_sequence(ecr, server):
    """Create → read (semantic compare) → replace → delete → delete again (NotFound ignored) → read NotFound."""
    make_repo(server)
    with pytest.raises(ClientError) as exc:  # the provider's read-after-create retry loop tolerates NotFound
        ecr.get_lifecycle_policy(repositoryName="app")
    assert error_of(exc)[0] == "LifecyclePolicyNotFoundException"
    put_out = ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    read = ecr.get_lifecycle_policy(repositoryName="app")
    assert read["repositoryName"] == put_out["repositoryName"] == "app"
    assert json.loads(read["lifecyclePolicyText"]) == json.loads(KEEP_TWO_TAGGED)
    replaced = json.loads(KEEP_TWO_TAGGED)
    replaced["rules"][1]["selection"]["countNumber"] = 5
    ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=json.dumps(replaced))
    assert json.loads(ecr.get_lifecycle_policy(repositoryName="app")["lifecyclePolicyText"]) == replaced
    ecr.delete_lifecycle_policy(repositoryName="app")
    with pytest.raises(ClientError) as exc:
        ecr.delete_lifecycle_policy(repositoryName="app")
    assert error_of(exc)[0] == "LifecyclePolicyNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.delete_lifecycle_policy(repositoryName="gone")
    assert error_of(exc)[0] == "RepositoryNotFoundException"


@pytest.fixture
def images(ecr, client, server):
    """v1..v4 tagged (oldest first), two untagged pushed "2 days ago"."""
    import sqlalchemy as sa

    from soko.meta.schema import manifests

    make_repo(server)
    tagged = [put(ecr, "app", image_parts(client, "app", f"t{i}"), f"v{i}") for i in range(1, 5)]
    untagged = [put(ecr, "app", image_parts(client, "app", f"u{i}")) for i in range(2)]
    now = time.time()
    with server.registry.ctx.write(invalidates=True) as conn:
        for age, digest in enumerate(reversed(tagged)):
            conn.execute(sa.update(manifests).where(manifests.c.digest == digest).values(pushed_at=now - age * 60))
        for digest in untagged:
            conn.execute(sa.update(manifests).where(manifests.c.digest == digest).values(pushed_at=now - 2 * 86400))
    return tagged, untagged


def test_preview_end_to_end(ecr, images):
    tagged, untagged = images
    with pytest.raises(ClientError) as exc:
        ecr.get_lifecycle_policy_preview(repositoryName="app")
    assert error_of(exc)[0] == "LifecyclePolicyPreviewNotFoundException"
    with pytest.raises(ClientError) as exc:  # no text and no stored policy
        ecr.start_lifecycle_policy_preview(repositoryName="app")
    assert error_of(exc)[0] == "LifecyclePolicyNotFoundException"
    started = ecr.start_lifecycle_policy_preview(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    assert started["status"] == "IN_PROGRESS" and started["lifecyclePolicyText"] == KEEP_TWO_TAGGED
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)
    out = ecr.get_lifecycle_policy_preview(repositoryName="app")
    assert out["status"] == "COMPLETE"
    assert out["summary"] == {"expiringImageTotalCount": 4}
    results = {r["imageDigest"]: r for r in out["previewResults"]}
    assert set(results) == {*untagged, tagged[0], tagged[1]}
    assert all(results[d]["appliedRulePriority"] == 1 and results[d]["imageTags"] == [] for d in untagged)
    assert results[tagged[0]]["imageTags"] == ["v1"] and results[tagged[0]]["appliedRulePriority"] == 2
    assert all(r["action"] == {"type": "EXPIRE"} and r["storageClass"] == "STANDARD" for r in results.values())
    # Filters, imageIds, and the paginator.
    only_tagged = ecr.get_lifecycle_policy_preview(repositoryName="app", filter={"tagStatus": "TAGGED"})
    assert {r["imageDigest"] for r in only_tagged["previewResults"]} == {tagged[0], tagged[1]}
    one = ecr.get_lifecycle_policy_preview(repositoryName="app", imageIds=[{"imageTag": "v2"}])
    assert [r["imageDigest"] for r in one["previewResults"]] == [tagged[1]]
    pages = list(
        ecr.get_paginator("get_lifecycle_policy_preview").paginate(
            repositoryName="app", PaginationConfig={"PageSize": 3}
        )
    )
    assert [len(p["previewResults"]) for p in pages] == [3, 1]
    assert all(p["status"] == "COMPLETE" for p in pages)
    # The preview deleted nothing.
    assert len(ecr.describe_images(repositoryName="app")["imageDetails"]) == 6


def test_preview_uses_stored_policy_and_one_at_a_time(ecr, images, server, monkeypatch):
    from soko.registry import lifecycle_store

    ecr.put_lifecycle_policy(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    gate = threading.Event()
    original = lifecycle_store.preview

    def slow_preview(*args, **kwargs):
        gate.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(lifecycle_store, "preview", slow_preview)
    started = ecr.start_lifecycle_policy_preview(repositoryName="app")
    assert started["lifecyclePolicyText"] == KEEP_TWO_TAGGED and started["status"] == "IN_PROGRESS"
    assert ecr.get_lifecycle_policy_preview(repositoryName="app")["status"] == "IN_PROGRESS"
    with pytest.raises(ClientError) as exc:
        ecr.start_lifecycle_policy_preview(repositoryName="app")
    assert error_of(exc)[0] == "LifecyclePolicyPreviewInProgressException"
    gate.set()
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)
    assert ecr.get_lifecycle_policy_preview(repositoryName="app")["summary"]["expiringImageTotalCount"] == 4
    # Once complete, a new preview may start (and replaces the old one).
    ecr.start_lifecycle_policy_preview(repositoryName="app")
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)


def test_preview_failure_is_visible_and_waiter_stops(ecr, images, monkeypatch):
    from soko.registry import lifecycle_store

    def broken(*args, **kwargs):
        raise RuntimeError("evaluator exploded")

    monkeypatch.setattr(lifecycle_store, "preview", broken)
    ecr.start_lifecycle_policy_preview(repositoryName="app", lifecyclePolicyText=KEEP_TWO_TAGGED)
    with pytest.raises(WaiterError) as exc:
        ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)
    assert "FAILED" in str(exc.value) or "failure" in str(exc.value).lower()


def test_preview_waiter_not_found_path(ecr, server):
    make_repo(server)
    started = time.monotonic()
    with pytest.raises(WaiterError) as exc:
        ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)
    assert "LifecyclePolicyPreviewNotFoundException" in str(exc.value)
    assert time.monotonic() - started < 5


def test_preview_index_children_and_referrers_follow(ecr, client, server):
    """An index's children are never expired before the index; a referrer follows its subject."""
    from tests.ecr.test_images import index_of
    from tests.oci.helpers import DOCKER_MANIFEST

    make_repo(server)
    child = image_parts(client, "app", "child")
    c = put(ecr, "app", child)
    put(ecr, "app", index_of((child, DOCKER_MANIFEST)), "list")
    expire_untagged = json.dumps(
        {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                                      "countNumber": 1}, "action": {"type": "expire"}}]}
    )  # fmt: skip
    lone = put(ecr, "app", image_parts(client, "app", "lone"))
    ecr.start_lifecycle_policy_preview(repositoryName="app", lifecyclePolicyText=expire_untagged)
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="app", WaiterConfig=FAST)
    expiring = {r["imageDigest"] for r in ecr.get_lifecycle_policy_preview(repositoryName="app")["previewResults"]}
    assert c not in expiring
    assert expiring <= {lone}


def test_lifecycle_via_aws_cli(aws_cli, server):
    make_repo(server)
    code, out, err = aws_cli(
        "ecr", "put-lifecycle-policy", "--repository-name", "app", "--lifecycle-policy-text", KEEP_TWO_TAGGED
    )
    assert code == 0, err
    code, out, err = aws_cli("ecr", "start-lifecycle-policy-preview", "--repository-name", "app")
    assert code == 0, err
    assert out["status"] == "IN_PROGRESS"
    code, out, err = aws_cli("ecr", "wait", "lifecycle-policy-preview-complete", "--repository-name", "app")
    assert code == 0, err
    code, out, err = aws_cli("ecr", "get-lifecycle-policy-preview", "--repository-name", "app")
    assert code == 0, err
    assert out["status"] == "COMPLETE" and out["summary"]["expiringImageTotalCount"] == 0
    code, out, err = aws_cli("ecr", "delete-lifecycle-policy", "--repository-name", "app")
    assert code == 0, err
    code, out, err = aws_cli("ecr", "get-lifecycle-policy", "--repository-name", "app")
    assert code != 0 and "LifecyclePolicyNotFoundException" in err
