"""Repository and registry policies over the ECR API: validation, NotFound paths, the lock-out guard (force),
REGISTRY_POLICY_SCOPE, and the cross-account behaviour they grant (or refuse, without revealing existence)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from tests.ecr.test_repositories import error_of, raw_call

ACCOUNT = "000000000000"
OTHER = "111111111111"
INVALID_REPO_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'"
)
INVALID_REGISTRY_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
)


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: str, *actions: str) -> dict:
    return {"Sid": "a", "Effect": "Allow", "Principal": {"AWS": principal}, "Action": list(actions)}


@pytest.fixture
def ecr(aws):
    return aws("ecr")


@pytest.fixture
def other(aws, server):
    key, secret = server.identity.credentials.create_account(OTHER)
    return aws("ecr", key_id=key, secret=secret)


# ---- repository policy -----------------------------------------------------------------------------------------------
def test_repository_policy_roundtrip(ecr):
    ecr.create_repository(repositoryName="pol")
    with pytest.raises(ClientError) as exc:
        ecr.get_repository_policy(repositoryName="pol")
    assert error_of(exc) == (
        "RepositoryPolicyNotFoundException",
        f"Repository policy does not exist for the repository with name 'pol' in the registry with id '{ACCOUNT}'",
    )
    text = policy(allow(f"arn:aws:iam::{OTHER}:root", "ecr:BatchGetImage"))
    out = ecr.set_repository_policy(repositoryName="pol", policyText=text)
    assert (out["registryId"], out["repositoryName"], out["policyText"]) == (ACCOUNT, "pol", text)
    assert ecr.get_repository_policy(repositoryName="pol")["policyText"] == text
    deleted = ecr.delete_repository_policy(repositoryName="pol")
    assert deleted["policyText"] == text
    with pytest.raises(ClientError) as exc:
        ecr.delete_repository_policy(repositoryName="pol")
    assert error_of(exc)[0] == "RepositoryPolicyNotFoundException"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*"}]}),  # no Principal
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "ecr:*"}]}),
        "",
    ],
)
def test_invalid_repository_policies(ecr, text):
    ecr.create_repository(repositoryName="badpol")
    with pytest.raises(ClientError) as exc:
        ecr.set_repository_policy(repositoryName="badpol", policyText=text)
    assert error_of(exc) == ("InvalidParameterException", INVALID_REPO_POLICY)


def test_oversize_repository_policy(ecr, server):
    ecr.create_repository(repositoryName="big")
    statement = allow(f"arn:aws:iam::{OTHER}:root", "ecr:BatchGetImage")
    text = policy(*[dict(statement, Sid=f"s{i}") for i in range(200)])
    assert len(text) > 10240
    status, body = raw_call(server, "SetRepositoryPolicy", {"repositoryName": "big", "policyText": text})
    assert status == 400 and body["__type"] == "InvalidParameterException", body


def test_repository_policy_on_missing_repository(ecr):
    text = policy(allow(f"arn:aws:iam::{OTHER}:root", "ecr:BatchGetImage"))
    for call in (
        lambda: ecr.set_repository_policy(repositoryName="ghost", policyText=text),
        lambda: ecr.get_repository_policy(repositoryName="ghost"),
        lambda: ecr.delete_repository_policy(repositoryName="ghost"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_lockout_needs_force(ecr):
    ecr.create_repository(repositoryName="locked")
    deny = {"Sid": "d", "Effect": "Deny", "Principal": "*", "Action": "ecr:SetRepositoryPolicy"}
    with pytest.raises(ClientError) as exc:
        ecr.set_repository_policy(repositoryName="locked", policyText=policy(deny))
    code, message = error_of(exc)
    assert code == "InvalidParameterException" and "force" in message
    with pytest.raises(ClientError):
        ecr.get_repository_policy(repositoryName="locked")
    ecr.set_repository_policy(repositoryName="locked", policyText=policy(deny), force=True)
    # Now even the account root cannot replace it (an explicit Deny in a resource policy binds the root too).
    with pytest.raises(ClientError) as exc:
        ecr.set_repository_policy(repositoryName="locked", policyText=policy(allow("*", "ecr:*")), force=True)
    assert error_of(exc)[0] == "AccessDeniedException"
    # A deny of other actions is no lock-out.
    ecr.create_repository(repositoryName="partly")
    deny_pull = {"Sid": "d", "Effect": "Deny", "Principal": "*", "Action": "ecr:BatchGetImage"}
    ecr.set_repository_policy(repositoryName="partly", policyText=policy(deny_pull))


def test_cross_account_needs_repository_policy_and_hides_existence(ecr, other):
    ecr.create_repository(repositoryName="shared")
    for name in ("shared", "does-not-exist"):
        with pytest.raises(ClientError) as exc:
            other.describe_repositories(registryId=ACCOUNT, repositoryNames=[name])
        assert error_of(exc)[0] == "AccessDeniedException", name
        with pytest.raises(ClientError) as exc:
            other.get_repository_policy(registryId=ACCOUNT, repositoryName=name)
        assert error_of(exc)[0] == "AccessDeniedException", name
    with pytest.raises(ClientError) as exc:
        other.describe_repositories(registryId=ACCOUNT)
    assert error_of(exc)[0] == "AccessDeniedException"
    ecr.set_repository_policy(
        repositoryName="shared",
        policyText=policy(allow(f"arn:aws:iam::{OTHER}:root", "ecr:DescribeRepositories", "ecr:GetRepositoryPolicy")),
    )
    repo = other.describe_repositories(registryId=ACCOUNT, repositoryNames=["shared"])["repositories"][0]
    assert repo["registryId"] == ACCOUNT
    assert other.get_repository_policy(registryId=ACCOUNT, repositoryName="shared")["registryId"] == ACCOUNT
    with pytest.raises(ClientError) as exc:
        other.delete_repository(registryId=ACCOUNT, repositoryName="shared", force=True)
    assert error_of(exc)[0] == "AccessDeniedException"
    with pytest.raises(ClientError) as exc:
        other.list_tags_for_resource(resourceArn=repo["repositoryArn"])
    assert error_of(exc)[0] == "AccessDeniedException"
    # The other account's own registry is separate.
    assert other.describe_repositories()["repositories"] == []
    other.create_repository(repositoryName="shared")
    assert other.describe_repositories()["repositories"][0]["registryId"] == OTHER


def test_registry_policy_grants_cross_account(ecr, other):
    ecr.create_repository(repositoryName="viareg")
    with pytest.raises(ClientError):
        other.describe_repositories(registryId=ACCOUNT, repositoryNames=["viareg"])
    ecr.put_registry_policy(
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                        "Action": ["ecr:DescribeRepositories"],
                        "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*",
                    }
                ],
            }
        )
    )
    assert other.describe_repositories(registryId=ACCOUNT, repositoryNames=["viareg"])["repositories"]
    ecr.delete_registry_policy()
    with pytest.raises(ClientError) as exc:
        other.describe_repositories(registryId=ACCOUNT, repositoryNames=["viareg"])
    assert error_of(exc)[0] == "AccessDeniedException"


# ---- registry policy -------------------------------------------------------------------------------------------------
def replication_policy(*actions: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ReplicationAccessCrossAccount",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                    "Action": list(actions),
                    "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*",
                }
            ],
        }
    )


def test_registry_policy_roundtrip(ecr):
    with pytest.raises(ClientError) as exc:
        ecr.get_registry_policy()
    assert error_of(exc) == (
        "RegistryPolicyNotFoundException",
        f"Registry policy does not exist in the registry with id '{ACCOUNT}'",
    )
    with pytest.raises(ClientError) as exc:
        ecr.delete_registry_policy()
    assert error_of(exc)[0] == "RegistryPolicyNotFoundException"
    text = replication_policy("ecr:CreateRepository", "ecr:ReplicateImage")
    assert ecr.put_registry_policy(policyText=text)["policyText"] == text
    got = ecr.get_registry_policy()
    assert (got["registryId"], got["policyText"]) == (ACCOUNT, text)
    assert ecr.delete_registry_policy()["policyText"] == text


def test_registry_policy_scope(ecr):
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    ecr.put_registry_policy(policyText=replication_policy("ecr:BatchGetImage"))  # V2: any ecr action
    ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V1")
    with pytest.raises(ClientError) as exc:
        ecr.put_registry_policy(policyText=replication_policy("ecr:BatchGetImage"))
    assert error_of(exc) == ("InvalidParameterException", INVALID_REGISTRY_POLICY)
    with pytest.raises(ClientError):
        ecr.put_registry_policy(policyText=replication_policy("ecr:*"))
    ecr.put_registry_policy(
        policyText=replication_policy("ecr:CreateRepository", "ecr:ReplicateImage", "ecr:BatchImportUpstreamImage")
    )


@pytest.mark.parametrize("text", ["[]", "{", json.dumps({"Statement": []})])
def test_invalid_registry_policies(ecr, text):
    with pytest.raises(ClientError) as exc:
        ecr.put_registry_policy(policyText=text)
    assert error_of(exc) == ("InvalidParameterException", INVALID_REGISTRY_POLICY)


def test_cli_policies(aws_cli, ecr):
    ecr.create_repository(repositoryName="clipol")
    text = policy(allow(f"arn:aws:iam::{OTHER}:root", "ecr:BatchGetImage"))
    code, out, err = aws_cli("ecr", "set-repository-policy", "--repository-name", "clipol", "--policy-text", text)
    assert code == 0, err
    code, out, err = aws_cli("ecr", "get-repository-policy", "--repository-name", "clipol")
    assert code == 0 and json.loads(out["policyText"]) == json.loads(text)
    code, out, err = aws_cli("ecr", "set-repository-policy", "--repository-name", "clipol", "--policy-text", "nope")
    assert code != 0 and "Invalid repository policy provided" in err
    code, out, err = aws_cli("ecr", "get-registry-policy")
    assert code != 0 and "RegistryPolicyNotFoundException" in err
