"""Real images for the scanner's tests, built once and cached on disk (``$SOKO_TEST_CACHE``, default
``~/.cache/soko-tests``): a Debian 12 root filesystem from debootstrap, Python wheels from pip, an npm tree from the
npm registry, a Go binary from Debian's Go toolchain. Each is an OCI layout written by umoci 0.4.7 (whose layers
have no tar end-of-archive blocks), pushed into the test's Registry through the domain."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from soko.registry.models import RepoRef
from tests.domain import push_blob

CACHE = Path(os.environ.get("SOKO_TEST_CACHE") or Path.home() / ".cache" / "soko-tests") / "scan"
VENV_BIN = Path(sys.executable).parent


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """``CACHE/name``, built by ``build(tmp)`` once (under a lock, so parallel workers build it once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / name
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.exists():
            tmp = CACHE / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            build(tmp)
            tmp.rename(final)
    return final


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kwargs)


def layout(name: str, steps: list[tuple]) -> Path:
    """An OCI layout (tag ``latest``), one layer per step via ``umoci insert``: ``(directory,)`` adds a directory
    at ``/``, ``("whiteout", target)`` removes a path, ``("opaque", directory, target)`` replaces a directory's
    contents."""
    def build(tmp: Path) -> None:
        lay = tmp / "layout"
        image = f"{lay}:latest"
        run("umoci", "init", "--layout", lay)
        run("umoci", "new", "--image", image)
        for step in steps:
            if step[0] == "whiteout":
                run("umoci", "insert", "--image", image, "--whiteout", step[1])
            elif step[0] == "opaque":
                run("umoci", "insert", "--image", image, "--opaque", step[1], step[2])
            else:
                run("umoci", "insert", "--image", image, step[0], "/")
    return cached(f"layout-{name}", build) / "layout"


# -- root filesystems ---------------------------------------------------------------------------------------------
def debian_rootfs() -> Path:
    def build(tmp: Path) -> None:
        root = tmp / "rootfs"
        run("debootstrap", "--variant=minbase", "bookworm", root, "http://deb.debian.org/debian")
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()  # as Debian's own images: no package cache
    return cached("debian-rootfs", build) / "rootfs"


OLD_WHEELS = ["requests==2.19.1", "urllib3==1.23", "idna==2.7", "chardet==3.0.4", "certifi==2018.4.16"]
SITE = "usr/local/lib/python3.11/site-packages"


def python_tree() -> Path:
    def build(tmp: Path) -> None:
        root = tmp / "rootfs"
        run(VENV_BIN / "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", root / SITE, *OLD_WHEELS)
        shutil.rmtree(root / SITE / "bin", ignore_errors=True)
    return cached("python-tree", build) / "rootfs"


NPM_PACKAGES = ["lodash@4.17.15", "minimist@1.2.0", "@babel/helper-string-parser@7.19.4"]


def npm_tree() -> Path:
    def build(tmp: Path) -> None:
        app = tmp / "rootfs" / "app"
        app.mkdir(parents=True)
        run("npm", "install", "--no-audit", "--no-fund", "--prefix", app, *NPM_PACKAGES)
    return cached("npm-tree", build) / "rootfs"


GO_MAIN = """package main

import (
\t"fmt"

\t"golang.org/x/text/language"
)

func main() { fmt.Println(language.English) }
"""


def go_tree() -> Path:
    """A Go program built with Debian's toolchain, golang.org/x/text vendored from Debian's golang-golang-x-text-dev
    (no module proxy needed: the build info names the module and version from vendor/modules.txt)."""
    def build(tmp: Path) -> None:
        src = tmp / "src"
        text = Path("/usr/share/gocode/src/golang.org/x/text")
        shutil.copytree(text, src / "vendor/golang.org/x/text")
        (src / "main.go").write_text(GO_MAIN)
        (src / "go.mod").write_text("module example.com/soko/hello\n\ngo 1.19\n\nrequire golang.org/x/text v0.7.0\n")
        packages = sorted({str(p.parent.relative_to(src / "vendor")) for p in (src / "vendor").rglob("*.go")
                           if "testdata" not in p.parts and not p.name.endswith("_test.go")})
        (src / "vendor/modules.txt").write_text(
            "# golang.org/x/text v0.7.0\n## explicit; go 1.17\n" + "".join(p + "\n" for p in packages))
        env = {**os.environ, "HOME": str(tmp), "GOPATH": str(tmp / "gopath"), "GOCACHE": str(tmp / "gocache"),
               "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "CGO_ENABLED": "0"}
        (tmp / "rootfs/usr/local/bin").mkdir(parents=True)
        run("go", "build", "-trimpath", "-o", tmp / "rootfs/usr/local/bin/hello", ".", cwd=src, env=env)
        shutil.rmtree(tmp / "gocache", ignore_errors=True)
        shutil.rmtree(src)
    return cached("go-tree", build) / "rootfs"


# -- pushing a layout into the test's Registry --------------------------------------------------------------------
def push_layout(registry, ref: RepoRef, lay: Path, tag: str = "latest", source_tag: str = "latest") -> str:
    """Push the image ``lay:source_tag`` (and everything it references) as ``ref:tag``; its digest."""
    index = json.loads((lay / "index.json").read_text())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == source_tag)
    return _push_manifest(registry, ref, lay, desc, tag)


def _blob(lay: Path, digest: str) -> bytes:
    return (lay / "blobs" / digest.replace(":", "/")).read_bytes()


def _push_manifest(registry, ref: RepoRef, lay: Path, desc: dict, tag: str | None) -> str:
    payload = _blob(lay, desc["digest"])
    doc = json.loads(payload)
    for child in doc.get("manifests", []):
        _push_manifest(registry, ref, lay, child, None)
    for blob in [doc["config"], *doc["layers"]] if "config" in doc else []:
        push_blob(registry, ref, _blob(lay, blob["digest"]))
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    return registry.manifests.put(ref, tag or digest, payload, desc["mediaType"]).digest


# -- rpm, Ruby, Rust ----------------------------------------------------------------------------------------------
RPM_SPEC = """Name: hello-soko
Version: 1.2.3
Release: 4.el9
Epoch: 2
Summary: a package for Soko's rpm tests
License: MIT
BuildArch: x86_64
%description
test
%package libs
Summary: its library
%description libs
test
%install
mkdir -p %{buildroot}/usr/share/hello-soko
echo hi > %{buildroot}/usr/share/hello-soko/README
echo lib > %{buildroot}/usr/share/hello-soko/LIB
%files
/usr/share/hello-soko/README
%files libs
/usr/share/hello-soko/LIB
"""


def rpm_roots() -> Path:
    """Two root filesystems holding a real RPM 4.18 SQLite database written by Debian's ``rpm`` (``--justdb``):
    ``one/`` with hello-soko 2:1.2.3-4.el9, ``two/`` with it and hello-soko-libs (built from the same source RPM)."""
    def build(tmp: Path) -> None:
        (tmp / "hello.spec").write_text(RPM_SPEC)
        run("rpmbuild", "-bb", "--define", f"_topdir {tmp / 'top'}", tmp / "hello.spec")
        rpms = {p.name.split("-1.2.3")[0]: p for p in (tmp / "top/RPMS/x86_64").glob("*.rpm")}
        db = ["--dbpath", "/var/lib/rpm", "--define", "_db_backend sqlite"]
        for name, wanted in (("one", ["hello-soko"]), ("two", ["hello-soko", "hello-soko-libs"])):
            root = tmp / name
            run("rpm", "--root", root, *db, "--initdb")
            run("rpm", "--root", root, *db, "-i", "--nodeps", "--justdb", *[rpms[w] for w in wanted])
            for extra in (root / "var/lib/rpm").iterdir():
                if extra.name != "rpmdb.sqlite":
                    extra.unlink()  # the lock, and the -wal/-shm files the closed database left empty
        shutil.rmtree(tmp / "top")
    return cached("rpm-roots", build)


def rpm_bdb_root() -> Path:
    """The same two packages in a Berkeley DB ``var/lib/rpm/Packages`` (the format of RPM before 4.16), written by
    Berkeley DB's own ``db_load`` (Debian's db5.3-util) from the SQLite database's header blobs, keyed by their
    number as rpm keys them; Debian's rpm reads it back (``_db_backend bdb_ro``)."""
    import sqlite3
    import struct

    def build(tmp: Path) -> None:
        source = rpm_roots() / "two/var/lib/rpm/rpmdb.sqlite"
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
        dump = tmp / "dump.txt"
        dump.write_text("".join("".join(f"\\{b:02x}" for b in data) + "\n"
                                for hnum, blob in rows for data in (struct.pack("<I", hnum), blob)))
        (tmp / "rootfs/var/lib/rpm").mkdir(parents=True)
        run("db5.3_load", "-T", "-t", "hash", "-f", dump, tmp / "rootfs/var/lib/rpm/Packages")
        dump.unlink()
    return cached("rpm-bdb-root", build) / "rootfs"


def gem_tree() -> Path:
    """A gem built and installed by RubyGems (``gem build``, ``gem install --local``) into /usr/local/bundle."""
    def build(tmp: Path) -> None:
        src = tmp / "src"
        (src / "lib").mkdir(parents=True)
        (src / "lib/soko_hello.rb").write_text("module SokoHello; end\n")
        (src / "soko_hello.gemspec").write_text(
            'Gem::Specification.new do |s|\n  s.name = "soko_hello"\n  s.version = "0.3.1"\n'
            '  s.summary = "test"\n  s.authors = ["Soko"]\n  s.files = ["lib/soko_hello.rb"]\n'
            '  s.license = "MIT"\nend\n')
        run("gem", "build", "soko_hello.gemspec", cwd=src)
        home = tmp / "rootfs/usr/local/bundle"
        run("gem", "install", "--local", "--no-document", "--install-dir", home, src / "soko_hello-0.3.1.gem",
            env={**os.environ, "HOME": str(tmp)})
        shutil.rmtree(src)
        shutil.rmtree(home / "cache", ignore_errors=True)
    return cached("gem-tree", build) / "rootfs"


CARGO_LOCK = """# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 3

[[package]]
name = "soko-hello"
version = "0.1.0"
dependencies = [
 "smallvec",
]

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "1a55ca5f3b68e41c979bf8c46a6f1da892ca4db8f94023ce0bd32407573b1ac0"
"""

AUDIT = {"packages": [
    {"name": "soko-audited", "version": "0.2.0", "source": "local", "dependencies": [1, 2], "root": True},
    {"name": "time", "version": "0.2.22", "source": "crates.io", "dependencies": []},
    {"name": "version_check", "version": "0.9.4", "source": "crates.io", "kind": "build"},
]}


def rust_tree() -> Path:
    """A Cargo.lock under /srv/app, and an executable carrying cargo-auditable's ``.dep-v0`` section (zlib JSON).
    cargo-auditable is not packaged in Debian 12 and crates.io is not reachable here, so the section is added to a
    copy of Debian's ``/usr/bin/true`` with ``objcopy --add-section``, which is where cargo-auditable's linker step
    puts it too."""
    import zlib

    def build(tmp: Path) -> None:
        root = tmp / "rootfs"
        (root / "srv/app").mkdir(parents=True)
        (root / "srv/app/Cargo.lock").write_text(CARGO_LOCK)
        (root / "usr/local/bin").mkdir(parents=True)
        section = tmp / "dep-v0"
        section.write_bytes(zlib.compress(json.dumps(AUDIT, separators=(",", ":")).encode(), 9))
        run("objcopy", "--add-section", f".dep-v0={section}", "/usr/bin/true", root / "usr/local/bin/audited")
        section.unlink()
    return cached("rust-tree", build) / "rootfs"
