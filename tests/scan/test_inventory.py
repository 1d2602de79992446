"""Inventories of images whose layers are written here: layering rules (whiteouts, opaque directories,
replacements), package databases rewritten by several layers, indexes, artifacts and hostile layers. Stored on
both databases."""

from __future__ import annotations

import hashlib
import json

from soko.registry.models import RepoRef
from soko.scan.inventory import COMPLETE, FAILED, UNSUPPORTED, Inventories
from soko.scan.limits import Limits
from tests.domain import push_blob
from tests.scan.tars import gz, tar, zst

REF = RepoRef("123456789012", "scan/synthetic")
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def push(registry, layers: list[bytes], tag: str | None = "latest", *, arch: str = "amd64",
         config_type: str = "application/vnd.oci.image.config.v1+json", media: list[str] | None = None,
         ref: RepoRef = REF) -> str:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode()
    descriptors = [{"mediaType": (media or [])[i] if media else OCI_LAYER + ("+gzip" if d[:2] == b"\x1f\x8b" else ""),
                    "digest": push_blob(registry, ref, d), "size": len(d)} for i, d in enumerate(layers)]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": config_type, "digest": push_blob(registry, ref, config), "size": len(config)},
                "layers": descriptors}
    if config_type != "application/vnd.oci.image.config.v1+json":
        manifest["artifactType"] = "application/vnd.example.sbom"
    payload = json.dumps(manifest).encode()
    digest = registry.manifests.put(ref, "sha256:" + hashlib.sha256(payload).hexdigest(), payload,
                                    None).digest
    if tag:
        registry.manifests.put(ref, tag, payload, None)
    return digest


def stanza(name: str, version: str, status: str = "install ok installed", source: str | None = None) -> str:
    text = f"Package: {name}\nStatus: {status}\nArchitecture: amd64\nVersion: {version}\n"
    if source:
        text += f"Source: {source}\n"
    return text + "Description: test\n multi-line\n"


def status(*stanzas: str) -> bytes:
    return "\n".join(stanzas).encode()


OS_RELEASE = [("usr/lib/os-release", b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
               b"VERSION_CODENAME=bookworm\n"), ("etc/os-release", "->../usr/lib/os-release")]


def packages(inv, kind: str) -> dict[str, object]:
    return {p.name: p for p in inv.packages if p.type == kind}


def test_dpkg_across_layers_keeps_the_adding_layer_and_drops_removed_packages(registry):
    base = tar([*OS_RELEASE, ("var/lib/dpkg/status", status(
        stanza("libc6", "2.36-9", source="glibc"), stanza("bash", "5.2-2"), stanza("old", "1.0")))])
    upgrade = tar([("var/lib/dpkg/status", status(  # bash upgraded, old removed but not purged, perl added
        stanza("libc6", "2.36-9", source="glibc"), stanza("bash", "5.2-3"),
        stanza("old", "1.0", "deinstall ok config-files"),
        stanza("perl-base", "5.36.0-7+deb12u1", source="perl (5.36.0-7+deb12u1)"),
        stanza("libpcre2-8-0", "10.42-1", source="pcre2 (10.42-0.1)")))])
    push(registry, [gz(base), zst(upgrade)])
    [inv] = Inventories(registry).of(REF, "latest")
    assert inv.status == COMPLETE and inv.platform == "linux/amd64"
    assert inv.os.id == "debian" and inv.os.version_id == "12"  # through the etc/os-release symlink
    debs = packages(inv, "deb")
    assert set(debs) == {"libc6", "bash", "perl-base", "libpcre2-8-0"}
    assert debs["libc6"].layer == inv.layers[0] and debs["bash"].layer == inv.layers[1]
    assert debs["perl-base"].layer == inv.layers[1]
    assert (debs["libpcre2-8-0"].source_name, debs["libpcre2-8-0"].source_version) == ("pcre2", "10.42-0.1")
    assert debs["libpcre2-8-0"].purl == (
        "pkg:deb/debian/libpcre2-8-0@10.42-1?arch=amd64&distro=debian-12&upstream=pcre2%4010.42-0.1")
    assert debs["bash"].purl == "pkg:deb/debian/bash@5.2-3?arch=amd64&distro=debian-12"


def test_whiteouts_opaque_directories_and_replacements(registry):
    lower = tar([*OS_RELEASE,
                 ("site/a-1.0.dist-info/METADATA", b"Name: a\nVersion: 1.0\n"),
                 ("site/b-1.0.dist-info/METADATA", b"Name: b\nVersion: 1.0\n"),
                 ("app/node_modules/x/package.json", b'{"name": "x", "version": "1.0.0"}'),
                 ("app/node_modules/y/package.json", b'{"name": "y", "version": "1.0.0"}'),
                 ("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\n")])
    upper = tar([("site/.wh.a-1.0.dist-info", b""),  # whiteout of a directory
                 ("app/node_modules/.wh..wh..opq", b""),  # opaque: x and y go, z is this layer's
                 ("app/node_modules/z/package.json", b'{"name": "z", "version": "2.0.0"}'),
                 ("lib/apk", b"not a directory any more"),  # a file where a directory was
                 ("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.3\n")])  # a file replaces the symlink
    push(registry, [gz(lower), tar([("unrelated", b"x")], trailer=False), gz(upper)])
    [inv] = Inventories(registry).of(REF, "latest")
    assert set(packages(inv, "pypi")) == {"b"}
    assert set(packages(inv, "npm")) == {"z"} and packages(inv, "npm")["z"].layer == inv.layers[2]
    assert packages(inv, "apk") == {}
    assert (inv.os.id, inv.os.version_id) == ("alpine", "3.20.3")


def test_whiteout_in_the_same_layer_spares_that_layers_entries(registry):
    """A whiteout hides the layers below, never its own layer's entries, whatever their order in the tar."""
    lower = tar([("s/m-1.dist-info/METADATA", b"Name: m\nVersion: 1\n")])
    upper = tar([("s/m-1.dist-info/METADATA", b"Name: m\nVersion: 1\n"), ("s/.wh.m-1.dist-info", b"")])
    push(registry, [lower, upper])
    [inv] = Inventories(registry).of(REF, "latest")
    assert packages(inv, "pypi")["m"].layer == inv.layers[1]


def test_alpine_distroless_and_python_owned_by_debian(registry):
    layer = tar([
        ("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.3\n"),
        ("lib/apk/db/installed", b"C:Q1\nP:libcrypto3\nV:3.3.2-r0\nA:x86_64\no:openssl\nL:Apache-2.0\n\n"
                                 b"P:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n"),
        ("var/lib/dpkg/status.d/tzdata", stanza("tzdata", "2024a-0+deb12u1").encode()),
        ("var/lib/dpkg/status.d/tzdata.md5sums", b"0123  usr/share/zoneinfo/UTC\n"),
        ("var/lib/dpkg/status.d/python3-six", stanza("python3-six", "1.16.0-4", source="six").encode()),
        ("var/lib/dpkg/info/python3-six.list", b"/.\n/usr/lib/python3/dist-packages/six-1.16.0.egg-info\n"
                                               b"/usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO\n"),
        ("usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO", b"Name: six\nVersion: 1.16.0\n"),
        ("usr/lib/python3/dist-packages/Flask_Thing-2.0.egg-info", b"Metadata-Version: 1.1\nName: Flask_Thing\n"
                                                                   b"Version: 2.0\n"),
    ])
    push(registry, [zst(layer)])
    [inv] = Inventories(registry).of(REF, "latest")
    apks = packages(inv, "apk")
    assert apks["libcrypto3"].source_name == "openssl"
    assert apks["libcrypto3"].purl == (
        "pkg:apk/alpine/libcrypto3@3.3.2-r0?arch=x86_64&distro=alpine-3.20.3&upstream=openssl")
    assert set(packages(inv, "deb")) == {"tzdata", "python3-six"}
    pypi = packages(inv, "pypi")
    assert set(pypi) == {"Flask_Thing"}  # six's metadata belongs to python3-six: reported once, as the deb
    assert pypi["Flask_Thing"].purl == "pkg:pypi/flask-thing@2.0"


def test_index_children_each_and_attestations_skipped(registry):
    amd = push(registry, [tar([("etc/os-release", b"ID=debian\nVERSION_ID=12\n")])], None)
    arm = push(registry, [tar([("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.0\n")])], None, arch="arm64")
    att = push(registry, [tar([("x", b"y")])], None, arch="unknown")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1,
         "platform": {"os": "linux" if p != "unknown" else "unknown", "architecture": p}}
        for d, p in ((amd, "amd64"), (arm, "arm64"), (att, "unknown"))]}
    payload = json.dumps(index).encode()
    # the sizes in the index are not checked by the domain against the children; the scanner never uses them
    registry.manifests.put(REF, "multi", payload, None)
    invs = Inventories(registry).of(REF, "multi")
    assert [(i.digest, i.platform, i.os.id) for i in invs] == [
        (amd, "linux/amd64", "debian"), (arm, "linux/arm64", "alpine")]


def test_artifacts_are_unsupported_and_hostile_layers_fail_with_a_reason(registry):
    artifact = push(registry, [b"{}"], "sbom", config_type="application/vnd.oci.empty.v1+json",
                    media=["application/spdx+json"])
    [inv] = Inventories(registry).of(REF, artifact)
    assert inv.status == UNSUPPORTED and "artifact" in inv.reason
    bomb = push(registry, [gz(tar([("big", bytes(4 << 20))]))], "bomb")
    [inv] = Inventories(registry, Limits(layer_bytes=1 << 20)).of(REF, bomb)
    assert inv.status == FAILED and "decompresses to more than 1048576 bytes" in inv.reason
    stored = Inventories(registry).stored(bomb)
    assert stored == inv  # deterministic: stored, not retried
    huge = push(registry, [tar([("var/lib/dpkg/status", bytes(3 << 20))])], "huge")
    [inv] = Inventories(registry, Limits(file_bytes=1 << 20)).of(REF, huge)
    assert inv.status == FAILED and "var/lib/dpkg/status is 3145728 bytes" in inv.reason
    junk = push(registry, [b"\x1f\x8b\x08\x00not gzip at all" * 10], "junk")
    [inv] = Inventories(registry).of(REF, junk)
    assert inv.status == FAILED and "gzip" in inv.reason


def test_symlink_tricks(registry):
    layer = tar([
        ("etc/os-release", "->os-release"),  # a loop
        ("usr/lib/os-release", "->../../../../../etc/shadow"),  # out of the root: stays inside, finds nothing
        ("var/lib/dpkg/status", "->/var/lib/dpkg/status"),
        ("lib/apk/db/installed", "=>nonexistent"),  # a hard link to nothing collected
        ("site/h-1.dist-info/METADATA", "=>site/g-1.dist-info/METADATA"),  # before its target: ignored
        ("site/g-1.dist-info/METADATA", b"Name: g\nVersion: 1\n"),
        ("site/i-1.dist-info/METADATA", "=>site/g-1.dist-info/METADATA"),
        ("site/k-1.dist-info/METADATA", b"Name: k\nVersion: 1\xff\n"),  # not UTF-8: read, not a crash
    ])
    push(registry, [layer])
    [inv] = Inventories(registry).of(REF, "latest")
    assert inv.status == COMPLETE and inv.os is None
    assert sorted((p.name, p.path) for p in inv.packages) == [
        ("g", "site/g-1.dist-info/METADATA"), ("g", "site/i-1.dist-info/METADATA"),
        ("k", "site/k-1.dist-info/METADATA")]


def test_go_build_info_of_a_hand_made_binary(registry):
    """The inline (Go 1.18+) format: header, then varint-prefixed version and module information."""
    modinfo = (b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6"
               b"path\texample.com/x\nmod\texample.com/x\tv1.0.0\th1:abc=\n"
               b"dep\tgithub.com/a/b\tv0.1.0\th1:x=\n=>\tgithub.com/fork/b\tv0.1.1\th1:y=\n"
               b"dep\tgolang.org/x/net\tv0.0.1\th1:z=\n=>\t../net\n"
               b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2")
    version = b"go1.22.5"
    header = b"\xff Go buildinf:" + bytes([8, 2]) + bytes(16)
    blob = header + bytes([len(version)]) + version + bytes([len(modinfo) & 0x7F | 0x80, len(modinfo) >> 7]) + modinfo
    binary = b"\x7fELF" + bytes(131072 - 4) + blob + bytes(1000)
    shared = b"\x7fELF" + bytes(131072 - 4) + blob  # not executable: not searched
    misaligned = b"\x7fELF" + bytes(131072 - 3) + blob  # the magic off its 16-byte alignment: not build info
    push(registry, [tar([("bin/x", binary, 0o755), ("lib/x.so", shared, 0o644), ("bin/y", misaligned, 0o755)])])
    [inv] = Inventories(registry).of(REF, "latest")
    assert sorted((p.name, p.version, p.path) for p in inv.packages) == [
        ("example.com/x", "v1.0.0", "bin/x"), ("github.com/fork/b", "v0.1.1", "bin/x"),
        ("golang.org/x/net", "(devel)", "bin/x"), ("stdlib", "1.22.5", "bin/x")]
    assert {p.purl for p in inv.packages} >= {"pkg:golang/github.com/fork/b@v0.1.1", "pkg:golang/stdlib@1.22.5"}


def test_an_inventory_lives_as_long_as_a_repository_holds_its_image(registry):
    """Inventories are keyed by digest alone, shared by every repository holding the image: deleting the image from
    one repository keeps it, deleting it from the last one (or deleting that repository) drops it in the same
    transaction, and a re-push is inventoried afresh."""
    other = RepoRef(REF.account_id, "scan/other")
    layer = gz(tar([*OS_RELEASE, ("var/lib/dpkg/status", status(stanza("bash", "5.2-2")))]))
    digest = push(registry, [layer], "v1")
    push(registry, [layer], "v1", ref=other)
    inventories = Inventories(registry)
    assert inventories.image(REF, digest).status == COMPLETE
    assert inventories.stored(digest) is not None

    registry.manifests.delete(REF, "v1", drop_untagged=True)  # BatchDeleteImage by its last tag
    assert inventories.stored(digest) is not None  # still in scan/other
    registry.manifests.delete(other, digest)
    assert inventories.stored(digest) is None
    push(registry, [layer], "v1")
    built = inventories.image(REF, digest)
    assert built.status == COMPLETE and "bash" in packages(built, "deb")
    registry.manifests.delete(REF, digest)
    inventories._store(built)  # a scan that read the image before it went stores nothing
    assert inventories.stored(digest) is None

    push(registry, [layer], "v1")
    push(registry, [layer], "v1", ref=other)
    inventories.image(REF, digest)
    registry.repositories.delete(REF, force=True)
    assert inventories.stored(digest) is not None  # scan/other still holds it
    registry.repositories.delete(other, force=True)
    assert inventories.stored(digest) is None


def test_deleting_a_repository_drops_its_queued_scan_jobs(registry):
    """A scan job is keyed by its scan's id (no foreign key): a repository deleted before its queued scan ran must
    take the job along, else the job row would outlive its scan for good."""
    import sqlalchemy as sa

    from soko.meta.schema import jobs
    from soko.scan.scans import KIND, Scans

    other = RepoRef(REF.account_id, "scan/kept")
    layer = gz(tar([*OS_RELEASE, ("var/lib/dpkg/status", status(stanza("bash", "5.2-2")))]))
    push(registry, [layer], "v1")
    push(registry, [layer], "v1", ref=other)
    scans = Scans(registry)
    scans.start(REF, {"imageTag": "v1"})
    scans.start(other, {"imageTag": "v1"})
    count = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == KIND)
    with registry.ctx.db.read() as conn:
        assert conn.execute(count).scalar() == 2
    registry.repositories.delete(REF, force=True)
    with registry.ctx.db.read() as conn:
        assert conn.execute(count).scalar() == 1  # the other repository's job stays


def test_a_scan_that_keeps_failing_ends_failed_with_its_reason(registry):
    """An unforeseen error (here: the layer gone from storage) is retried with the runner's backoff, and after
    MAX_ATTEMPTS failed runs in a row the scan is FAILED with the reason, never IN_PROGRESS for good."""
    import pytest
    import sqlalchemy as sa

    from soko.meta.schema import jobs
    from soko.scan.scans import KIND, MAX_ATTEMPTS, Scans

    layer = gz(tar([*OS_RELEASE, ("var/lib/dpkg/status", status(stanza("bash", "5.2-2")))]))
    push(registry, [layer], "v1")
    registry.ctx.storage.delete(f"blobs/sha256/{hashlib.sha256(layer).hexdigest()[:2]}/"
                                f"{hashlib.sha256(layer).hexdigest()}")
    scans = Scans(registry)
    scans.start(REF, {"imageTag": "v1"})
    with registry.ctx.db.read() as conn:
        key = conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).scalar_one()
    with pytest.raises(Exception) as first:  # whatever the fault raises: the runner retries it
        scans.run(key)
    assert "FAILED" not in str(first.value)
    with registry.ctx.db.write() as conn:  # as the runner counts failed runs in a row
        conn.execute(sa.update(jobs).where(jobs.c.kind == KIND, jobs.c.key == key).values(attempts=MAX_ATTEMPTS - 1))
    assert "FAILED" in scans.run(key)
    digest = registry.manifests.get(REF, "v1").digest
    scan = scans.get(REF, digest)
    assert scan is not None and scan.status == "FAILED"
    assert scan.description.startswith("ScanFailed: ") and f"after {MAX_ATTEMPTS} attempts" in scan.description
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).first() is None


def test_a_scan_requested_again_while_it_runs_is_not_lost(registry):
    """A scan requested again while its job runs (here ENHANCED, as a change of the registry's scanning rules
    queues it) finds the job row there and keeps it; the running scan then wrote its result over the new request
    and deleted that job row, so the new scan never ran and the image showed the old run's findings as the new
    scan's. The old run's result is dropped now; the job runs again for the new request."""
    import sqlalchemy as sa

    from soko.kernel import scan_queue
    from soko.meta.schema import image_scans, jobs
    from soko.scan.scans import KIND, Scans
    from tests.races import interleaved

    layer = gz(tar([*OS_RELEASE, ("var/lib/dpkg/status", status(stanza("bash", "5.2-2")))]))
    digest = push(registry, [layer], "v1")
    scans = Scans(registry)
    scans.start(REF, {"imageTag": "v1"})
    with registry.ctx.db.read() as conn:
        key = conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).scalar_one()
        repo_id = conn.execute(sa.select(image_scans.c.repository_id)).scalar_one()

    def request_again() -> None:
        with registry.ctx.transaction() as tx:
            assert scan_queue.request(tx, repo_id, digest, "ENHANCED")

    interleaved(registry.ctx.db.engine, "UPDATE image_scans", lambda: scans._run(key), request_again)
    scan = scans.get(REF, digest)
    assert scan is not None and (scan.status, scan.scan_type) == ("IN_PROGRESS", "ENHANCED")
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).scalar_one() == key
    scans._run(key)  # the job runs again: the enhanced scan completes
    scan = scans.get(REF, digest)
    assert scan is not None and (scan.status, scan.scan_type) == ("COMPLETE", "ENHANCED")
