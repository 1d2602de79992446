"""Repositories over the ECR API, driven by boto3 and the AWS CLI: create/describe/delete, mutability, scanning,
encryption, pagination, tags, limits, and deletion of repositories holding images pushed over /v2/."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, SUITE_RETRIES
from tests.iam.test_api_roles import allow, new_user
from tests.iam.test_api_users import unvalidated
from tests.oci.helpers import push_image

ACCOUNT = "000000000000"


def error_of(excinfo) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


@pytest.fixture
def ecr(aws):
    return aws("ecr")


# ---- CreateRepository ------------------------------------------------------------------------------------------------
def test_create_repository_defaults(ecr, server):
    repo = ecr.create_repository(repositoryName="team/app")["repository"]
    assert repo["repositoryName"] == "team/app"
    assert repo["registryId"] == ACCOUNT
    assert repo["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/app"
    assert repo["repositoryUri"] == f"{server.host}/team/app"
    assert repo["imageTagMutability"] == "MUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": False}
    assert repo["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert "imageTagMutabilityExclusionFilters" not in repo
    assert repo["createdAt"].year >= 2024


def test_create_repository_with_everything(ecr):
    repo = ecr.create_repository(
        repositoryName="full",
        tags=[{"Key": "team", "Value": "core"}, {"Key": "env", "Value": ""}],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}],
        imageScanningConfiguration={"scanOnPush": False},
        encryptionConfiguration={"encryptionType": "AES256"},
    )["repository"]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": False}
    assert repo["encryptionConfiguration"] == {"encryptionType": "AES256"}
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert tags == [{"Key": "env", "Value": ""}, {"Key": "team", "Value": "core"}]
    described = ecr.describe_repositories(repositoryNames=["full"])["repositories"][0]
    assert described == repo


def test_create_repository_with_kms_keys(ecr, aws, server):
    kms = aws("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/repos", TargetKeyId=key["KeyId"])
    for name, config in (
        ("by-alias", {"encryptionType": "KMS", "kmsKey": "alias/repos"}),
        ("by-id", {"encryptionType": "KMS_DSSE", "kmsKey": key["KeyId"]}),
    ):
        repo = ecr.create_repository(repositoryName=name, encryptionConfiguration=config)["repository"]
        assert repo["encryptionConfiguration"] == {"encryptionType": config["encryptionType"], "kmsKey": key["Arn"]}
    managed = ecr.create_repository(repositoryName="managed", encryptionConfiguration={"encryptionType": "KMS"})
    assert (
        managed["repository"]["encryptionConfiguration"]["kmsKey"]
        == kms.describe_key(KeyId="alias/aws/ecr")["KeyMetadata"]["Arn"]
    )
    kms.disable_key(KeyId=key["KeyId"])
    for config in (
        {"encryptionType": "KMS", "kmsKey": key["KeyId"]},
        {"encryptionType": "KMS", "kmsKey": "alias/missing"},
        {"encryptionType": "KMS", "kmsKey": key["Arn"].replace("us-east-1", "eu-west-1")},
    ):
        with pytest.raises(ClientError) as exc:
            ecr.create_repository(repositoryName="refused", encryptionConfiguration=config)
        code, _ = error_of(exc)
        assert code == "KmsException"
        assert exc.value.response["kmsError"] in ("DisabledException", "NotFoundException")
    assert "refused" not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}

    # the creator must be allowed to use the key through ECR (its IAM policy here; the key policy grants the root)
    kms.enable_key(KeyId=key["KeyId"])
    iam = aws("iam")
    ecr_only = aws("ecr", *new_user(iam, "ecr-only", allow("ecr:*")))
    with pytest.raises(ClientError) as exc:
        ecr_only.create_repository(
            repositoryName="not-mine", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key["KeyId"]}
        )
    assert error_of(exc)[0] == "KmsException" and exc.value.response["kmsError"] == "AccessDeniedException"
    # hostile key references: an answer in ECR's format, never a 5xx, nothing created
    raw = unvalidated(server, "ecr")
    for bad in ("x" * 2049, "alias/" + "a" * 3000, "alias/../../x", "arn:aws:kms:us-east-1:1:key/\u0000", "\n", "key/"):
        with pytest.raises(ClientError) as exc:
            raw.create_repository(
                repositoryName="hostile", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": bad}
            )
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error_of(exc)[0] in ("KmsException", "InvalidParameterException", "ValidationException")
    assert "hostile" not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    user = aws("ecr", *new_user(iam, "key-user", allow(["ecr:*", "kms:GenerateDataKey"])))
    user.create_repository(
        repositoryName="mine", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key["Arn"]}
    )


def test_create_repository_aes256_with_key_is_invalid(ecr):
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(
            repositoryName="bad", encryptionConfiguration={"encryptionType": "AES256", "kmsKey": "alias/x"}
        )
    assert error_of(exc)[0] == "InvalidParameterException"


def test_create_repository_twice(ecr):
    ecr.create_repository(repositoryName="dup")
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(repositoryName="dup")
    assert error_of(exc) == (
        "RepositoryAlreadyExistsException",
        f"The repository with name 'dup' already exists in the registry with id '{ACCOUNT}'",
    )


@pytest.mark.parametrize("name", ["UPPER", "a", "-lead", "trail-", "a//b", "x" * 257, "a..b"])
def test_create_repository_invalid_names(ecr, name):
    with pytest.raises(ClientError) as exc:
        _unvalidated(ecr).create_repository(repositoryName=name)
    assert error_of(exc)[0] == "InvalidParameterException"


@pytest.mark.parametrize(
    ("mutability", "filters"),
    [
        ("IMMUTABLE_WITH_EXCLUSION", None),
        ("MUTABLE_WITH_EXCLUSION", None),
        ("IMMUTABLE", [{"filterType": "WILDCARD", "filter": "x*"}]),
        ("MUTABLE", [{"filterType": "WILDCARD", "filter": "x*"}]),
        ("IMMUTABLE_WITH_EXCLUSION", [{"filterType": "WILDCARD", "filter": "bad/char"}]),
        ("IMMUTABLE_WITH_EXCLUSION", [{"filterType": "WILDCARD", "filter": f"f{i}"} for i in range(6)]),
        ("IMMUTABLE_WITH_EXCLUSION", [{"filterType": "REGEX", "filter": "x"}]),
        ("SOMETIMES", None),
    ],
)
def test_create_repository_mutability_filter_rules(ecr, mutability, filters):
    kwargs = {"repositoryName": "mut", "imageTagMutability": mutability}
    if filters is not None:
        kwargs["imageTagMutabilityExclusionFilters"] = filters
    with pytest.raises(ClientError) as exc:
        _unvalidated(ecr).create_repository(**kwargs)
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError):
        ecr.describe_repositories(repositoryNames=["mut"])


def _unvalidated(client):
    """The same client without botocore's client-side validation, so the server's checks are what is tested."""
    import boto3
    from botocore.config import Config

    creds = client._request_signer._credentials
    return boto3.client(
        "ecr",
        endpoint_url=client.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        config=Config(parameter_validation=False, retries=SUITE_RETRIES),
    )


def raw_call(server, operation: str, body: dict | bytes, key_id: str = ROOT_KEY_ID, secret: str = ROOT_SECRET):
    """POST one signed AWS JSON 1.1 request with exactly ``body``; returns (status, parsed JSON)."""
    import json

    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=data,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{operation}",
        },
    )
    SigV4Auth(Credentials(key_id, secret), "ecr", "us-east-1").add_auth(request)
    r = httpx.post(server.url + "/", content=data, headers=dict(request.headers.items()))
    return r.status_code, r.json()


def test_wrong_types_and_missing_fields(ecr, server):
    raw = _unvalidated(ecr)
    with pytest.raises(ClientError) as exc:
        raw.create_repository()
    assert error_of(exc)[0] == "InvalidParameterException" or error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        raw.create_repository(repositoryName="typed", imageScanningConfiguration={"scanOnPush": "yes"})
    assert error_of(exc)[0] in ("SerializationException", "InvalidParameterException", "ValidationException")
    with pytest.raises(ParamValidationError):
        ecr.create_repository(repositoryName=5)
    # Unknown members are ignored, as AWS JSON services do.
    status, body = raw_call(server, "CreateRepository", {"repositoryName": "extra", "notAMember": True})
    assert status == 200, body
    status, body = raw_call(server, "CreateRepository", {"repositoryName": ["list"]})
    assert status == 400 and body["__type"] in ("SerializationException", "InvalidParameterException"), body
    status, body = raw_call(server, "CreateRepository", b"{not json")
    assert status == 400 and body["__type"] == "SerializationException", body
    assert ecr.describe_repositories(repositoryNames=["extra"])["repositories"][0]["repositoryName"] == "extra"


def test_limit_on_repositories(ecr, server, client):
    server.registry.settings.max_repositories = 3
    for i in range(3):
        ecr.create_repository(repositoryName=f"lim{i}")
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(repositoryName="lim3")
    code, message = error_of(exc)
    assert code == "LimitExceededException"
    assert "maximum number of repositories (3)" in message
    # Create-on-push is bound by the same quota: 403 DENIED with the message.
    r = client.post("/v2/lim-push/blobs/uploads/")
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    assert "maximum number of repositories" in r.json()["errors"][0]["message"]
    ecr.delete_repository(repositoryName="lim0")
    ecr.create_repository(repositoryName="lim3")


# ---- DescribeRepositories ---------------------------------------------------------------------------------------
def test_describe_missing_repository(ecr):
    ecr.create_repository(repositoryName="present")
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(repositoryNames=["present", "absent"])
    assert error_of(exc) == (
        "RepositoryNotFoundException",
        f"The repository with name 'absent' does not exist in the registry with id '{ACCOUNT}'",
    )


def test_describe_repositories_pagination(ecr):
    names = sorted(f"page/r{i:03d}" for i in range(25))
    for name in names:
        ecr.create_repository(repositoryName=name)
    first = ecr.describe_repositories(maxResults=10)
    assert [r["repositoryName"] for r in first["repositories"]] == names[:10]
    assert first["nextToken"]
    second = ecr.describe_repositories(maxResults=10, nextToken=first["nextToken"])
    assert [r["repositoryName"] for r in second["repositories"]] == names[10:20]
    paginator = ecr.get_paginator("describe_repositories")
    seen = [
        r["repositoryName"]
        for page in paginator.paginate(PaginationConfig={"PageSize": 7})
        for r in page["repositories"]
    ]
    assert seen == names
    everything = ecr.describe_repositories()
    assert len(everything["repositories"]) == 25 and "nextToken" not in everything


def test_describe_repositories_default_page_is_100(ecr):
    for i in range(101):
        ecr.create_repository(repositoryName=f"many{i:03d}")
    page = ecr.describe_repositories()
    assert len(page["repositories"]) == 100 and page["nextToken"]
    rest = ecr.describe_repositories(nextToken=page["nextToken"])
    assert [r["repositoryName"] for r in rest["repositories"]] == ["many100"]


def test_describe_repositories_bad_token_and_mixing(ecr):
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(nextToken="not-a-token")
    assert error_of(exc)[0] == "InvalidParameterException"
    ecr.create_repository(repositoryName="mix")
    with pytest.raises(ClientError) as exc:
        ecr.describe_repositories(repositoryNames=["mix"], maxResults=5)
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        _unvalidated(ecr).describe_repositories(maxResults=1001)
    assert error_of(exc)[0] == "InvalidParameterException"


# ---- PutImageTagMutability / PutImageScanningConfiguration --------------------------------------------------------
def test_put_image_tag_mutability(ecr):
    ecr.create_repository(repositoryName="muta")
    out = ecr.put_image_tag_mutability(
        repositoryName="muta",
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "release-*"}],
    )
    assert out == {
        "registryId": ACCOUNT,
        "repositoryName": "muta",
        "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "release-*"}],
        "ResponseMetadata": out["ResponseMetadata"],
    }
    back = ecr.put_image_tag_mutability(repositoryName="muta", imageTagMutability="IMMUTABLE")
    assert "imageTagMutabilityExclusionFilters" not in back
    repo = ecr.describe_repositories(repositoryNames=["muta"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE" and "imageTagMutabilityExclusionFilters" not in repo
    with pytest.raises(ClientError) as exc:
        ecr.put_image_tag_mutability(repositoryName="muta", imageTagMutability="IMMUTABLE_WITH_EXCLUSION")
    assert error_of(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.put_image_tag_mutability(repositoryName="nope", imageTagMutability="IMMUTABLE")
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_mutability_is_enforced_on_v2_push(ecr, client):
    ecr.create_repository(repositoryName="imm", imageTagMutability="IMMUTABLE")
    push_image(client, "imm", "v1", seed="a")
    from tests.oci.helpers import image_manifest, put_manifest

    r = put_manifest(client, "imm", "v1", image_manifest(b"{}", []))
    assert r.status_code in (400, 403), r.text


def test_put_image_scanning_configuration(ecr):
    ecr.create_repository(repositoryName="scan")
    out = ecr.put_image_scanning_configuration(repositoryName="scan", imageScanningConfiguration={"scanOnPush": False})
    assert out["imageScanningConfiguration"] == {"scanOnPush": False}
    assert out["repositoryName"] == "scan" and out["registryId"] == ACCOUNT
    # scan on push is carried out (tests/scan/test_scan_api.py), so it is stored
    out = ecr.put_image_scanning_configuration(repositoryName="scan", imageScanningConfiguration={"scanOnPush": True})
    assert out["imageScanningConfiguration"] == {"scanOnPush": True}
    repo = ecr.describe_repositories(repositoryNames=["scan"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    with pytest.raises(ClientError) as exc:
        ecr.put_image_scanning_configuration(repositoryName="nope", imageScanningConfiguration={"scanOnPush": False})
    assert error_of(exc)[0] == "RepositoryNotFoundException"


# ---- DeleteRepository ------------------------------------------------------------------------------------------------
def test_delete_repository(ecr):
    created = ecr.create_repository(repositoryName="gone")["repository"]
    deleted = ecr.delete_repository(repositoryName="gone")["repository"]
    assert deleted == created
    with pytest.raises(ClientError) as exc:
        ecr.delete_repository(repositoryName="gone")
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_delete_repository_with_images_needs_force(ecr, client, server):
    digest, _ = push_image(client, "full-repo", "v1", seed="del")
    ecr.tag_resource(
        resourceArn=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/full-repo", tags=[{"Key": "k", "Value": "v"}]
    )
    with pytest.raises(ClientError) as exc:
        ecr.delete_repository(repositoryName="full-repo")
    code, message = error_of(exc)
    assert code == "RepositoryNotEmptyException"
    assert "full-repo" in message and "contains images" in message
    assert client.get("/v2/full-repo/manifests/v1").status_code == 200
    ecr.delete_repository(repositoryName="full-repo", force=True)
    assert client.get("/v2/full-repo/manifests/v1").status_code == 404
    assert client.get(f"/v2/full-repo/manifests/{digest}").status_code == 404
    # Recreated, it starts empty: no tags, no manifests, no blob links, no resource tags.
    ecr.create_repository(repositoryName="full-repo")
    assert client.get("/v2/full-repo/tags/list").json()["tags"] in (None, [])
    assert ecr.list_tags_for_resource(resourceArn=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/full-repo")["tags"] == []
    import sqlalchemy as sa

    from soko.meta.schema import manifests, repository_blobs

    with server.registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(manifests)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(repository_blobs)).scalar() == 0


def test_delete_repository_with_only_blobs_needs_no_force(ecr, client):
    from tests.oci.helpers import push_blob

    push_blob(client, "blobs-only", b"layer")
    ecr.delete_repository(repositoryName="blobs-only")


# ---- resource tags ---------------------------------------------------------------------------------------------------
def arn(name: str) -> str:
    return f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"


def test_tags_roundtrip(ecr):
    ecr.create_repository(repositoryName="tagged", tags=[{"Key": "a", "Value": "1"}])
    ecr.tag_resource(resourceArn=arn("tagged"), tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "9"}])
    assert ecr.list_tags_for_resource(resourceArn=arn("tagged"))["tags"] == [
        {"Key": "a", "Value": "9"},
        {"Key": "b", "Value": "2"},
    ]
    ecr.untag_resource(resourceArn=arn("tagged"), tagKeys=["a", "missing"])
    assert ecr.list_tags_for_resource(resourceArn=arn("tagged"))["tags"] == [{"Key": "b", "Value": "2"}]


def test_tag_limits(ecr):
    ecr.create_repository(repositoryName="limits", tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    with pytest.raises(ClientError) as exc:
        ecr.tag_resource(resourceArn=arn("limits"), tags=[{"Key": "one-more", "Value": "v"}])
    assert error_of(exc)[0] == "TooManyTagsException"
    ecr.tag_resource(resourceArn=arn("limits"), tags=[{"Key": "k0", "Value": "replaced"}])  # no new key: fine
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(repositoryName="limits2", tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert error_of(exc)[0] == "TooManyTagsException"
    ecr.create_repository(repositoryName="tagrules")
    for bad in ({"Key": "k" * 129, "Value": "v"}, {"Key": "k", "Value": "v" * 257}, {"Key": "aws:owner", "Value": "x"}):
        with pytest.raises(ClientError) as exc:
            ecr.tag_resource(resourceArn=arn("tagrules"), tags=[bad])
        assert error_of(exc)[0] == "InvalidTagParameterException", bad
    with pytest.raises(ClientError) as exc:
        ecr.untag_resource(resourceArn=arn("tagrules"), tagKeys=["aws:owner"])
    assert error_of(exc)[0] == "InvalidTagParameterException"
    with pytest.raises(ClientError) as exc:
        ecr.create_repository(repositoryName="tagrules2", tags=[{"Key": "aws:x", "Value": "y"}])
    assert error_of(exc)[0] == "InvalidTagParameterException"


def test_tags_on_bad_arns(ecr):
    for bad in (
        "arn:aws:ecr:eu-west-1:000000000000:repository/x",
        "arn:aws:s3:::bucket",
        "not-an-arn",
    ):
        with pytest.raises(ClientError) as exc:
            ecr.list_tags_for_resource(resourceArn=bad)
        assert error_of(exc)[0] == "InvalidParameterException", bad
    for bad in ("arn:aws:s3:::bucket", "not-an-arn"):  # ECR's exact words
        with pytest.raises(ClientError) as exc:
            ecr.list_tags_for_resource(resourceArn=bad)
        assert error_of(exc)[1] == "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN'"
    with pytest.raises(ClientError) as exc:
        ecr.list_tags_for_resource(resourceArn=arn("missing"))
    assert error_of(exc)[0] == "RepositoryNotFoundException"


def test_invalid_image_tag_mutability_in_ecr_words(ecr):
    raw = _unvalidated(ecr)
    enum = "Member must satisfy enum value set: [MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION]"
    expected = f"Invalid parameter at 'imageTagMutability' failed to satisfy constraint: '{enum}'"
    with pytest.raises(ClientError) as exc:
        raw.create_repository(repositoryName="mut-bad", imageTagMutability="SOMETIMES")
    assert error_of(exc) == ("InvalidParameterException", expected)
    ecr.create_repository(repositoryName="mut-bad")
    with pytest.raises(ClientError) as exc:
        raw.put_image_tag_mutability(repositoryName="mut-bad", imageTagMutability="SOMETIMES")
    assert error_of(exc) == ("InvalidParameterException", expected)


# ---- the AWS CLI -----------------------------------------------------------------------------------------------------
def test_cli_repository_lifecycle(aws_cli):
    code, out, err = aws_cli(
        "ecr",
        "create-repository",
        "--repository-name",
        "cli/repo",
        "--image-tag-mutability",
        "IMMUTABLE",
        "--image-scanning-configuration",
        "scanOnPush=false",
        "--tags",
        "Key=team,Value=x",
    )
    assert code == 0, err
    assert out["repository"]["imageTagMutability"] == "IMMUTABLE"
    assert isinstance(out["repository"]["createdAt"], (int, float, str))
    code, out, err = aws_cli("ecr", "describe-repositories", "--repository-names", "cli/repo")
    assert code == 0, err
    assert out["repositories"][0]["imageScanningConfiguration"]["scanOnPush"] is False
    code, out, err = aws_cli(
        "ecr",
        "create-repository",
        "--repository-name",
        "cli/kms",
        "--encryption-configuration",
        "encryptionType=KMS,kmsKey=alias/none",
    )
    assert code != 0 and "KmsException" in err and "NotFoundException" in err
    code, out, err = aws_cli("ecr", "describe-repositories", "--repository-names", "nope")
    assert code != 0 and "RepositoryNotFoundException" in err
    code, out, err = aws_cli("ecr", "create-repository", "--repository-name", "Bad_Name")
    assert (code != 0 and "InvalidParameterException" in err) or "Invalid" in err
    code, out, err = aws_cli("ecr", "delete-repository", "--repository-name", "cli/repo")
    assert code == 0, err


def test_cli_describe_repositories_paginates(aws_cli, ecr):
    for i in range(12):
        ecr.create_repository(repositoryName=f"clipage{i:02d}")
    code, out, err = aws_cli("ecr", "describe-repositories", "--page-size", "5")
    assert code == 0, err
    assert [r["repositoryName"] for r in out["repositories"]] == [f"clipage{i:02d}" for i in range(12)]
    code, out, err = aws_cli("ecr", "describe-repositories", "--max-items", "4")
    assert code == 0, err
    assert len(out["repositories"]) == 4 and out["NextToken"]
