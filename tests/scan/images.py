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
