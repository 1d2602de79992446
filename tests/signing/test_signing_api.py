"""ECR managed signing through real clients against a running Soko: the signing configuration through boto3, an
image pushed with skopeo signed by the server's job runner, the signature found with ListImageReferrers and the
/v2/ referrers API and verified (``tests/signing/notary.py``) against the trust store ``soko signing trust-store``
prints; hostile inputs to the four operations and authorization through the IAM authorizer (one server)."""

from __future__ import annotations

import base64
import json
import shutil
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from soko.cli import main as soko_main
from soko.registry.models import RepoRef
from tests.console.helpers import make_user
from tests.domain import push_blob
from tests.e2e.images import build_image
from tests.e2e.skopeo import Skopeo
from tests.ecr.test_images import raw_json
from tests.signing.notary import ARTIFACT_TYPE, verify

ACCOUNT = "000000000000"
PROFILE = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/release_signer"
RULES = [{"signingProfileArn": PROFILE, "repositoryFilters": [{"filter": "team/*", "filterType": "WILDCARD_MATCH"}]}]


def _code(call) -> str:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["Error"]["Code"]


def _signed(ecr, repository: str, digest: str) -> list[dict]:
    """The image's signing statuses once none is IN_PROGRESS (the job runner signs within a tick or two)."""
    deadline = time.monotonic() + 60
    while True:
        statuses = ecr.describe_image_signing_status(repositoryName=repository,
                                                     imageId={"imageDigest": digest})["signingStatuses"]
        if all(s["status"] != "IN_PROGRESS" for s in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


@pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("umoci")), reason="needs skopeo and umoci")
def test_skopeo_push_is_signed_and_the_signature_verifies(server, aws, settings, tmp_path, capsys):
    ecr = aws("ecr")
    assert _code(lambda: ecr.get_signing_configuration()) == "SigningConfigurationNotFoundException"
    assert ecr.put_signing_configuration(signingConfiguration={"rules": RULES})["signingConfiguration"] == {
        "rules": RULES}
    got = ecr.get_signing_configuration()
    assert (got["registryId"], got["signingConfiguration"]) == (ACCOUNT, {"rules": RULES})

    image = build_image(tmp_path / "layout", "v1", "signing", [4096])
    user, password = base64.b64decode(server.token).decode().split(":", 1)
    skopeo = Skopeo.create(tmp_path / "skopeo", {server.host: (user, password)})
    skopeo.copy(image.ref, f"docker://{server.host}/team/app:v1")
    skopeo.copy(image.ref, f"docker://{server.host}/plain/app:v1")
    digest = image.top_digest()
    assert _signed(ecr, "team/app", digest) == [{"signingProfileArn": PROFILE, "status": "COMPLETE"}]
    assert ecr.describe_image_signing_status(repositoryName="plain/app", imageId={"imageTag": "v1"})[
        "signingStatuses"] == []  # no rule matches that repository

    [referrer] = ecr.list_image_referrers(repositoryName="team/app", subjectId={"imageDigest": digest})["referrers"]
    assert referrer["artifactType"] == ARTIFACT_TYPE
    with httpx.Client(base_url=server.url, headers=server.basic_auth, timeout=30) as client:
        index = client.get(f"/v2/team/app/referrers/{digest}").json()
        assert [m["digest"] for m in index["manifests"]] == [referrer["digest"]]
        signature = skopeo.inspect_raw(f"docker://{server.host}/team/app@{referrer['digest']}")
        envelope = client.get(f"/v2/team/app/blobs/{json.loads(signature)['layers'][0]['digest']}").content
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
               "size": len(image.top_manifest())}
    assert soko_main(["signing", "trust-store", "--data-dir", settings.data_dir,
                      "--database-url", settings.effective_database_url]) == 0
    trust_store = capsys.readouterr().out
    assert trust_store.startswith("-----BEGIN CERTIFICATE-----")
    leaf = verify(signature, envelope, subject, trust_store)
    assert leaf.subject.rfc4514_string() == f"O=Soko,OU={ACCOUNT},CN=release_signer"
    # tampering is detected: another subject, or a changed payload
    with pytest.raises(AssertionError):
        verify(signature, envelope, {**subject, "size": subject["size"] + 1}, trust_store)
    document = json.loads(envelope)
    document["payload"] = document["payload"][:-2] + ("AA" if document["payload"][-2:] != "AA" else "BB")
    with pytest.raises(Exception):  # noqa: B017 - the JWS library's own BadSignatureError (or a decode error)
        verify(signature, json.dumps(document).encode(), subject, trust_store)

    deleted = ecr.delete_signing_configuration()
    assert deleted["registryId"] == ACCOUNT and deleted["signingConfiguration"] == {"rules": RULES}
    assert _code(lambda: ecr.delete_signing_configuration()) == "SigningConfigurationNotFoundException"


HOSTILE = [
    {},  # signingConfiguration missing
    {"signingConfiguration": {}},  # rules missing
    {"signingConfiguration": {"rules": "all"}},  # wrong type
    {"signingConfiguration": {"rules": [{"signingProfileArn": 7}]}},
    {"signingConfiguration": {"rules": [{"signingProfileArn": "arn:aws:iam::000000000000:role/x"}]}},  # pattern
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": []}]}},  # min 1
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [
        {"filter": "Team/*", "filterType": "WILDCARD_MATCH"}]}]}},  # filter pattern: lower case
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [
        {"filter": "team/*", "filterType": "PREFIX_MATCH"}]}]}},  # enum
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [
        {"filter": "a" * 257, "filterType": "WILDCARD_MATCH"}]}]}},  # oversize
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [
        {"filter": f"r{i}", "filterType": "WILDCARD_MATCH"} for i in range(101)]}]}},  # 101 filters
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE}] * 11}},  # 11 rules
    {"signingConfiguration": {"rules": [{"signingProfileArn": PROFILE + "x" * 200}]}},  # ARN over 200
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing here depends on the engine
def test_hostile_inputs_are_refused_and_the_operations_authorized_by_the_iam_authorizer(server, aws):
    for body in HOSTILE:
        status, answer = raw_json(server, "PutSigningConfiguration", body)
        # the framework's validation against botocore's model, as for every ECR operation (a wrong JSON type is
        # ECR's SerializationException)
        assert status == 400 and answer["__type"] in ("InvalidParameterException", "SerializationException"), answer
        assert answer["message"], answer
    for raw in (b"{", b"[]", b'"x"', b"\xff\xfe"):
        status, answer = raw_json(server, "PutSigningConfiguration", raw)
        assert status == 400 and answer["__type"] in ("SerializationException", "InvalidParameterException"), answer
    ecr = aws("ecr")
    for arn in (PROFILE.replace(ACCOUNT, "111111111111"), PROFILE.replace("us-east-1", "eu-west-1")):
        assert _code(lambda arn=arn: ecr.put_signing_configuration(
            signingConfiguration={"rules": [{"signingProfileArn": arn}]})) == "InvalidParameterException"
    assert _code(lambda: ecr.get_signing_configuration()) == "SigningConfigurationNotFoundException"
    ecr.put_signing_configuration(signingConfiguration={"rules": []})  # no rules: stored, signs nothing
    assert ecr.get_signing_configuration()["signingConfiguration"] == {"rules": []}

    assert _code(lambda: ecr.describe_image_signing_status(
        repositoryName="team/app", imageId={"imageTag": "v1"})) == "RepositoryNotFoundException"
    ecr.create_repository(repositoryName="team/app")
    for image_id in ({}, {"imageDigest": "sha256:zz"}, {"imageTag": "x" * 301}):
        status, answer = raw_json(server, "DescribeImageSigningStatus", {"repositoryName": "team/app",
                                                                         "imageId": image_id})
        assert status == 400 and answer["__type"] == "InvalidParameterException", answer
    assert _code(lambda: ecr.describe_image_signing_status(
        repositoryName="team/app", imageId={"imageTag": "v1"})) == "ImageNotFoundException"

    # authorization: every operation through the one authorizer, the describe on the repository's ARN
    iam = aws("iam")
    key, secret = make_user(iam, "reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ecr:GetSigningConfiguration", "ecr:DescribeImageSigningStatus"],
         "Resource": "*"},
        {"Effect": "Deny", "Action": "ecr:DescribeImageSigningStatus",
         "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/secret/*"}]})
    reader = aws("ecr", key, secret)
    for denied in (lambda: reader.put_signing_configuration(signingConfiguration={"rules": RULES}),
                   lambda: reader.delete_signing_configuration(),
                   lambda: reader.describe_image_signing_status(repositoryName="secret/app",
                                                                imageId={"imageTag": "v1"})):
        assert _code(denied) == "AccessDeniedException"
    assert reader.get_signing_configuration()["signingConfiguration"] == {"rules": []}
    assert _code(lambda: reader.describe_image_signing_status(
        repositoryName="team/app", imageId={"imageTag": "v1"})) == "ImageNotFoundException"  # allowed, then answered

    # a pusher denied signer:SignPayload on the profile: the push succeeds, its signing is FAILED at once
    ecr.put_signing_configuration(signingConfiguration={"rules": RULES})
    key, secret = make_user(iam, "pusher", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "signer:SignPayload", "Resource": PROFILE}]})
    ref = RepoRef(ACCOUNT, "team/app")
    config = push_blob(server.registry, ref, b'{"architecture":"amd64","os":"linux"}')
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                                      "size": 37}, "layers": []})
    pushed = aws("ecr", key, secret).put_image(repositoryName="team/app", imageTag="v1", imageManifest=manifest)
    [status] = ecr.describe_image_signing_status(repositoryName="team/app", imageId={"imageTag": "v1"})[
        "signingStatuses"]
    assert (status["status"], status["failureCode"]) == ("FAILED", "SIGNING_NOT_AUTHORIZED")
    assert "signer:SignPayload" in status["failureReason"] and "pusher" in status["failureReason"]
    assert ecr.list_image_referrers(repositoryName="team/app", subjectId={
        "imageDigest": pushed["image"]["imageId"]["imageDigest"]})["referrers"] == []
