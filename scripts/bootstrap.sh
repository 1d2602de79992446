#!/usr/bin/env bash
# Idempotent set-up: the project's virtualenv (.venv) with Soko and its pinned dependencies.
#   scripts/bootstrap.sh          what `soko serve` needs
#   scripts/bootstrap.sh --test   also the test tools, and the external clients the end-to-end tests and the bench
#                                 drive (skopeo, umoci, jq, podman, buildah, containerd, docker-registry, wrk, hey,
#                                 debootstrap, go, npm, rpm, ruby for tests/scan, chromium and axe-core for tests/console,
#                                 and Ceph's S3 gateway for scripts/ceph-rgw.sh: ceph-mon ceph-osd radosgw ceph-common:
#                                 Debian packages, installed with apt-get when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"

if [ -n "$extra" ]; then
  missing=()
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  command -v umoci >/dev/null 2>&1 || missing+=(umoci)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v hey >/dev/null 2>&1 || missing+=(hey)
  command -v ceph-mon >/dev/null 2>&1 || missing+=(ceph-mon)
  command -v ceph-osd >/dev/null 2>&1 || missing+=(ceph-osd)
  command -v radosgw >/dev/null 2>&1 || missing+=(radosgw)
  command -v ceph-authtool >/dev/null 2>&1 || missing+=(ceph-common)
  # tests/scan builds real images: a Debian root filesystem, a Go binary (with a vendored Debian Go library)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  [ -d /usr/share/gocode/src/golang.org/x/text ] || missing+=(golang-golang-x-text-dev)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v rpmbuild >/dev/null 2>&1 || missing+=(rpm)  # tests/scan: a real RPM SQLite database
  command -v gem >/dev/null 2>&1 || missing+=(ruby)  # tests/scan: a gem built and installed by RubyGems
  command -v db5.3_load >/dev/null 2>&1 || missing+=(db5.3-util)  # tests/scan: an rpm Berkeley DB (db_load)
  [ -f /usr/share/java/commons-io-2.11.0.jar ] || missing+=(libcommons-io-java)  # real jars for tests/scan
  [ -f /usr/share/java/commons-cli-1.5.0.jar ] || missing+=(libcommons-cli-java)
  [ -x /usr/bin/chromium ] || missing+=(chromium)  # tests/console: a real headless browser (driven by Playwright)
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bootstrap: installing ${missing[*]} (apt)"
    # Several checkouts may bootstrap at once (worktrees, CI): wait for apt's locks instead of failing on them.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

stamp=".venv/.installed${extra:+-test}"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
# A venv set up with --test has everything `soko serve` needs too: scripts/serve.sh after scripts/test.sh installs
# nothing.
if ! fresh "$stamp" && ! { [ -z "$extra" ] && fresh .venv/.installed-test; }; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e ".${extra}"
  touch "$stamp"
fi

# tests/console: axe-core (npm, pinned) checks the console's pages for accessibility; kept in .venv so the tests run
# offline once bootstrapped.
AXE_VERSION=4.14.1
if [ -n "$extra" ] && [ ! -f ".venv/axe/node_modules/axe-core/axe.min.js" -o ! -f ".venv/axe/.v$AXE_VERSION" ]; then
  mkdir -p .venv/axe
  npm install --silent --no-audit --no-fund --prefix .venv/axe "axe-core@$AXE_VERSION" >/dev/null
  touch ".venv/axe/.v$AXE_VERSION"
fi
