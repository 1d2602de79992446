"""Replays of the call sequences terraform-provider-aws makes for aws_kms_key and aws_kms_alias (create with its
propagation waits, read, update, destroy with the waits its delete loops make)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "000000000000"


@pytest.fixture
def kms(aws):
    return aws("kms")


def read_key(kms, key_id: str) -> dict:
    """resourceKeyRead: DescribeKey, GetKeyPolicy, GetKeyRotationStatus, ListResourceTags."""
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    policy = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    rotation = kms.get_key_rotation_status(KeyId=key_id)
    tags = kms.get_paginator("list_resource_tags").paginate(KeyId=key_id).build_full_result()["Tags"]
    return {"meta": meta, "policy": json.loads(policy), "rotation": rotation, "tags": tags}


def find_alias(kms, name: str) -> dict | None:
    """FindAliasByName: ListAliases pages until the name turns up."""
    for page in kms.get_paginator("list_aliases").paginate():
        for alias in page["Aliases"]:
            if alias["AliasName"] == name:
                return alias
    return None


def test_aws_kms_key_and_alias(kms) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "tf",
            "Statement": [
                {
                    "Sid": "root",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    # Create: what the provider sends (multi_region = false and the key spec are always sent)
    meta = kms.create_key(
        BypassPolicyLockoutSafetyCheck=False,
        CustomerMasterKeySpec="SYMMETRIC_DEFAULT",
        Description="tf key",
        KeyUsage="ENCRYPT_DECRYPT",
        MultiRegion=False,
        Policy=policy,
        Tags=[{"TagKey": "Name", "TagValue": "tf"}],
    )["KeyMetadata"]
    key_id = meta["KeyId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"  # waitKeyDescriptionPropagated
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=365)  # enable_key_rotation = true
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"]  # waitKeyRotationEnabledPropagated
    state = read_key(kms, key_id)
    assert state["policy"]["Id"] == "tf" and state["tags"] == [{"TagKey": "Name", "TagValue": "tf"}]
    assert state["meta"]["Description"] == "tf key" and state["rotation"]["RotationPeriodInDays"] == 365

    # aws_kms_alias: create, wait until found, read (DescribeKey of the target for target_key_arn)
    kms.create_alias(AliasName="alias/tf", TargetKeyId=key_id)
    alias = find_alias(kms, "alias/tf")
    assert alias is not None and alias["TargetKeyId"] == key_id
    assert kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"] == meta["Arn"]

    # Update: description, policy, rotation off, disable, tags
    kms.update_key_description(KeyId=key_id, Description="tf key v2")
    kms.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=policy.replace('"tf"', '"tf2"'), BypassPolicyLockoutSafetyCheck=False
    )
    kms.disable_key_rotation(KeyId=key_id)
    kms.disable_key(KeyId=key_id)
    kms.untag_resource(KeyId=key_id, TagKeys=["Name"])
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "Team", "TagValue": "core"}])
    state = read_key(kms, key_id)
    assert state["meta"]["Description"] == "tf key v2" and state["policy"]["Id"] == "tf2"
    assert not state["rotation"]["KeyRotationEnabled"] and not state["meta"]["Enabled"]
    assert state["tags"] == [{"TagKey": "Team", "TagValue": "core"}]
    kms.enable_key(KeyId=key_id)

    # aws_kms_alias update (retarget) and destroy
    second = kms.create_key(Description="second", MultiRegion=False)["KeyMetadata"]["KeyId"]
    kms.update_alias(AliasName="alias/tf", TargetKeyId=second)
    assert find_alias(kms, "alias/tf")["TargetKeyId"] == second
    kms.delete_alias(AliasName="alias/tf")
    assert find_alias(kms, "alias/tf") is None

    # Destroy: ScheduleKeyDeletion(deletion_window_in_days), then wait for PendingDeletion
    out = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion"
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    # a second destroy (e.g. after a failed apply) sees the key already pending: the provider treats this as done
    with pytest.raises(ClientError) as exc:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert exc.value.response["Error"]["Code"] == "KMSInvalidStateException"


def test_paginated_listing_as_the_provider_reads_it(kms) -> None:
    ids = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    listed = kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}).build_full_result()["Keys"]
    assert {k["KeyId"] for k in listed} == ids and len(listed) == 5
    for i, key_id in enumerate(sorted(ids)):
        kms.create_alias(AliasName=f"alias/k{i}", TargetKeyId=key_id)
    pages = list(kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3 and sum(len(p["Aliases"]) for p in pages) == 5


def test_aws_kms_key_with_an_aws_ecr_repository_encrypted_by_it(aws, kms, server) -> None:
    """resource "aws_kms_key" "repo" {} + resource "aws_ecr_repository" "app" { encryption_configuration {
    encryption_type = "KMS", kms_key = aws_kms_key.repo.arn } }: apply, a plan with no diff, a push, destroy."""
    from soko.registry.models import RepoRef
    from tests.domain import push_blob

    ecr = aws("ecr")
    # aws_kms_key: CreateKey, then the read
    key = kms.create_key(Description="ecr app", KeyUsage="ENCRYPT_DECRYPT", CustomerMasterKeySpec="SYMMETRIC_DEFAULT")
    key_id, key_arn = key["KeyMetadata"]["KeyId"], key["KeyMetadata"]["Arn"]
    assert read_key(kms, key_id)["meta"]["KeyState"] == "Enabled"
    # aws_ecr_repository: CreateRepository with encryptionConfiguration, then DescribeRepositories + tags
    ecr.create_repository(
        repositoryName="tf/encrypted",
        imageTagMutability="MUTABLE",
        imageScanningConfiguration={"scanOnPush": False},
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key_arn},
    )
    repo = ecr.describe_repositories(repositoryNames=["tf/encrypted"])["repositories"][0]
    assert ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"] == []
    # the next plan compares kms_key with the ARN it was given: no diff, so no forced replacement
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key_arn}
    push_blob(server.registry, RepoRef(ACCOUNT, "tf/encrypted"), b"layer under the customer key")
    # destroy in dependency order: the repository (force_delete), its NotFound poll, then the key's deletion window
    ecr.delete_repository(repositoryName="tf/encrypted", force=True)
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(repositoryNames=["tf/encrypted"])
    assert exc.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    deleted = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert deleted["KeyState"] == "PendingDeletion"
    assert read_key(kms, key_id)["meta"]["KeyState"] == "PendingDeletion"
