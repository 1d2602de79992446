"""oras-py (PyPI ``oras``, pinned in the test extra) pushes an artifact to Soko and pulls it back, monolithic and
chunked.

It runs with ``auth_backend="basic"``, the one that works with ECR too: it sends the ECR token as Basic credentials,
which is what ECR's ``Basic`` challenge asks for. Its default ``token`` back end treats every challenge as a Bearer
token service (it GETs the realm for a ``{"token": …}``), which neither ECR nor Soko runs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import oras.client
import pytest

from .servers import RegistryServer

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-registry")]

SBOM_TYPE = "application/vnd.soko.test.sbom.v1+json"


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_push_and_pull_an_artifact(chunked: bool, registry: RegistryServer, http: httpx.Client,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no docker config of the machine's
    monkeypatch.chdir(tmp_path)  # oras-py wants the files it pushes under the working directory
    content = json.dumps({"chunked": chunked, "packages": ["soko"]}).encode()
    Path("sbom.json").write_bytes(content)
    client = oras.client.OrasClient(hostname=registry.host, insecure=True, auth_backend="basic")
    if registry.credentials is not None:
        user, password = registry.credentials
        assert client.login(username=user, password=password)["Status"] == "Login Succeeded"

    repo = "clients/oras"
    target = f"{registry.host}/{repo}:{'chunked' if chunked else 'monolithic'}"
    response = client.push(files=[f"sbom.json:{SBOM_TYPE}"], target=target, do_chunked=chunked, chunk_size=16,
                           quiet=True)
    assert response.status_code == 201

    manifest = client.get_manifest(target)
    assert [(layer["mediaType"], layer["size"]) for layer in manifest["layers"]] == [(SBOM_TYPE, len(content))]
    assert http.get(f"/v2/{repo}/blobs/{manifest['layers'][0]['digest']}").content == content

    pulled = client.pull(target=target, outdir=str(tmp_path / "pulled"))
    assert [Path(path).read_bytes() for path in pulled] == [content]
    assert target.rsplit(":", 1)[1] in client.get_tags(f"{registry.host}/{repo}")
