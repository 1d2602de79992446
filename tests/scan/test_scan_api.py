"""ECR's basic scanning through boto3 against a running Soko: StartImageScan queues a leased job that the server's
job runner runs; DescribeImageScanFindings, DescribeImages and the image_scan_complete waiter see the result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError, WaiterError

from soko.meta.schema import event_outbox, jobs
from soko.registry.images import encode_token
from soko.registry.models import RepoRef
from soko.scan.vulndb import records, store
from tests.scan.tars import gz, tar
from tests.scan.test_inventory import push, stanza, status

REF = RepoRef("000000000000", "scan/app")
DATA = Path(__file__).parent / "data"
FAST = {"Delay": 1, "MaxAttempts": 30}

DEBIAN = tar([
    ("etc/os-release", b'ID=debian\nVERSION_ID="12"\n'),
    ("var/lib/dpkg/status", status(stanza("perl-base", "5.36.0-7+deb12u1", source="perl"),
                                   stanza("libpam0g", "1.5.2-6+deb12u1", source="pam"),
                                   stanza("bash", "5.2.15-2+b2"))),
    ("usr/lib/python3/dist-packages/urllib3-1.23.dist-info/METADATA", b"Name: urllib3\nVersion: 1.23\n"),
])


def put_index(server, ref: RepoRef, tag: str, child: str) -> None:
    """An image index over one image manifest, tagged ``tag`` (scans refuse or skip indexes)."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child, "size": 1}]}
    server.registry.manifests.put(ref, tag, json.dumps(index).encode(), None)


@pytest.fixture
def ecr(aws):
    return aws("ecr")


@pytest.fixture
def advisories(server):
    store.import_advisories(server.registry.ctx.db, records.read_paths(
        [str(DATA / "Debian-12-changelog-derived.zip"), str(DATA / "osv")]))


def test_start_wait_describe_and_the_daily_quota(server, ecr, advisories):
    digest = push(server.registry, [gz(DEBIAN)], "v1", ref=REF)
    started = ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "v1"})
    assert started["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    assert started["imageScanStatus"]["status"] == "IN_PROGRESS"
    ecr.get_waiter("image_scan_complete").wait(repositoryName=REF.name, imageId={"imageTag": "v1"},
                                               WaiterConfig=FAST)
    out = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageDigest": digest})
    assert out["imageScanStatus"] == {"status": "COMPLETE", "description": "The scan was completed successfully."}
    findings = out["imageScanFindings"]["findings"]
    by_name = {(f["name"], {a["key"]: a["value"] for a in f["attributes"]}["package_name"]): f for f in findings}
    assert ("CVE-2024-22365", "libpam0g") in by_name and ("CVE-2026-8376", "perl-base") in by_name
    urllib3 = by_name[("CVE-2023-43804", "urllib3")]
    attributes = {a["key"]: a["value"] for a in urllib3["attributes"]}
    assert urllib3["severity"] == "HIGH" and attributes["CVSS3_SCORE"] == "8.1"
    assert attributes["package_version"] == "1.23" and attributes["CVSS3_VECTOR"].startswith("CVSS:3.1/")
    assert not any(p == "bash" for _, p in by_name)
    counts = out["imageScanFindings"]["findingSeverityCounts"]
    assert sum(counts.values()) == len(findings) and counts["HIGH"] >= 1

    page = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageTag": "v1"}, maxResults=2)
    assert len(page["imageScanFindings"]["findings"]) == 2 and page["nextToken"]
    rest = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageTag": "v1"},
                                            nextToken=page["nextToken"], maxResults=1000)
    assert page["imageScanFindings"]["findings"] + rest["imageScanFindings"]["findings"] == findings
    assert "nextToken" not in rest
    for forged in ("x", encode_token({"offset": -2}), encode_token({"offset": "2"}), encode_token({"offset": True})):
        with pytest.raises(ClientError) as exc:  # refused, not silently read as the first page
            ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageTag": "v1"}, nextToken=forged)
        assert exc.value.response["Error"]["Code"] == "InvalidParameterException", forged

    [detail] = ecr.describe_images(repositoryName=REF.name, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert detail["imageScanStatus"]["status"] == "COMPLETE"
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == counts

    with pytest.raises(ClientError) as exc:  # one scan per image per 24 hours
        ecr.start_image_scan(repositoryName=REF.name, imageId={"imageDigest": digest})
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"

    with server.registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == "scan")).scalar() == 0
        bodies = [json.loads(b) for b in conn.execute(
            sa.select(event_outbox.c.body).where(event_outbox.c.detail_type == "ECR Image Scan")).scalars()]
    assert [(b["source"], b["detail"]["scan-status"], b["detail"]["image-digest"], b["detail"]["image-tags"])
            for b in bodies] == [("aws.ecr", "COMPLETE", digest, ["v1"])]
    assert bodies[0]["detail"]["finding-severity-counts"] == counts
    assert bodies[0]["resources"] == [f"arn:aws:ecr:us-east-1:{REF.account_id}:repository/{REF.name}"]


def test_unsupported_failed_and_refused_images(server, ecr):
    artifact = push(server.registry, [b"{}"], "sbom", config_type="application/vnd.oci.empty.v1+json",
                    media=["application/spdx+json"], ref=REF)
    empty = push(server.registry, [tar([("hello.txt", b"hi")])], "empty", ref=REF)
    broken = push(server.registry, [b"\x1f\x8b\x08\x00 broken gzip" * 4], "broken", ref=REF)
    for tag in ("sbom", "empty", "broken"):
        ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": tag})
    with pytest.raises(WaiterError) as exc:  # FAILED is the waiter's failure state
        ecr.get_waiter("image_scan_complete").wait(repositoryName=REF.name, imageId={"imageDigest": broken},
                                                   WaiterConfig=FAST)
    assert "FAILED" in str(exc.value)
    out = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageTag": "broken"})
    assert out["imageScanStatus"]["description"].startswith("ScanFailed: a gzip layer is corrupt")
    assert "imageScanFindings" not in out
    for digest in (artifact, empty):
        [detail] = ecr.describe_images(repositoryName=REF.name, imageIds=[{"imageDigest": digest}])["imageDetails"]
        assert detail["imageScanStatus"]["status"] == "UNSUPPORTED_IMAGE", detail
        assert "imageScanFindingsSummary" not in detail
    put_index(server, REF, "multi", empty)
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "multi"})
    assert exc.value.response["Error"]["Code"] == "UnsupportedImageTypeException"
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "missing"})
    assert exc.value.response["Error"]["Code"] == "ImageNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName="scan/nope", imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_scan_on_push(server, ecr, advisories):
    """A repository created with scanOnPush scans each new image pushed into it (a job queued by the push's own
    transaction); a repository without it scans nothing; the push counts as the image's scan for the day."""
    ecr.create_repository(repositoryName="scan/onpush", imageScanningConfiguration={"scanOnPush": True})
    ecr.create_repository(repositoryName="scan/manual")
    onpush, manual = RepoRef(REF.account_id, "scan/onpush"), RepoRef(REF.account_id, "scan/manual")
    digest = push(server.registry, [gz(DEBIAN)], "v1", ref=onpush)
    push(server.registry, [gz(DEBIAN)], "v1", ref=manual)
    ecr.get_waiter("image_scan_complete").wait(repositoryName=onpush.name, imageId={"imageTag": "v1"},
                                               WaiterConfig=FAST)
    out = ecr.describe_image_scan_findings(repositoryName=onpush.name, imageId={"imageDigest": digest})
    assert out["imageScanFindings"]["findingSeverityCounts"]
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName=manual.name, imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "ScanNotFoundException"
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName=onpush.name, imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"
    config = ecr.batch_get_repository_scanning_configuration(repositoryNames=[onpush.name])
    assert config["scanningConfigurations"][0]["scanFrequency"] == "SCAN_ON_PUSH"
    # an index pushed into it is not scanned (its images are, as they are pushed)
    put_index(server, onpush, "multi", digest)
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName=onpush.name, imageId={"imageTag": "multi"})
    assert exc.value.response["Error"]["Code"] == "ScanNotFoundException"


def scan_status(ecr, repository: str, tag: str, wanted: str, *, name: str | None = None) -> dict:
    """DescribeImageScanFindings polled (every 0.2 s, for at most 60 s) until the status is ``wanted`` — and, with
    ``name``, until a finding of that name is present (or, for "-NAME", absent): the waiter cannot wait for
    ACTIVE, which is not one of its end states."""
    deadline = time.monotonic() + 60
    while True:
        try:
            out = ecr.describe_image_scan_findings(repositoryName=repository, imageId={"imageTag": tag},
                                                   maxResults=1000)
        except ClientError as exc:
            out = {"imageScanStatus": {"status": exc.response["Error"]["Code"]}}
        names = {f["title"].split(" - ")[0] for f in out.get("imageScanFindings", {}).get("enhancedFindings", [])}
        if out["imageScanStatus"]["status"] == wanted and (
                name is None or (name[1:] not in names if name.startswith("-") else name in names)):
            return out
        assert time.monotonic() < deadline, out["imageScanStatus"]
        time.sleep(0.2)


def test_enhanced_continuous_scanning(server, ecr, advisories, settings, capsys, tmp_path):
    """ENHANCED scanning with a CONTINUOUS_SCAN rule: a push is scanned (ACTIVE, enhancedFindings, an Inspector2
    Scan event); an advisory import re-matches the stored inventory — with the layers gone — so findings appear and
    disappear; StartImageScan is refused; a SCAN_ON_PUSH rule makes the scan COMPLETE (the waiter's end)."""
    from soko.cli import main
    from soko.storage.paths import blob_path

    continuous = {"filter": "scan/*", "filterType": "WILDCARD"}
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [continuous]}])
    ecr.create_repository(repositoryName="other/app", imageScanningConfiguration={"scanOnPush": True})
    digest = push(server.registry, [gz(DEBIAN)], "v1", ref=REF)
    push(server.registry, [gz(DEBIAN)], "v1", ref=RepoRef(REF.account_id, "other/app"))  # no rule: not scanned
    out = scan_status(ecr, REF.name, "v1", "ACTIVE")
    assert out["imageScanStatus"]["description"] == "Continuous scan is selected for image."
    assert "findings" not in out["imageScanFindings"]
    enhanced = out["imageScanFindings"]["enhancedFindings"]
    by_title = {f["title"]: f for f in enhanced}
    urllib3 = by_title["CVE-2023-43804 - urllib3"]
    manifest = json.loads(server.registry.manifests.get(REF, digest).payload)
    layer = manifest["layers"][0]["digest"]
    assert urllib3["status"] == "ACTIVE" and urllib3["type"] == "PACKAGE_VULNERABILITY"
    assert urllib3["severity"] == "HIGH" and urllib3["score"] == 8.1 and urllib3["fixAvailable"] == "YES"
    assert urllib3["awsAccountId"] == REF.account_id and urllib3["findingArn"].startswith(
        f"arn:aws:inspector2:us-east-1:{REF.account_id}:finding/")
    details = urllib3["packageVulnerabilityDetails"]
    assert details["vulnerabilityId"] == "CVE-2023-43804" and details["vendorSeverity"] == "HIGH"
    assert details["cvss"][0]["baseScore"] == 8.1 and details["cvss"][0]["scoringVector"].startswith("CVSS:3.1/")
    assert details["referenceUrls"] and details["source"] == "OSV"
    [package] = details["vulnerablePackages"]
    assert package["name"] == "urllib3" and package["version"] == "1.23" and package["packageManager"] == "PYTHONPKG"
    assert package["sourceLayerHash"] == layer and package["filePath"].endswith("METADATA")
    assert package["fixedInVersion"] and package["fixedInVersion"] != "NotAvailable"
    assert urllib3["remediation"]["recommendation"]["text"] == (
        f"Upgrade urllib3 to version {package['fixedInVersion']} or later.")
    assert urllib3["scoreDetails"]["cvss"]["score"] == 8.1
    [resource] = urllib3["resources"]
    assert resource["id"] == f"arn:aws:ecr:us-east-1:{REF.account_id}:repository/{REF.name}/{digest}"
    assert resource["type"] == "AWS_ECR_CONTAINER_IMAGE"
    image = resource["details"]["awsEcrContainerImage"]
    assert image["imageHash"] == digest and image["imageTags"] == ["v1"] and image["platform"] == "DEBIAN_12"
    perl = by_title["CVE-2026-8376 - perl-base"]["packageVulnerabilityDetails"]
    assert perl["source"] == "DEBIAN_CVE"
    assert perl["vulnerablePackages"][0]["packageManager"] == "OS"
    assert perl["vulnerablePackages"][0]["version"] == "5.36.0" and perl["vulnerablePackages"][0]["release"] == (
        "7+deb12u1")
    counts = out["imageScanFindings"]["findingSeverityCounts"]
    assert sum(counts.values()) == len(enhanced)
    [detail] = ecr.describe_images(repositoryName=REF.name, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert detail["imageScanStatus"]["status"] == "ACTIVE"
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == counts
    with pytest.raises(ClientError) as exc:  # ECR's basic scans only; the rules decide when enhanced ones run
        ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="other/app", imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "ScanNotFoundException"  # ENHANCED ignores scanOnPush

    # a new advisory: the stored inventory is matched again (the layer is gone: nothing is read from it)
    server.registry.ctx.storage.delete(blob_path(layer))
    record = {"id": "DEBIAN-CVE-2099-0001", "aliases": ["CVE-2099-0001"], "modified": "2026-12-01T00:00:00Z",
              "affected": [{"package": {"ecosystem": "Debian:12", "name": "bash"},
                            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "5.2.15-3"}]}]}]}
    (tmp_path / "new.json").write_text(json.dumps(record))
    common = ["--data-dir", str(settings.data_dir), "--database-url", settings.effective_database_url]
    assert main(["vulndb", "import", *common, str(tmp_path / "new.json")]) == 0
    assert "queued the rescan" in capsys.readouterr().out
    after = scan_status(ecr, REF.name, "v1", "ACTIVE", name="CVE-2099-0001")
    again = {f["title"]: f for f in after["imageScanFindings"]["enhancedFindings"]}
    assert len(again) == len(by_title) + 1
    assert again["CVE-2099-0001 - bash"]["packageVulnerabilityDetails"]["vulnerablePackages"][0][
        "fixedInVersion"] == "5.2.15-3"
    kept = again["CVE-2023-43804 - urllib3"]
    assert kept["findingArn"] == urllib3["findingArn"] and kept["firstObservedAt"] == urllib3["firstObservedAt"]
    # the advisory withdrawn: its finding disappears
    record["withdrawn"] = "2026-12-02T00:00:00Z"
    (tmp_path / "new.json").write_text(json.dumps(record))
    assert main(["vulndb", "import", *common, str(tmp_path / "new.json")]) == 0
    scan_status(ecr, REF.name, "v1", "ACTIVE", name="-CVE-2099-0001")

    # the repository moves to a SCAN_ON_PUSH rule: its scan is COMPLETE, which the waiter ends on
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [continuous]}])
    ecr.get_waiter("image_scan_complete").wait(repositoryName=REF.name, imageId={"imageTag": "v1"},
                                               WaiterConfig=FAST)
    with server.registry.ctx.db.read() as conn:
        bodies = [json.loads(b) for b in conn.execute(
            sa.select(event_outbox.c.body).where(event_outbox.c.detail_type == "Inspector2 Scan")).scalars()]
    arn = f"arn:aws:ecr:us-east-1:{REF.account_id}:repository/{REF.name}"
    assert [(b["source"], b["resources"], b["detail"]["scan-status"], b["detail"]["repository-name"],
             b["detail"]["image-digest"], b["detail"]["image-tags"]) for b in bodies] == [
        ("aws.inspector2", [arn], "INITIAL_SCAN_COMPLETE", arn, digest, ["v1"])]
    assert bodies[0]["detail"]["finding-severity-counts"]["TOTAL"] == len(enhanced)


def test_rules_apply_to_stored_images_and_basic_scans_stay(server, ecr, advisories):
    """A rule put after the push applies to the images already stored: a repository that becomes continuously
    scanned gets ENHANCED scans of its images (a basic one is replaced). A BASIC SCAN_ON_PUSH rule scans pushes into
    the repositories it matches."""
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "scan/a*", "filterType": "WILDCARD"}]}])
    digest = push(server.registry, [gz(DEBIAN)], "v1", ref=REF)
    push(server.registry, [gz(DEBIAN)], "v1", ref=RepoRef(REF.account_id, "scan/other"))
    ecr.get_waiter("image_scan_complete").wait(repositoryName=REF.name, imageId={"imageTag": "v1"},
                                               WaiterConfig=FAST)
    out = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageDigest": digest})
    assert out["imageScanFindings"]["findings"] and "enhancedFindings" not in out["imageScanFindings"]
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName="scan/other", imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "ScanNotFoundException"
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "other", "filterType": "WILDCARD"}]},
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "scan/app", "filterType": "WILDCARD"}]}])
    out = scan_status(ecr, "scan/other", "v1", "ACTIVE")
    assert out["imageScanFindings"]["enhancedFindings"]
    with server.registry.ctx.db.read() as conn:  # ECR's event for the frequencies the new rules changed
        [change] = [json.loads(b) for b in conn.execute(sa.select(event_outbox.c.body).where(
            event_outbox.c.detail_type == "ECR Scan Resource Change")).scalars()]
    other_arn = f"arn:aws:ecr:us-east-1:{REF.account_id}:repository/scan/other"
    assert change["source"] == "aws.ecr" and change["resources"] == [other_arn]
    assert change["detail"] == {"action-type": "SCAN_FREQUENCY_CHANGE", "resource-type": "REPOSITORY",
                                "scan-type": "ENHANCED", "repositories": [
                                    {"repository-name": "scan/other", "repository-arn": other_arn,
                                     "scan-frequency": "CONTINUOUS_SCAN", "previous-scan-frequency": "MANUAL"}]}
    # scan/app: its basic scan stays as it was (SCAN_ON_PUSH scans new pushes only)
    out = ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageDigest": digest})
    assert out["imageScanStatus"]["status"] == "COMPLETE" and out["imageScanFindings"]["findings"]
    # back to BASIC: the enhanced scan of scan/other's image does not count against the basic daily quota
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    assert ecr.start_image_scan(repositoryName="scan/other", imageId={"imageTag": "v1"})["imageScanStatus"][
        "status"] == "IN_PROGRESS"
    with pytest.raises(ClientError) as exc:
        ecr.start_image_scan(repositoryName="scan/other", imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"


def test_deleting_an_image_drops_its_scan(server, ecr, advisories):
    digest = push(server.registry, [gz(DEBIAN)], "v1", ref=REF)
    ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "v1"})
    ecr.get_waiter("image_scan_complete").wait(repositoryName=REF.name, imageId={"imageTag": "v1"},
                                               WaiterConfig=FAST)
    ecr.batch_delete_image(repositoryName=REF.name, imageIds=[{"imageDigest": digest}])
    push(server.registry, [gz(DEBIAN)], "v1", ref=REF)  # the same image again: no stale findings, no quota
    with pytest.raises(ClientError) as exc:
        ecr.describe_image_scan_findings(repositoryName=REF.name, imageId={"imageTag": "v1"})
    assert exc.value.response["Error"]["Code"] == "ScanNotFoundException"
    assert ecr.start_image_scan(repositoryName=REF.name, imageId={"imageTag": "v1"})["imageScanStatus"][
        "status"] == "IN_PROGRESS"


def test_scans_run_on_threads_of_lower_priority(registry):
    """Scans take the CPU that pushes and pulls leave: their threads' niceness is raised (the job runner's threads,
    shared with other kinds, keep theirs)."""
    import os
    import threading

    from soko.scan.scans import Scans

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = niceness()
    assert Scans(registry)._threads().submit(niceness).result() == min(mine + 10, 19)
    assert niceness() == mine
