"""rpm, Ruby and Rust catalogers on layers written here: a real RPM SQLite database (Debian's ``rpm``), gemspecs,
Cargo.lock and cargo-auditable data in an executable; older rpm databases, hostile headers and inflation bombs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soko.scan import bdb, rust
from soko.scan.catalogers import cargo, gem, npm, rpm
from soko.scan.inventory import COMPLETE, Inventories
from tests.scan import images
from tests.scan.tars import gz, tar
from tests.scan.test_inventory import OS_RELEASE, push

REF = images.RepoRef("123456789012", "scan/catalogers")
ROCKY = [("etc/os-release", b'ID="rocky"\nVERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n')]


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'metadata.db'}"


def inventory(registry, layers: list[bytes]):
    push(registry, layers, ref=REF)
    [inv] = Inventories(registry).of(REF, "latest")
    assert inv.status == COMPLETE, inv.reason
    return inv


def of_type(inv, kind: str) -> dict:
    return {p.name: p for p in inv.packages if p.type == kind}


needs_rpm = pytest.mark.skipif(not os.environ.get("CI") and not shutil.which("rpmbuild"),
                               reason="needs Debian's rpm (scripts/bootstrap.sh --test installs it)")


@needs_rpm
def test_rpm_sqlite_database_across_layers(registry):
    roots = images.rpm_roots()
    one = (roots / "one/var/lib/rpm/rpmdb.sqlite").read_bytes()
    two = (roots / "two/var/lib/rpm/rpmdb.sqlite").read_bytes()
    # Fedora 36+ keeps the database in /usr/lib/sysimage/rpm with /var/lib/rpm a link to it
    inv = inventory(registry, [
        gz(tar([*ROCKY, ("usr/lib/sysimage/rpm/rpmdb.sqlite", one), ("var/lib/rpm", "->../../usr/lib/sysimage/rpm")])),
        gz(tar([("usr/lib/sysimage/rpm/rpmdb.sqlite", two)])),
    ])
    rpms = of_type(inv, "rpm")
    assert set(rpms) == {"hello-soko", "hello-soko-libs"}
    hello, libs = rpms["hello-soko"], rpms["hello-soko-libs"]
    assert (hello.version, hello.arch, hello.layer) == ("2:1.2.3-4.el9", "x86_64", inv.layers[0])
    assert libs.layer == inv.layers[1]  # the layer that added it, not the one that first wrote the database
    assert (libs.source_name, libs.source_version) == ("hello-soko", "2:1.2.3-4.el9")
    assert libs.purl == ("pkg:rpm/rocky/hello-soko-libs@1.2.3-4.el9?arch=x86_64&distro=rocky-9.3&epoch=2"
                         "&upstream=hello-soko-1.2.3-4.el9.src.rpm")
    assert hello.purl == "pkg:rpm/rocky/hello-soko@1.2.3-4.el9?arch=x86_64&distro=rocky-9.3&epoch=2"
    assert inv.notes == []


@needs_rpm
def test_rpm_berkeley_db_as_rpm_reads_it(registry):
    root = images.rpm_bdb_root()
    listed = images.run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--define", "_db_backend bdb_ro", "-qa",
                        "--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE}\\n").stdout.split("\n")
    inv = inventory(registry, [gz(tar([("etc/os-release", b'ID="centos"\nVERSION_ID="7"\n'),
                                       ("var/lib/rpm/Packages", (root / "var/lib/rpm/Packages").read_bytes())]))])
    rpms = of_type(inv, "rpm")
    assert {f"{p.name} {p.version}" for p in rpms.values()} == {line for line in listed if line}
    assert rpms["hello-soko-libs"].purl == (
        "pkg:rpm/centos/hello-soko-libs@1.2.3-4.el9?arch=x86_64&distro=centos-7&epoch=2"
        "&upstream=hello-soko-1.2.3-4.el9.src.rpm")
    assert inv.notes == []


@needs_rpm
def test_hostile_berkeley_db_files():
    data = bytearray((images.rpm_bdb_root() / "var/lib/rpm/Packages").read_bytes())
    page_size = struct.unpack_from("<I", data, 20)[0]
    assert len(list(bdb.values(bytes(data)))) == 2
    for cut in (600, page_size + 30, len(data) - 1):
        assert len(list(bdb.values(bytes(data[:cut] + bytes(max(0, 512 - cut)))))) <= 2  # truncated: fewer or none
    for bad in (b"\0" * 4096, b"\0" * 100):
        with pytest.raises(bdb.NotBerkeleyDB):
            list(bdb.values(bad))
    looped = bytearray(data)
    for number in range(1, len(data) // page_size):  # every overflow page's next page: itself
        at = number * page_size
        if looped[at + 25] == 7:
            struct.pack_into("<I", looped, at + 16, number)
            struct.pack_into("<H", looped, at + 22, 4)
    assert list(bdb.values(bytes(looped))) == []
    garbage = bytes(data[:page_size]) + os.urandom(page_size * 8)
    assert len(list(bdb.values(garbage))) < 50


def test_berkeley_db_values_sharing_one_overflow_chain_stay_within_the_file_size():
    meta = bytearray(512)
    struct.pack_into("<I", meta, 12, bdb.MAGIC)
    struct.pack_into("<I", meta, 20, 512)
    struct.pack_into("<I", meta, 32, 2)
    page = bytearray(512)
    page[25] = 13  # a hash page of 20 key/value pairs, every value off-page on page 2 (400 bytes)
    offsets, end = [], 512
    for _ in range(20):
        end -= 2
        page[end:end + 2] = b"\x01k"
        offsets.append(end)
        end -= 12
        page[end] = 3
        struct.pack_into("<II", page, end + 4, 2, 400)
        offsets.append(end)
    struct.pack_into("<H", page, 20, len(offsets))
    for i, offset in enumerate(offsets):
        struct.pack_into("<H", page, 26 + 2 * i, offset)
    overflow = bytearray(512)
    overflow[25] = 7
    struct.pack_into("<H", overflow, 22, 400)
    found = list(bdb.values(bytes(meta + page + overflow)))
    assert 1 <= len(found) <= 3 and sum(map(len, found)) <= 3 * 512  # not 20 x 400 bytes


def test_ndb_rpm_database_is_named_not_read(registry):
    inv = inventory(registry, [gz(tar([("usr/lib/sysimage/rpm/Packages.db", b"\0" * 64)]))])
    assert of_type(inv, "rpm") == {}
    assert len(inv.notes) == 1 and "usr/lib/sysimage/rpm/Packages.db" in inv.notes[0] and "NDB" in inv.notes[0]
    # a whiteout removes it as any file
    inv = inventory(registry, [gz(tar([("var/lib/rpm/Packages.db", b"x")])),
                               gz(tar([("var/lib/rpm/.wh.Packages.db", b"")]))])
    assert inv.notes == []
    inv = inventory(registry, [gz(tar([("var/lib/rpm/Packages", b"\0" * 4096)]))])  # not a Berkeley DB: nothing
    assert of_type(inv, "rpm") == {} and inv.notes == []


def _blob(entries: list[tuple[int, int, int, int]], store: bytes) -> bytes:
    return struct.pack(">II", len(entries), len(store)) + b"".join(struct.pack(">IIiI", *e) for e in entries) + store


def test_hostile_rpm_headers_and_databases(registry, tmp_path):
    store = b"evil\0" + b"1.0\0"
    assert rpm.header(_blob([(rpm.NAME, 6, 0, 1), (rpm.VERSION, 6, 5, 1)], store)) == {
        rpm.NAME: "evil", rpm.VERSION: "1.0"}
    assert rpm.header(_blob([(rpm.NAME, 6, 0, 1)], store)[:-3]) == {}  # data shorter than it says
    assert rpm.header(struct.pack(">II", 1 << 30, 0)) == {}  # a billion entries claimed
    assert rpm.header(_blob([(rpm.NAME, 6, -8, 1), (rpm.VERSION, 6, 99, 1), (rpm.EPOCH, 4, 7, 1)], store)) == {}
    assert rpm.header(_blob([(rpm.NAME, 6, 0, 1)], b"unterminated")) == {}
    assert rpm.header(b"\0\0") == {}
    db = tmp_path / "rpmdb.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)")
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [
            (_blob([(rpm.NAME, 6, 0, 1), (rpm.VERSION, 6, 5, 1)], store),), (b"garbage",), ("text",), (None,)])
    inv = inventory(registry, [gz(tar([("var/lib/rpm/rpmdb.sqlite", db.read_bytes())])),
                               gz(tar([("usr/lib/sysimage/rpm/rpmdb.sqlite", b"SQLite format 3\0" + b"\xff" * 600)]))])
    assert {(p.name, p.version) for p in inv.packages} == {("evil", "1.0")}  # the rows that parse; corrupt db: none


RUBYGEMS_SPEC = b'''# -*- encoding: utf-8 -*-
# stub: rack 2.2.4 ruby lib

Gem::Specification.new do |s|
  s.name = "rack".freeze
  s.version = "2.2.4"
  s.files = ["lib/rack.rb".freeze]
end
'''


def test_ruby_gems_installed_and_owned_by_debian(registry):
    dpkg = ("var/lib/dpkg/status", b"Package: ruby-rack\nStatus: install ok installed\nVersion: 2.2.6-1\n"
            b"Architecture: all\n")
    lst = ("var/lib/dpkg/info/ruby-rack.list",
           b"/usr/share/rubygems-integration/all/specifications/rack-2.2.6.gemspec\n")
    inv = inventory(registry, [gz(tar([
        *OS_RELEASE, dpkg, lst,
        ("usr/share/rubygems-integration/all/specifications/rack-2.2.6.gemspec",
         RUBYGEMS_SPEC.replace(b"2.2.4", b"2.2.6")),
        ("usr/local/bundle/specifications/rack-2.2.4.gemspec", RUBYGEMS_SPEC),
        ("usr/lib/ruby/gems/3.1.0/specifications/default/json-2.6.1.gemspec", b"# stub: json 2.6.1 ruby lib\n"),
        ("srv/project/app.gemspec", b's.name = "app"\ns.version = "9"\n'),  # a project's source: not installed
        ("usr/local/bundle/specifications/hostile.gemspec", b"s.name = `rm -rf /`\n" + b"x" * 10000),
    ]))])
    gems = of_type(inv, "gem")
    assert {(p.name, p.version, p.path) for p in gems.values()} == {
        ("rack", "2.2.4", "usr/local/bundle/specifications/rack-2.2.4.gemspec"),
        ("json", "2.6.1", "usr/lib/ruby/gems/3.1.0/specifications/default/json-2.6.1.gemspec")}
    assert gems["rack"].purl == "pkg:gem/rack@2.2.4" and gems["rack"].layer == inv.layers[0]
    assert set(of_type(inv, "deb")) == {"ruby-rack"}  # Debian's rack is the deb, reported once


def test_cargo_lock_and_auditable_binaries(registry):
    audit = zlib.compress(json.dumps(images.AUDIT).encode())
    elf = b"\x7fELF" + os.urandom(1 << 17) + audit + os.urandom(5000)
    inv = inventory(registry, [gz(tar([
        ("srv/app/Cargo.lock", images.CARGO_LOCK.encode()),
        ("srv/bad/Cargo.lock", b"[[package]\nname = "),  # not TOML
        ("usr/bin/audited", elf, 0o755),
        ("usr/bin/not-executable", elf, 0o644),
    ]))])
    crates = {(p.name, p.version, p.path) for p in inv.packages if p.type == "cargo"}
    assert crates == {("soko-hello", "0.1.0", "srv/app/Cargo.lock"), ("smallvec", "1.6.0", "srv/app/Cargo.lock"),
                      ("soko-audited", "0.2.0", "usr/bin/audited"), ("time", "0.2.22", "usr/bin/audited")}
    assert all(p.purl.startswith("pkg:cargo/") for p in inv.packages)


LOCK_V3 = {"name": "app", "lockfileVersion": 3, "packages": {
    "": {"name": "app", "version": "1.0.0"},
    "node_modules/left-pad": {"version": "1.3.0"},
    "node_modules/@babel/core": {"version": "7.24.0"},
    "node_modules/@babel/core/node_modules/semver": {"version": "6.3.1"},
    "node_modules/jest": {"version": "29.7.0", "dev": True},  # left out, as trivy does
    "node_modules/mine": {"resolved": "packages/mine", "link": True},
    "packages/mine": {"name": "mine", "version": "0.0.1"},  # a workspace: the project itself
    "node_modules/alias": {"name": "real-name", "version": "2.0.0"},
    "node_modules/from-git": {"version": "git+https://example.com/x.git#abc"},
}}
LOCK_V1 = {"lockfileVersion": 1, "dependencies": {
    "express": {"version": "4.18.2", "dependencies": {"debug": {"version": "2.6.9"}}},
    "mocha": {"version": "10.0.0", "dev": True},
    "local": {"version": "file:../local"},
}}


def test_npm_lock_files_alone_and_beside_their_installed_tree(registry):
    inv = inventory(registry, [
        gz(tar([("srv/app/package-lock.json", json.dumps(LOCK_V3).encode()),
                ("opt/old/npm-shrinkwrap.json", json.dumps(LOCK_V1).encode()),
                ("srv/app/node_modules/dep/package-lock.json", json.dumps(LOCK_V1).encode())])),  # a dependency's
        gz(tar([("srv/app/node_modules/left-pad/package.json", b'{"name": "left-pad", "version": "1.3.0"}'),
                ("srv/app/node_modules/@babel/core/package.json", b'{"name": "@babel/core", "version": "7.25.0"}')])),
    ])
    npms = {(p.name, p.version, p.path, p.layer) for p in inv.packages if p.type == "npm"}
    app, old = "srv/app/package-lock.json", "opt/old/npm-shrinkwrap.json"
    installed = "srv/app/node_modules/{}/package.json"
    assert npms == {  # installed packages once, as installed (the version on disk wins)
        ("left-pad", "1.3.0", installed.format("left-pad"), inv.layers[1]),
        ("@babel/core", "7.25.0", installed.format("@babel/core"), inv.layers[1]),
        ("semver", "6.3.1", app, inv.layers[0]), ("real-name", "2.0.0", app, inv.layers[0]),
        ("express", "4.18.2", old, inv.layers[0]), ("debug", "2.6.9", old, inv.layers[0]),
    }
    purls = {p.purl for p in inv.packages if p.path == app}
    assert purls == {"pkg:npm/semver@6.3.1", "pkg:npm/real-name@2.0.0"}
    assert any(p.purl == "pkg:npm/%40babel/core@7.25.0" for p in inv.packages)


def test_hostile_npm_lock_files_are_skipped(registry):
    deep = b'{"packages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    hostile = [b"not json", b"\xff\xfe", b"[1, 2]", deep, b'{"packages": [1]}', b'{"dependencies": "x"}',
               json.dumps({"packages": {"node_modules/a": {"version": 1}, "node_modules/../../etc": {"version": "1"},
                                        "node_modules/b": "x", "node_modules/ok": {"version": "1.0.0"}}}).encode(),
               json.dumps({"dependencies": {"a": {"version": ["1"]}, "b c": {"version": "1"}}}).encode()]
    for data in hostile:
        assert npm.lock_entries(data) in ([], [("ok", "1.0.0", "node_modules/ok")])
    inv = inventory(registry, [gz(tar([(f"srv/{i}/package-lock.json", data) for i, data in enumerate(hostile)]
                                      + [("srv/node_modules/x/package.json", deep)]))])
    assert {(p.name, p.version) for p in inv.packages if p.type == "npm"} == {("ok", "1.0.0")}


def _search(data: bytes, chunk: int = 1 << 16) -> bytes | None:
    search = rust.AuditSearch([1 << 20])
    for i in range(0, len(data), chunk):
        search.feed(data[i:i + chunk])
    return search.found


def test_audit_search_across_chunks_and_against_hostile_content():
    doc = json.dumps(images.AUDIT).encode()
    section = zlib.compress(doc)
    for chunk in (1, 7, 4096):  # the zlib header and the stream split at every place
        assert _search(b"\x7fELF" + b"x\x9c" * 50 + section + b"\0" * 100, chunk) == doc
    assert _search(zlib.compress(b'{"packages": 3}')) is None  # JSON, not a dependency list
    assert _search(zlib.compress(b"[1,2]")) is None
    assert _search(section[:-10]) is None  # truncated
    bomb = zlib.compress(b'{"packages":[' + b" " * (12 << 20) + b"]}", 1)  # 12 MiB inflated, past the 8 MiB bound
    assert _search(bomb) is None
    search = rust.AuditSearch([1000])  # the image's budget of trial inflations
    search.feed(b"x\xda" * 5000 + section)
    assert search.found is None and search.budget == [0]
    search = rust.AuditSearch()
    search.feed(b"x\xda" * (1 << 16) + section)  # past the bound of one executable
    assert search.found is None and search.starts == 0
    assert cargo.audit_packages(b'{"packages":[{"name":1},"x",{"name":"a","version":"1"}]}') == [("a", "1")]
    assert cargo.lock_packages(b'package = "x"') == []
    assert gem.parse(b"nothing") is None


PARTS = ["etc", "usr", "lib", "var", "dpkg", "status", "status.d", "info", "x.list", "apk", "db", "installed", "rpm",
         "sysimage", "rpmdb.sqlite", "Packages", "Packages.db", "a-1.dist-info", "METADATA", "b.egg-info", "PKG-INFO",
         "node_modules", "@scope", "package.json", "package-lock.json", "npm-shrinkwrap.json", "specifications",
         "default", "c.gemspec", "Cargo.lock", "os-release", "x.md5sums", "bin"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PARTS), min_size=1, max_size=7))
def test_the_quick_name_filter_never_hides_a_wanted_file(parts):
    from soko.scan import catalogers

    path = "/".join(parts)
    assert catalogers.wants(path) == any(c.wants(path) for c in catalogers.CATALOGERS)


def _osv(id_: str, ecosystem: str, name: str, introduced: str, fixed: str) -> dict:
    return {"id": id_, "modified": "2024-01-01T00:00:00Z", "aliases": [], "summary": id_, "affected": [
        {"package": {"ecosystem": ecosystem, "name": name},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}]}]}


@needs_rpm
def test_rpm_gem_and_crate_findings(registry, tmp_path):
    """Advisories in OSV's RubyGems, crates.io and Rocky Linux ecosystems match by each one's ordering (RubyGems'
    pre-releases, semver, rpm's epoch:version-release)."""
    from soko.scan.vulndb import matcher, records, store

    advisories = [
        _osv("GHSA-rack-1", "RubyGems", "rack", "0", "2.2.6.2"),  # 2.2.4 < 2.2.6.2: affected
        _osv("GHSA-rack-2", "RubyGems", "rack", "0", "2.2.4"),  # fixed in the version installed: not
        _osv("RUSTSEC-2021-0003", "crates.io", "smallvec", "1.6.0", "1.6.1"),
        _osv("RLSA-2024:1", "Rocky Linux:9", "hello-soko-libs", "0", "2:1.2.3-5.el9"),  # epoch 2 kept: affected
        _osv("RLSA-2024:2", "Rocky Linux:9", "hello-soko", "0", "1:9.9-1.el9"),  # lower epoch: not affected
        _osv("ALSA-2024:3", "AlmaLinux:9", "hello-soko", "0", "3:0-1"),  # another distribution: not asked
    ]
    for advisory in advisories:
        (tmp_path / f"{advisory['id'].replace(':', '_')}.json").write_text(json.dumps(advisory))
    store.import_advisories(registry.ctx.db, records.read_paths([str(tmp_path)]))
    inv = inventory(registry, [gz(tar([
        *ROCKY, ("var/lib/rpm/rpmdb.sqlite", (images.rpm_roots() / "two/var/lib/rpm/rpmdb.sqlite").read_bytes()),
        ("usr/local/bundle/specifications/rack-2.2.4.gemspec", RUBYGEMS_SPEC),
        ("srv/app/Cargo.lock", images.CARGO_LOCK.encode()),
    ]))])
    found = {(f.name, f.package.name) for f in matcher.match(registry.ctx.db, inv)}
    assert found == {("GHSA-rack-1", "rack"), ("RUSTSEC-2021-0003", "smallvec"), ("RLSA-2024:1", "hello-soko-libs")}
