"""SBOMs from stored inventories: CycloneDX 1.6 and SPDX 2.3 JSON, each read back and validated by its own library,
every package with its purl, layer and path; attached beside the image as an OCI artifact that ListImageReferrers
and the /v2/ referrers API list; the CLI; an index, an artifact and an unknown format refused."""

from __future__ import annotations

import json

import pytest

from soko.cli import main
from soko.errors import SokoError
from soko.registry.models import RepoRef
from soko.scan.inventory import Inventories
from soko.scan.sbom import Sboms
from tests.scan.tars import gz, tar
from tests.scan.test_inventory import OS_RELEASE, push, stanza, status

LAYERS = [
    gz(tar([*OS_RELEASE, ("var/lib/dpkg/status", status(stanza("libc6", "2.36-9+deb12u4", source="glibc")))])),
    gz(tar([("usr/local/lib/python3.11/site-packages/urllib3-1.23.dist-info/METADATA",
             b"Name: urllib3\nVersion: 1.23\n"),
            ("usr/local/bundle/specifications/rack-2.2.4.gemspec", b's.name = "rack".freeze\ns.version = "2.2.4"\n'),
            ("app/node_modules/@babel/core/package.json", b'{"name": "@babel/core", "version": "7.0.0"}')])),
]


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'metadata.db'}"


def image(registry, ref: RepoRef) -> tuple[str, object]:
    digest = push(registry, LAYERS, "v1", ref=ref)
    [inv] = Inventories(registry).of(ref, digest)
    return digest, inv


def test_cyclonedx_document(registry):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ref = RepoRef("123456789012", "sbom/app")
    digest, inv = image(registry, ref)
    sbom = Sboms(registry).of(ref, "v1", "cyclonedx")
    assert sbom.image == digest and sbom.media_type == "application/vnd.cyclonedx+json" and sbom.referrer is None
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.document.decode()) is None
    doc = json.loads(sbom.document)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    subject = doc["metadata"]["component"]
    assert (subject["type"], subject["name"], subject["version"]) == ("container", "sbom/app", digest)
    libraries = {c["purl"]: c for c in doc["components"] if c["type"] == "library"}
    assert set(libraries) == {p.purl for p in inv.packages} and len(libraries) == 4
    libc = libraries["pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"]
    props = {p["name"]: p["value"] for p in libc["properties"]}
    assert props["soko:layer"] == inv.layers[0] and props["soko:path"] == "var/lib/dpkg/status"
    assert props["soko:source"] == "glibc 2.36-9+deb12u4"
    assert {p["name"]: p["value"] for p in libraries["pkg:gem/rack@2.2.4"]["properties"]}["soko:layer"] == inv.layers[1]
    [os_component] = [c for c in doc["components"] if c["type"] == "operating-system"]
    assert (os_component["name"], os_component["version"]) == ("debian", "12")
    [root] = [d for d in doc["dependencies"] if d["ref"] == subject["bom-ref"]]
    assert len(root["dependsOn"]) == 5


def test_spdx_document(registry, tmp_path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    ref = RepoRef("123456789012", "sbom/app")
    digest, inv = image(registry, ref)
    sbom = Sboms(registry).of(ref, f"sha256:{digest.split(':')[1]}", "spdx")
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(sbom.document)
    document = parse_file(str(path))  # read back by spdx-tools' own parser
    assert validate_full_spdx_document(document) == []
    assert document.creation_info.spdx_version == "SPDX-2.3"
    purls = {r.locator: p for p in document.packages for r in p.external_references if r.reference_type == "purl"}
    assert set(purls) == {p.purl for p in inv.packages}
    urllib3 = purls["pkg:pypi/urllib3@1.23"]
    assert (urllib3.name, urllib3.version) == ("urllib3", "1.23")
    assert urllib3.comment.startswith(f"layer {inv.layers[1]}; found in /usr/local/lib/python3.11/site-packages/")
    described = [r for r in document.relationships if r.relationship_type.name == "DESCRIBES"]
    assert [r.related_spdx_element_id for r in described] == ["SPDXRef-image"]
    contained = {r.related_spdx_element_id for r in document.relationships if r.relationship_type.name == "CONTAINS"}
    assert len(contained) == 5  # the OS and the four packages


def test_attached_as_a_referrer_found_by_list_image_referrers_and_the_referrers_api(server, aws, client, settings):
    registry = server.registry
    ref = RepoRef(settings.account_id, "sbom/attached")
    digest, _ = image(registry, ref)
    cdx = Sboms(registry).of(ref, "v1", "cyclonedx", attach=True)
    spdx = Sboms(registry).of(ref, "v1", "spdx", attach=True)
    referrers = aws("ecr").list_image_referrers(repositoryName=ref.name, subjectId={"imageDigest": digest})
    found = {r["artifactType"]: r for r in referrers["referrers"]}
    assert set(found) == {"application/vnd.cyclonedx+json", "application/spdx+json"}
    assert found["application/vnd.cyclonedx+json"]["digest"] == cdx.referrer
    response = client.get(f"/v2/{ref.name}/referrers/{digest}", params={"artifactType": "application/spdx+json"})
    assert response.status_code == 200
    [descriptor] = response.json()["manifests"]
    assert descriptor["digest"] == spdx.referrer
    manifest = client.get(f"/v2/{ref.name}/manifests/{spdx.referrer}",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["subject"]["digest"] == digest
    [layer] = manifest["layers"]
    blob = client.get(f"/v2/{ref.name}/blobs/{layer['digest']}")
    assert blob.content == spdx.document  # the document itself, as an OCI client pulls it


def test_cli_writes_the_document(settings, registry, tmp_path, capsys):
    ref = RepoRef(settings.account_id, "sbom/cli")
    digest, _ = image(registry, ref)
    common = ["--data-dir", str(settings.data_dir), "--database-url", settings.effective_database_url]
    out = tmp_path / "bom.json"
    assert main(["sbom", *common, f"{ref.name}:v1", "--format", "cyclonedx", "-o", str(out)]) == 0
    assert json.loads(out.read_bytes())["metadata"]["component"]["version"] == digest
    assert main(["sbom", *common, f"{ref.name}@{digest}", "--format", "spdx", "--attach"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["spdxVersion"] == "SPDX-2.3"
    assert f"attached to {digest} as sha256:" in captured.err
    assert main(["sbom", *common, f"{ref.name}:missing"]) == 1
    assert "missing" in capsys.readouterr().err


def test_refused_an_index_an_artifact_and_an_unknown_format(registry):

    ref = RepoRef("123456789012", "sbom/refused")
    digest = push(registry, LAYERS, "v1", ref=ref)
    sboms = Sboms(registry)
    with pytest.raises(SokoError, match="SBOM format 'swid' is not supported"):
        sboms.of(ref, "v1", "swid")
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    registry.manifests.put(ref, "multi", index, None)
    with pytest.raises(SokoError, match=f"is an image index.*{digest}"):
        sboms.of(ref, "multi", "spdx")
    artifact = push(registry, [b"not a layer"], "sbom", ref=ref, config_type="application/vnd.example.config",
                    media=["application/vnd.example.data"])
    with pytest.raises(SokoError, match="UNSUPPORTED_IMAGE"):
        sboms.of(ref, artifact, "cyclonedx")
