"""Registry-level operations: DescribeRegistry, replication configuration, account settings (BLOB_MOUNTING takes
effect on /v2/ mounts), registry scanning configuration and per-repository scanning configuration."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.ecr.test_repositories import _unvalidated, error_of
from tests.oci.helpers import push_blob, sha256

ACCOUNT = "000000000000"


@pytest.fixture
def ecr(aws):
    return aws("ecr")


def rule(*destinations: tuple[str, str], filters: list[str] | None = None) -> dict:
    out: dict = {"destinations": [{"region": r, "registryId": a} for r, a in destinations]}
    if filters is not None:
        out["repositoryFilters"] = [{"filter": f, "filterType": "PREFIX_MATCH"} for f in filters]
    return out


def test_describe_registry_default(ecr):
    out = ecr.describe_registry()
    assert out["registryId"] == ACCOUNT
    assert out["replicationConfiguration"] == {"rules": []}


def test_replication_to_another_region_is_refused_same_region_rules_are_stored(ecr):
    config = {"rules": [rule(("eu-west-1", ACCOUNT), ("us-east-1", "111111111111"), filters=["prod"])]}
    with pytest.raises(ClientError) as exc:
        ecr.put_replication_configuration(replicationConfiguration=config)
    code, message = error_of(exc)
    assert code == "UnsupportedOperationException" and "in eu-west-1 cannot be carried out" in message
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
    config = {"rules": [rule(("us-east-1", "111111111111"), filters=["prod"])]}
    assert ecr.put_replication_configuration(replicationConfiguration=config)["replicationConfiguration"] == config
    assert ecr.describe_registry()["replicationConfiguration"] == config
    deleting = {"rules": [{**rule(("us-east-1", "111111111111")), "deleteReplication": {"enabled": True}}]}
    with pytest.raises(ClientError) as exc:
        ecr.put_replication_configuration(replicationConfiguration=deleting)
    assert error_of(exc)[0] == "UnsupportedOperationException" and "deleteReplication" in error_of(exc)[1]
    out = ecr.put_replication_configuration(replicationConfiguration={"rules": []})  # Terraform's delete
    assert out["replicationConfiguration"] == {"rules": []}


def test_replication_validation(ecr):
    raw = _unvalidated(ecr)
    cases = [
        {"rules": [rule(("us-east-1", ACCOUNT))]},  # to itself
        {"rules": [rule(("eu-west-1", ACCOUNT)) for _ in range(11)]},  # > 10 rules
        {"rules": [rule(*[(f"eu-west-{i % 9}", f"{i:012d}") for i in range(26)])]},  # > 25 destinations
        {"rules": [rule(("eu-west-1", ACCOUNT), filters=[])]},
        {
            "rules": [
                {
                    "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT}],
                    "repositoryFilters": [{"filter": "x", "filterType": "SUFFIX"}],
                }
            ]
        },
    ]
    for config in cases:
        with pytest.raises(ClientError) as exc:
            raw.put_replication_configuration(replicationConfiguration=config)
        assert error_of(exc)[0] in ("ValidationException", "InvalidParameterException"), config
    with pytest.raises(ClientError) as exc:
        raw.put_replication_configuration(replicationConfiguration={"rules": [rule(("us-east-1", ACCOUNT))]})
    assert error_of(exc) == (
        "InvalidParameterException",
        "Replication destination cannot be the same as the source registry",
    )
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}


def test_account_settings(ecr):
    got = ecr.get_account_setting(name="BLOB_MOUNTING")
    assert (got["name"], got["value"]) == ("BLOB_MOUNTING", "ENABLED")
    assert ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"
    assert ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")["value"] == "DISABLED"
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED"
    for name, value in (("BLOB_MOUNTING", "MAYBE"), ("NOT_A_SETTING", "V1"), ("REGISTRY_POLICY_SCOPE", "V3")):
        with pytest.raises(ClientError) as exc:
            ecr.put_account_setting(name=name, value=value)
        assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ecr.get_account_setting(name="NOT_A_SETTING")
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:  # Soko has no Clair engine: refused, not stored and ignored
        ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="CLAIR")
    assert error_of(exc)[0] == "UnsupportedOperationException"
    assert ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"


def test_blob_mounting_disabled_falls_back_to_upload(ecr, client):
    digest = push_blob(client, "mount-src", b"shared layer")
    r = client.post("/v2/mount-dst/blobs/uploads/", params={"mount": digest, "from": "mount-src"})
    assert r.status_code == 201, r.text
    ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    r = client.post("/v2/mount-dst2/blobs/uploads/", params={"mount": digest, "from": "mount-src"})
    assert r.status_code == 202, r.text  # an upload session instead of a mount
    assert client.head(f"/v2/mount-dst2/blobs/{digest}").status_code == 404
    assert push_blob(client, "mount-dst2", b"shared layer") == sha256(b"shared layer")


def test_registry_scanning_configuration(ecr):
    default = ecr.get_registry_scanning_configuration()
    assert default["registryId"] == ACCOUNT
    assert default["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}
    rules = [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "prod", "filterType": "WILDCARD"}]}]
    assert ecr.put_registry_scanning_configuration(scanType="BASIC", rules=rules)[
        "registryScanningConfiguration"] == {"scanType": "BASIC", "rules": rules}
    enhanced = [
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "prod-*", "filterType": "WILDCARD"}]},
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]},
    ]
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=enhanced)
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "ENHANCED",
                                                                                 "rules": enhanced}
    filters = [{"filter": "*", "filterType": "WILDCARD"}]
    hostile = [  # (scanType, rules): each refused whole, the stored configuration unchanged
        ("BASIC", [{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": filters}]),  # ENHANCED only
        ("ENHANCED", [{"scanFrequency": "MANUAL", "repositoryFilters": filters}]),
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": filters}] * 2),  # one per frequency
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": filters}] * 3),  # ≤ 2 rules
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": []}]),
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": filters * 101}]),  # ≤ 100 filters
        ("BASIC", [{"scanFrequency": "SCAN_ON_PUSH",
                    "repositoryFilters": [{"filter": "x" * 256, "filterType": "WILDCARD"}]}]),
        ("BASIC", [{"scanFrequency": "SCAN_ON_PUSH",
                    "repositoryFilters": [{"filter": "Prod/../*", "filterType": "WILDCARD"}]}]),
        ("BASIC", [{"scanFrequency": "SCAN_ON_PUSH",
                    "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}]),
        ("BASIC", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "", "filterType": "WILDCARD"}]}]),
        ("BASIC", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": 7, "filterType": "WILDCARD"}]}]),
        ("BASIC", [{"repositoryFilters": filters}]),
        ("enhanced", []),
        (["ENHANCED"], []),
    ]
    raw = _unvalidated(ecr)
    for scan_type, bad in hostile:
        with pytest.raises(ClientError) as exc:
            raw.put_registry_scanning_configuration(scanType=scan_type, rules=bad)
        # the model's constraints answer as every ECR operation does (InvalidParameterException; a wrong JSON type
        # SerializationException), Soko's rules as ECR's ValidationException
        assert error_of(exc)[0] in ("ValidationException", "InvalidParameterException", "SerializationException"), (
            scan_type, bad)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"]["rules"] == enhanced
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])  # Terraform's delete
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}


def test_batch_get_repository_scanning_configuration(ecr):
    ecr.create_repository(repositoryName="app-prod")
    ecr.create_repository(repositoryName="app-dev", imageScanningConfiguration={"scanOnPush": True})
    ecr.create_repository(repositoryName="other")
    names = ["app-prod", "app-dev", "other", "ghost"]
    out = ecr.batch_get_repository_scanning_configuration(repositoryNames=names)
    by_name = {c["repositoryName"]: c for c in out["scanningConfigurations"]}
    assert by_name["app-prod"]["scanFrequency"] == "MANUAL" and by_name["app-prod"]["scanOnPush"] is False
    assert by_name["app-dev"]["scanFrequency"] == "SCAN_ON_PUSH" and by_name["app-dev"]["scanOnPush"] is True
    assert by_name["other"]["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/other"
    assert out["failures"] == [
        {
            "repositoryName": "ghost",
            "failureCode": "REPOSITORY_NOT_FOUND",
            "failureReason": f"The repository with name 'ghost' does not exist in the registry with id '{ACCOUNT}'",
        }
    ]
    prod = {"filter": "*-prod", "filterType": "WILDCARD"}
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [prod]}])
    by_name = {c["repositoryName"]: c for c in ecr.batch_get_repository_scanning_configuration(
        repositoryNames=names)["scanningConfigurations"]}
    assert by_name["app-prod"] == {"repositoryArn": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/app-prod",
                                   "repositoryName": "app-prod", "scanOnPush": True, "scanFrequency": "SCAN_ON_PUSH",
                                   "appliedScanFilters": [prod]}
    assert by_name["app-dev"]["scanFrequency"] == "SCAN_ON_PUSH"  # BASIC: the repository's own flag still counts
    # ENHANCED: the rules alone (a repository's scanOnPush is ignored); a filter without '*' matches a part of the name
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [prod]},
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "the", "filterType": "WILDCARD"}]}])
    by_name = {c["repositoryName"]: c for c in ecr.batch_get_repository_scanning_configuration(
        repositoryNames=names)["scanningConfigurations"]}
    assert by_name["app-prod"]["scanFrequency"] == "CONTINUOUS_SCAN"
    assert by_name["app-dev"]["scanFrequency"] == "MANUAL" and by_name["app-dev"]["scanOnPush"] is False
    assert by_name["other"]["scanFrequency"] == "SCAN_ON_PUSH"
    assert by_name["other"]["appliedScanFilters"] == [{"filter": "the", "filterType": "WILDCARD"}]


def test_cli_registry(aws_cli):
    code, out, err = aws_cli("ecr", "describe-registry")
    assert code == 0 and out["replicationConfiguration"] == {"rules": []}, err
    code, out, err = aws_cli("ecr", "put-account-setting", "--name", "BLOB_MOUNTING", "--value", "DISABLED")
    assert code == 0 and out == {"name": "BLOB_MOUNTING", "value": "DISABLED"}, err
    code, out, err = aws_cli("ecr", "get-registry-scanning-configuration")
    assert code == 0 and out["scanningConfiguration"]["scanType"] == "BASIC", err
    rules = '[{"scanFrequency":"CONTINUOUS_SCAN","repositoryFilters":[{"filter":"prod*","filterType":"WILDCARD"}]}]'
    code, out, err = aws_cli("ecr", "put-registry-scanning-configuration", "--scan-type", "ENHANCED", "--rules", rules)
    assert code == 0 and out["registryScanningConfiguration"]["scanType"] == "ENHANCED", err
    code, out, err = aws_cli("ecr", "create-repository", "--repository-name", "prod/web")
    assert code == 0, err
    code, out, err = aws_cli("ecr", "batch-get-repository-scanning-configuration", "--repository-names", "prod/web")
    assert code == 0 and out["scanningConfigurations"][0]["scanFrequency"] == "CONTINUOUS_SCAN", err
