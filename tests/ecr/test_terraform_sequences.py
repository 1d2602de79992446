"""Replays of the call sequences terraform-provider-aws makes for aws_ecr_repository, aws_ecr_repository_policy,
aws_ecr_registry_policy and aws_ecr_replication_configuration — including the NotFound answers its read/delete
loops wait for."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from tests.ecr.test_repositories import error_of

ACCOUNT = "000000000000"


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def read_repository(ecr, name: str) -> tuple[dict, list]:
    repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    return repo, tags


def test_aws_ecr_repository(ecr):
    # Create
    ecr.create_repository(
        repositoryName="tf/app",
        imageTagMutability="MUTABLE",
        imageScanningConfiguration={"scanOnPush": False},
        encryptionConfiguration={"encryptionType": "AES256"},
        tags=[{"Key": "Name", "Value": "app"}],
    )
    repo, tags = read_repository(ecr, "tf/app")
    assert repo["imageTagMutability"] == "MUTABLE" and tags == [{"Key": "Name", "Value": "app"}]
    # Update: mutability, scanning, tags
    ecr.put_image_tag_mutability(
        repositoryName="tf/app",
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "dev-*"}],
    )
    ecr.put_image_scanning_configuration(repositoryName="tf/app", imageScanningConfiguration={"scanOnPush": False})
    ecr.untag_resource(resourceArn=repo["repositoryArn"], tagKeys=["Name"])
    ecr.tag_resource(resourceArn=repo["repositoryArn"], tags=[{"Key": "Team", "Value": "core"}])
    repo, tags = read_repository(ecr, "tf/app")
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": False}
    assert tags == [{"Key": "Team", "Value": "core"}]
    # Delete, then poll until RepositoryNotFoundException
    ecr.delete_repository(repositoryName="tf/app", force=False)
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(repositoryNames=["tf/app"])
    assert error_of(exc)[0] == "RepositoryNotFoundException"
    # A second destroy (already gone) sees RepositoryNotFound, which the provider treats as success.
    with pytest.raises(ClientError) as exc:
        ecr.delete_repository(repositoryName="tf/app", force=True)
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_aws_ecr_repository_policy(ecr):
    ecr.create_repository(repositoryName="tf/pol")
    text = json.dumps(
        {
            "Version": "2008-10-17",
            "Statement": [
                {
                    "Sid": "new policy",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage", "ecr:DescribeRepositories"],
                }
            ],
        }
    )
    ecr.set_repository_policy(repositoryName="tf/pol", policyText=text)
    got = ecr.get_repository_policy(repositoryName="tf/pol")
    assert json.loads(got["policyText"]) == json.loads(text)
    ecr.delete_repository_policy(repositoryName="tf/pol")
    with pytest.raises(ClientError) as exc:
        ecr.get_repository_policy(repositoryName="tf/pol")
    assert error_of(exc)[0] == "RepositoryPolicyNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.delete_repository_policy(repositoryName="tf/pol")
    assert error_of(exc)[0] == "RepositoryPolicyNotFoundException"  # ignored by the provider


def test_aws_ecr_registry_policy(ecr):
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "testpolicy",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": ["ecr:ReplicateImage"],
                    "Resource": [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*"],
                }
            ],
        }
    )
    assert ecr.put_registry_policy(policyText=text)["registryId"] == ACCOUNT
    assert json.loads(ecr.get_registry_policy()["policyText"]) == json.loads(text)
    ecr.delete_registry_policy()
    with pytest.raises(ClientError) as exc:
        ecr.get_registry_policy()
    assert error_of(exc)[0] == "RegistryPolicyNotFoundException"


def test_aws_ecr_replication_configuration(ecr):
    config = {
        "rules": [
            {
                "destinations": [{"region": "us-west-2", "registryId": ACCOUNT}],
                "repositoryFilters": [{"filter": "prod-microservice", "filterType": "PREFIX_MATCH"}],
            },
            {"destinations": [{"region": "eu-central-1", "registryId": "222222222222"}]},
        ]
    }
    # Other regions are not reachable from this deployment: Terraform's apply fails with a message saying why,
    # rather than storing rules nothing carries out.
    with pytest.raises(ClientError) as exc:
        ecr.put_replication_configuration(replicationConfiguration=config)
    assert error_of(exc)[0] == "UnsupportedOperationException"
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
    # Create / Update / Read with destinations this deployment serves (other accounts of its region)
    for rule in config["rules"]:
        rule["destinations"] = [{"region": "us-east-1", "registryId": "222222222222"}]
    assert ecr.put_replication_configuration(replicationConfiguration=config)["replicationConfiguration"] == config
    assert ecr.describe_registry()["replicationConfiguration"] == config
    config["rules"].pop()
    ecr.put_replication_configuration(replicationConfiguration=config)
    assert ecr.describe_registry()["replicationConfiguration"] == config
    ecr.put_replication_configuration(replicationConfiguration={"rules": []})  # delete
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}


def test_aws_ecr_registry_scanning_configuration(ecr):
    rules = [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "example", "filterType": "WILDCARD"}]}]
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=rules)
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": rules}
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}
