"""Repositories encrypted with a KMS key, through the real AWS CLI and skopeo: content sealed under the customer key
(nothing in plaintext in the data dir), pushes and pulls refused while the key is disabled or pending deletion and
working again after EnableKey / CancelKeyDeletion, rotation keeping old layers readable, KMS_DSSE, mounts across keys,
and every use of the key by ECR in the audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from .aws_cli import AwsCli, AwsCliError, audit
from .images import build_image
from .layout import ImageRef, assert_same_content
from .servers import RegistryServer, soko_root_key
from .skopeo import Skopeo

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]


def _stored_files(root: Path) -> list[Path]:
    return [Path(dirpath) / name for dirpath, _, names in os.walk(root) for name in names]


def _layer(image: ImageRef) -> bytes:
    manifest = json.loads(image.top_manifest())
    return image.closure()[manifest["layers"][0]["digest"]]


def _assert_not_in_plaintext(data_dir: Path, blob: bytes) -> None:
    probes = [blob[i : i + 32] for i in range(0, len(blob) - 32, max(1, len(blob) // 64))]
    for path in _stored_files(data_dir):
        content = path.read_bytes()
        for probe in probes:
            assert probe not in content, f"plaintext of the pushed layer in {path}"


def _pull(skopeo: Skopeo, source: str, image: ImageRef, out: Path) -> None:
    pulled = image.with_path(out)
    skopeo.copy(source, pulled.ref)
    assert_same_content(image.closure(), pulled.closure())


def _blob_error(soko: RegistryServer, repo: str, digest: str) -> dict:
    return _error(soko, repo, f"blobs/{digest}")


def _error(soko: RegistryServer, repo: str, path: str) -> dict:
    response = httpx.get(f"{soko.url}/v2/{repo}/{path}", headers=soko.auth_header(), timeout=30)
    assert response.status_code == 403, response.text
    return response.json()["errors"][0]


def _kms_error(aws: AwsCli, *args: str) -> str:
    result = aws.run(*args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_kms_repositories_with_the_aws_cli_and_skopeo(soko: RegistryServer, skopeo: Skopeo, tmp_path: Path) -> None:
    aws = AwsCli.for_key(soko.url, soko_root_key(soko.data_dir), tmp_path / "aws")
    key = aws.json("kms", "create-key", "--description", "e2e repository key")["KeyMetadata"]
    key_arn, key_id = key["Arn"], key["KeyId"]
    aws.run("kms", "create-alias", "--alias-name", "alias/e2e-repos", "--target-key-id", key_id)

    # creation: the alias resolves to the key's ARN; KMS without a key uses aws/ecr, created on first use
    repo = aws.json(
        "ecr", "create-repository", "--repository-name", "e2e/kms",
        "--encryption-configuration", "encryptionType=KMS,kmsKey=alias/e2e-repos",
    )["repository"]
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key_arn}
    aws.run("ecr", "create-repository", "--repository-name", "e2e/dsse",
            "--encryption-configuration", f"encryptionType=KMS_DSSE,kmsKey={key_id}")
    managed = aws.json("ecr", "create-repository", "--repository-name", "e2e/managed",
                       "--encryption-configuration", "encryptionType=KMS")["repository"]
    managed_arn = managed["encryptionConfiguration"]["kmsKey"]
    described = aws.json("kms", "describe-key", "--key-id", "alias/aws/ecr")["KeyMetadata"]
    assert managed_arn == described["Arn"] and described["KeyManager"] == "AWS"
    for bad in ("alias/nope", "arn:aws:kms:eu-west-1:000000000000:key/" + key_id):
        err = _kms_error(aws, "ecr", "create-repository", "--repository-name", "e2e/bad",
                         "--encryption-configuration", f"encryptionType=KMS,kmsKey={bad}")
        assert "KmsException" in err and "NotFoundException" in err

    # push and pull through skopeo; nothing of the layer in plaintext anywhere under the data dir
    image = build_image(tmp_path / "layout", "v1", "kms-repository", [1 << 20])
    skopeo.copy(image.ref, f"docker://{soko.host}/e2e/kms:v1")
    skopeo.copy(image.ref, f"docker://{soko.host}/e2e/dsse:v1")
    skopeo.copy(image.ref, f"docker://{soko.host}/e2e/managed:v1")
    _pull(skopeo, f"docker://{soko.host}/e2e/kms:v1", image, tmp_path / "pulled-kms")
    _pull(skopeo, f"docker://{soko.host}/e2e/dsse:v1", image, tmp_path / "pulled-dsse")
    _pull(skopeo, f"docker://{soko.host}/e2e/managed:v1", image, tmp_path / "pulled-managed")
    layer = _layer(image)
    _assert_not_in_plaintext(soko.data_dir, layer)
    keyed = {str(p) for p in _stored_files(soko.data_dir) if "/keyed/" in str(p)}
    assert any(f"/keyed/kms/{key_id}/" in p for p in keyed) and any(f"/keyed/dsse/{key_id}/" in p for p in keyed)

    # disabled key: pulls and pushes fail, naming the key and the fix; ECR says KmsException with kmsError
    aws.run("kms", "disable-key", "--key-id", key_id)
    failed = skopeo.copy(f"docker://{soko.host}/e2e/kms:v1", f"oci:{tmp_path / 'refused'}:x", check=False)
    # refused at the manifest already (sealed under the key), skopeo prints the message: the key and the fix
    assert failed.returncode != 0 and "denied" in failed.stderr and "enable-key" in failed.stderr, failed.stderr
    layer_digest = json.loads(image.top_manifest())["layers"][0]["digest"]
    refused = _blob_error(soko, "e2e/kms", layer_digest)  # what skopeo got, which it does not print
    assert refused["code"] == "DENIED" and key_arn in refused["message"] and "enable-key" in refused["message"]
    # manifests are sealed under the key too: refused alike, on /v2/ and by BatchGetImage (failure code KmsError)
    refused = _error(soko, "e2e/kms", "manifests/v1")
    assert refused["code"] == "DENIED" and key_arn in refused["message"] and "enable-key" in refused["message"]
    got = aws.json("ecr", "batch-get-image", "--repository-name", "e2e/kms", "--image-ids", "imageTag=v1")
    assert got["images"] == [] and got["failures"][0]["failureCode"] == "KmsError", got
    other = build_image(tmp_path / "layout", "v2", "kms-repository-2", [256 << 10])
    failed = skopeo.copy(other.ref, f"docker://{soko.host}/e2e/kms:v2", check=False)
    assert failed.returncode != 0 and key_arn in failed.stderr, failed.stderr
    manifest = image.top_manifest().decode()
    err = _kms_error(aws, "ecr", "put-image", "--repository-name", "e2e/kms", "--image-tag", "again",
                     "--image-manifest", manifest, "--image-manifest-media-type",
                     "application/vnd.oci.image.manifest.v1+json")
    assert "KmsException" in err and "DisabledException" in err
    aws.run("kms", "enable-key", "--key-id", key_id)
    _pull(skopeo, f"docker://{soko.host}/e2e/kms:v1", image, tmp_path / "pulled-after-enable")

    # rotation: the old layer still opens, new pushes use the new version
    aws.run("kms", "rotate-key-on-demand", "--key-id", key_id)
    skopeo.copy(other.ref, f"docker://{soko.host}/e2e/kms:v2")
    _pull(skopeo, f"docker://{soko.host}/e2e/kms:v1", image, tmp_path / "pulled-after-rotation")
    _pull(skopeo, f"docker://{soko.host}/e2e/kms:v2", other, tmp_path / "pulled-v2")

    # pending deletion: refused (KMS_DSSE too) until the deletion is cancelled and the key enabled
    aws.run("kms", "schedule-key-deletion", "--key-id", key_id, "--pending-window-in-days", "7")
    failed = skopeo.copy(f"docker://{soko.host}/e2e/dsse:v1", f"oci:{tmp_path / 'refused2'}:x", check=False)
    assert failed.returncode != 0 and "cancel-key-deletion" in failed.stderr, failed.stderr
    assert "cancel-key-deletion" in _blob_error(soko, "e2e/dsse", layer_digest)["message"]
    aws.run("kms", "cancel-key-deletion", "--key-id", key_id)
    aws.run("kms", "enable-key", "--key-id", key_id)
    _pull(skopeo, f"docker://{soko.host}/e2e/dsse:v1", image, tmp_path / "pulled-after-cancel")

    # across keys a copy is re-encrypted: from the KMS repository into an AES256 one and back into another key
    aws.run("ecr", "create-repository", "--repository-name", "e2e/plain")
    skopeo.copy(f"docker://{soko.host}/e2e/kms:v1", f"docker://{soko.host}/e2e/plain:v1")
    aws.run("kms", "disable-key", "--key-id", key_id)  # the AES256 copy no longer needs the customer key
    _pull(skopeo, f"docker://{soko.host}/e2e/plain:v1", image, tmp_path / "pulled-plain")
    aws.run("kms", "enable-key", "--key-id", key_id)

    # the audit log has ECR's uses of the key, as CloudTrail records them
    def decrypts(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r.get("action") == "kms:Decrypt" and r.get("resource") == key_arn]

    def contexts(rows: list[dict]) -> list[dict]:
        return [json.loads(r["reason"])["requestParameters"]["encryptionContext"] for r in decrypts(rows)]

    # a blob's data key (pulls) and the keyspace's manifest row key (manifest reads), each with its own context
    blob_context = {"soko:ecr:keyspace": f"kms/{key_id}"}
    rows = audit(
        soko.data_dir, "--principal", "ecr.us-east-1.amazonaws.com", until=lambda rows: blob_context in contexts(rows)
    )
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= {r["action"] for r in rows if r.get("resource") == key_arn}
    assert all(json.loads(r["reason"])["invokedBy"] == "ecr.us-east-1.amazonaws.com" for r in decrypts(rows))
    assert blob_context in contexts(rows)
    assert {**blob_context, "soko:ecr:data": "manifests"} in contexts(rows)


def test_refused_without_a_usable_key(soko: RegistryServer, tmp_path: Path) -> None:
    aws = AwsCli.for_key(soko.url, soko_root_key(soko.data_dir), tmp_path / "aws")
    key_id = aws.json("kms", "create-key")["KeyMetadata"]["KeyId"]
    aws.run("kms", "disable-key", "--key-id", key_id)
    err = _kms_error(aws, "ecr", "create-repository", "--repository-name", "e2e/disabled-key",
                     "--encryption-configuration", f"encryptionType=KMS,kmsKey={key_id}")
    assert "KmsException" in err and "DisabledException" in err
    with pytest.raises(AwsCliError):
        aws.json("ecr", "describe-repositories", "--repository-names", "e2e/disabled-key")


def test_creation_templates_with_a_kms_key(soko: RegistryServer, skopeo: Skopeo, tmp_path: Path) -> None:
    """A CREATE_ON_PUSH template with a KMS key (aws CLI): skopeo's push creates the repository bound to the key,
    its layers and manifest sealed under it; a template naming a disabled key is refused, and while the template's
    key is disabled a push to a new name fails and creates nothing."""
    aws = AwsCli.for_key(soko.url, soko_root_key(soko.data_dir), tmp_path / "aws")
    key = aws.json("kms", "create-key", "--description", "e2e template key")["KeyMetadata"]
    key_arn, key_id = key["Arn"], key["KeyId"]
    template = aws.json(
        "ecr", "create-repository-creation-template", "--prefix", "e2e-tpl", "--applied-for", "CREATE_ON_PUSH",
        "--encryption-configuration", f"encryptionType=KMS,kmsKey={key_arn}",
    )["repositoryCreationTemplate"]
    assert template["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key_arn}
    image = build_image(tmp_path / "layout", "v1", "kms-template", [512 << 10])
    skopeo.copy(image.ref, f"docker://{soko.host}/e2e-tpl/app:v1")
    repo = aws.json("ecr", "describe-repositories", "--repository-names", "e2e-tpl/app")["repositories"][0]
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key_arn}
    _pull(skopeo, f"docker://{soko.host}/e2e-tpl/app:v1", image, tmp_path / "pulled")
    assert any(f"/keyed/kms/{key_id}/" in str(p) for p in _stored_files(soko.data_dir))
    _assert_not_in_plaintext(soko.data_dir, _layer(image))

    disabled = aws.json("kms", "create-key")["KeyMetadata"]
    aws.run("kms", "disable-key", "--key-id", disabled["KeyId"])
    err = _kms_error(aws, "ecr", "create-repository-creation-template", "--prefix", "e2e-off",
                     "--applied-for", "CREATE_ON_PUSH",
                     "--encryption-configuration", f"encryptionType=KMS,kmsKey={disabled['Arn']}")
    assert "KmsException" in err and "DisabledException" in err
    aws.run("kms", "disable-key", "--key-id", key_id)
    failed = skopeo.copy(image.ref, f"docker://{soko.host}/e2e-tpl/other:v1", check=False)
    assert failed.returncode != 0 and key_arn in failed.stderr, failed.stderr
    with pytest.raises(AwsCliError):
        aws.json("ecr", "describe-repositories", "--repository-names", "e2e-tpl/other")
    refused = _error(soko, "e2e-tpl/app", "manifests/v1")
    assert refused["code"] == "DENIED" and key_arn in refused["message"]
    aws.run("kms", "enable-key", "--key-id", key_id)
    _pull(skopeo, f"docker://{soko.host}/e2e-tpl/app:v1", image, tmp_path / "pulled-again")
