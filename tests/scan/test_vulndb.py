"""Advisory imports (OSV files, directories, all.zip; Alpine secdb) and matching stored inventories: aliases
merged into one finding, withdrawn records ignored, severities from CVSS vectors. On both databases."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from soko.cli import main
from soko.registry.models import RepoRef
from soko.scan.inventory import Inventories
from soko.scan.vulndb import matcher, records, store
from tests.scan.tars import tar
from tests.scan.test_inventory import push, stanza, status

DATA = Path(__file__).parent / "data"
REF = RepoRef("123456789012", "scan/synthetic")

GHSA = {  # a GitHub advisory naming the same CVE as PYSEC-2018-28, with a CVSS v3 vector
    "id": "GHSA-x84v-xcm2-53pg", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2018-18074"],
    "summary": "Insufficiently Protected Credentials in Requests",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}],
    "affected": [{"package": {"ecosystem": "PyPI", "name": "Requests"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}]}],
    "references": [{"type": "ADVISORY", "url": "https://github.com/advisories/GHSA-x84v-xcm2-53pg"}],
}


@pytest.fixture
def advisories(tmp_path) -> Path:
    """The sample copied: PyPI records as a directory, Go records as an all.zip, Debian's zip, Alpine's YAML."""
    root = tmp_path / "advisories"
    shutil.copytree(DATA / "osv" / "PyPI", root / "pypi")
    (root / "pypi" / "GHSA-x84v-xcm2-53pg.json").write_text(json.dumps(GHSA))
    with zipfile.ZipFile(root / "Go-all.zip", "w") as archive:
        for path in sorted((DATA / "osv" / "Go").glob("*.json")):
            archive.write(path, path.name)
    shutil.copy(DATA / "Debian-12-changelog-derived.zip", root)
    shutil.copytree(DATA / "alpine", root / "alpine")
    return root


def test_import_counts_and_status_and_reimport_replaces(registry, advisories):
    db = registry.ctx.db
    first = store.import_advisories(db, records.read_paths([str(advisories)]))
    assert (first.records, first.withdrawn) == (5 + 3 + 27 + 1124, 1)
    rows = {s.source: s for s in store.status(db)}
    assert {k: (v.records, v.withdrawn) for k, v in rows.items()} == {
        "alpine-secdb": (1124, 0), "osv:Debian": (27, 0), "osv:Go": (3, 0), "osv:PyPI": (5, 1)}
    assert rows["osv:Go"].newest_modified is None  # the Go dump's 0001-01-01 means "not recorded"
    assert rows["osv:PyPI"].newest_modified is not None
    packages_before = first.packages
    again = store.import_advisories(db, records.read_paths([str(advisories)]))
    assert again.packages == packages_before
    assert {s.source: s.records for s in store.status(db)} == {k: v.records for k, v in rows.items()}


def test_findings_merge_aliases_skip_withdrawn_and_take_cvss_severity(registry, advisories):
    store.import_advisories(registry.ctx.db, records.read_paths([str(advisories)]))
    site = "usr/lib/python3/site-packages"
    push(registry, [tar([
        (f"{site}/requests-2.19.1.dist-info/METADATA", b"Name: requests\nVersion: 2.19.1\n"),
        (f"{site}/urllib3-1.23.dist-info/METADATA", b"Name: urllib3\nVersion: 1.23\n"),
        (f"{site}/py-1.11.0.dist-info/METADATA", b"Name: py\nVersion: 1.11.0\n"),  # last_affected 1.11.0
        (f"{site}/arrayfire-3.5.0.dist-info/METADATA", b"Name: arrayfire\nVersion: 3.5.0\n"),  # withdrawn
        (f"{site}/requests-2.31.0.dist-info/METADATA", b"Name: requests\nVersion: 2.31.0\n"),  # fixed
    ])])
    [inv] = Inventories(registry).of(REF, "latest")
    findings = matcher.match(registry.ctx.db, inv)
    got = {(f.name, f.package.name, f.package.version): f for f in findings}
    assert set(got) == {("CVE-2018-18074", "requests", "2.19.1"), ("CVE-2023-43804", "urllib3", "1.23"),
                        ("CVE-2022-42969", "py", "1.11.0")}
    merged = got[("CVE-2018-18074", "requests", "2.19.1")]
    assert merged.advisory_ids == ["GHSA-x84v-xcm2-53pg", "PYSEC-2018-28"]  # one finding for both
    assert (merged.severity, merged.cvss3_score) == ("HIGH", 7.5)  # from the GHSA's vector
    assert merged.uri == "https://github.com/advisories/GHSA-x84v-xcm2-53pg"
    urllib3 = got[("CVE-2023-43804", "urllib3", "1.23")]
    assert (urllib3.severity, urllib3.cvss3_score) == ("HIGH", 8.1)
    assert urllib3.cvss3_vector.startswith("CVSS:3.1/")
    assert got[("CVE-2022-42969", "py", "1.11.0")].severity == "UNDEFINED"  # the record has no vector


def test_debian_and_alpine_match_by_source_package(registry, advisories):
    store.import_advisories(registry.ctx.db, records.read_paths([str(advisories)]))
    push(registry, [tar([
        ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
        ("var/lib/dpkg/status", status(
            stanza("libpam0g", "1.5.2-6+deb12u1", source="pam"),  # fixed in 1.5.2-6+deb12u3 (source version)
            stanza("perl-base", "5.36.0-7+deb12u3", source="perl"),
            stanza("libpam-modules", "1.5.2-6+deb12u3", source="pam"))),  # fixed
    ])], "deb")
    [inv] = Inventories(registry).of(REF, "deb")
    names = {(f.name, f.package.name) for f in matcher.match(registry.ctx.db, inv)}
    assert ("CVE-2024-22365", "libpam0g") in names
    assert not any(p == "libpam-modules" for _, p in names)
    assert ("CVE-2026-8376", "perl-base") in names
    push(registry, [tar([
        ("etc/os-release", b"ID=alpine\nVERSION_ID=3.11.6\n"),
        ("lib/apk/db/installed", b"P:libssl1.1\nV:1.1.1d-r2\nA:x86_64\no:openssl\n\n"
                                 b"P:libcrypto1.1\nV:1.1.1d-r3\nA:x86_64\no:openssl\n"),
    ])], "alpine")
    [inv] = Inventories(registry).of(REF, "alpine")
    names = {(f.name, f.package.name) for f in matcher.match(registry.ctx.db, inv)}
    assert names == {("CVE-2019-1551", "libssl1.1")}  # fixed in openssl 1.1.1d-r3, keyed by origin


def test_cli_import_status_and_scan(settings, registry, advisories, capsys):
    common = ["--data-dir", str(settings.data_dir), "--database-url", settings.effective_database_url]
    assert main(["vulndb", "import", *common, str(advisories / "pypi"), str(advisories / "Go-all.zip")]) == 0
    assert "imported 8 advisories (1 withdrawn" in capsys.readouterr().out
    assert main(["vulndb", "status", *common, "--format", "json"]) == 0
    assert {r["source"] for r in json.loads(capsys.readouterr().out)} == {"osv:Go", "osv:PyPI"}
    push(registry, [tar([("s/requests-2.19.1.dist-info/METADATA", b"Name: requests\nVersion: 2.19.1\n")])], "app")
    assert main(["scan", *common, "--account", REF.account_id, f"{REF.name}:app", "--format", "json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in result["findings"]] == ["CVE-2018-18074"]
    assert main(["vulndb", "import", *common, str(advisories / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (advisories / "bad.json").write_text("{not json")
    assert main(["vulndb", "import", *common, str(advisories / "bad.json")]) == 2
    assert "neither JSON nor YAML" in capsys.readouterr().err


def test_malformed_advisory_files_and_upstream_ids(tmp_path):
    """Fields of the wrong type are skipped (a string is not read as a list of characters), nesting that would
    exhaust the parser's recursion is refused with a clear error: never a traceback from `soko vulndb import`."""
    secdb = "distroversion: v3.20\npackages:\n- pkg: {name: a, secfixes: [1, 2]}\n" \
            "- pkg: {name: b, secfixes: {1.0-r0: ['', '  ']}}\n- pkg: {name: c, secfixes: {1.0-r0: CVE-2020-1}}\n"
    (tmp_path / "secdb.yaml").write_text(secdb)
    assert list(records.read_paths([str(tmp_path / "secdb.yaml")])) == []
    (tmp_path / "osv.json").write_text(json.dumps({"id": "X", "aliases": "CVE-2020-1", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "a"}, "versions": "1.0", "ranges": "abc"}]}))
    [advisory] = records.read_paths([str(tmp_path / "osv.json")])
    assert advisory.aliases == [] and (advisory.affected[0].versions, advisory.affected[0].ranges) == ([], [])
    # osv.dev's distribution records name their CVE in `upstream`: one upstream id is the finding's name
    (tmp_path / "debian.json").write_text(json.dumps({"id": "DEBIAN-CVE-2024-22365", "upstream": ["CVE-2024-22365"]}))
    (tmp_path / "dsa.json").write_text(json.dumps({"id": "DSA-1-1", "upstream": ["CVE-2024-1", "CVE-2024-2"]}))
    assert [(a.aliases, a.uri) for a in records.read_paths([str(tmp_path / "debian.json"), str(tmp_path / "dsa.json")])
            ] == [(["CVE-2024-22365"], "https://nvd.nist.gov/vuln/detail/CVE-2024-22365"),
                  ([], "https://osv.dev/vulnerability/DSA-1-1")]
    for name, text in (("deep.json", "[" * 100_000 + "]" * 100_000), ("deep.yaml", "a: " + "[" * 50_000)):
        (tmp_path / name).write_text(text)
        with pytest.raises(records.AdvisoryFileInvalid, match="nested too deeply"):
            list(records.read_paths([str(tmp_path / name)]))
