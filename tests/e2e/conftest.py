"""Fixtures for the end-to-end tests: a live registry (Soko by default), Distribution, skopeo, test images.

``SOKO_E2E_TARGET=distribution`` runs the same tests against Distribution (``/usr/bin/docker-registry``),
which proves the tests themselves. Credentials come from :func:`servers.registry_credentials` only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest

from .images import build_all
from .layout import ImageRef
from .servers import (
    DISTRIBUTION_BIN,
    E2E_TARGET,
    RegistryServer,
    free_port,
    run_fsck,
    start_distribution,
    start_soko,
)
from .skopeo import Skopeo


def _require(*tools: str) -> None:
    """Skip when a client is missing on a developer's machine; fail in CI, where .ci/run installs it."""
    missing = [tool for tool in tools if shutil.which(tool) is None and not os.path.exists(tool)]
    if not missing:
        return
    message = f"missing tools: {', '.join(missing)} (scripts/bootstrap.sh --test installs them with apt-get)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _stop(server: RegistryServer, *, expect_clean_exit: bool) -> None:
    code = server.stop()
    if expect_clean_exit:
        assert code == 0, f"{server.kind} exited with {code} after SIGTERM\n{server.log_tail()}"


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    _require(DISTRIBUTION_BIN)
    server = start_distribution(tmp_path_factory.mktemp("distribution") / "storage")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def soko(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    data_dir = tmp_path_factory.mktemp("soko") / "data"
    # With the data listener, and every cached blob redirected to it (not only those of 4 MiB or more): each
    # client's pulls below follow the 307 to a presigned URL sent with sendfile, as ECR's clients follow S3's.
    data_listener = {"SOKO_DATA_LISTEN": f"127.0.0.1:{free_port()}", "SOKO_DATA_REDIRECT_MIN_BYTES": "0"}
    server = start_soko(data_dir, env=data_listener)
    try:
        yield server
    finally:
        _stop(server, expect_clean_exit=True)
    fsck = run_fsck(data_dir)
    assert fsck.returncode == 0, f"soko fsck found problems:\n{fsck.stdout}\n{fsck.stderr}"


@pytest.fixture(scope="session")
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """The registry under test: Soko, or Distribution with ``SOKO_E2E_TARGET=distribution``."""
    if E2E_TARGET not in ("soko", "distribution"):
        raise pytest.UsageError(f"SOKO_E2E_TARGET must be soko or distribution, not {E2E_TARGET!r}")
    server: RegistryServer = request.getfixturevalue(E2E_TARGET)
    return server


@pytest.fixture(scope="session")
def skopeo(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    _require("skopeo")
    runner = Skopeo.create(tmp_path_factory.mktemp("skopeo-home"))
    runner.add_registry(registry.host, registry.credentials)
    return runner


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageRef]:
    """All test images, built once per session (per xdist worker) into a temporary directory."""
    _require("umoci", "skopeo")
    workdir = tmp_path_factory.mktemp("images")
    return build_all(workdir, Skopeo.create(workdir / "skopeo-home"))


@pytest.fixture
def http(registry: RegistryServer) -> Iterator[httpx.Client]:
    """A plain HTTP client for the registry with the same credentials skopeo uses."""
    auth = httpx.BasicAuth(*registry.credentials) if registry.credentials else None
    with httpx.Client(base_url=registry.url, auth=auth, timeout=30, follow_redirects=True) as client:
        yield client
