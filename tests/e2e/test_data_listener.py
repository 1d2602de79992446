"""``soko serve --workers 2 --data-listen``: both workers share the data port, skopeo pulls a large layer through
the redirect byte for byte, and the server stops cleanly with the data listener in it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.oci.helpers import image_manifest, push_blob, put_manifest

from .servers import free_port, start_soko

pytestmark = [
    pytest.mark.xdist_group("workers"),
    pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo"),
]
MiB = 1 << 20


def test_two_workers_serve_layers_from_the_data_port_to_skopeo(tmp_path: Path) -> None:
    data_port = free_port()
    server = start_soko(tmp_path / "data", workers=2, extra_args=["--data-listen", f"127.0.0.1:{data_port}"])
    try:
        layer = os.urandom(9 * MiB + 5)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=60) as client:
            push_blob(client, "app", config.encode())
            digest = push_blob(client, "app", layer)
            r = put_manifest(client, "app", "v1", image_manifest(config.encode(), [layer]))
            assert r.status_code == 201, r.text
            for _ in range(4):  # fresh connections: both workers answer some, each redirecting to the shared port
                r = client.get(f"/v2/app/blobs/{digest}", headers={"Connection": "close"})
                assert r.status_code == 307 and f":{data_port}/layers/" in r.headers["Location"]
        user, password = server.credentials
        subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"{user}:{password}",
             f"docker://{server.host}/app:v1", f"dir:{tmp_path / 'out'}"],
            check=True, capture_output=True, timeout=120,
        )
        assert (tmp_path / "out" / digest.split(":")[1]).read_bytes() == layer
        assert server.stop() == 0, server.log_tail()
        log = server.log_tail(200_000)  # (the access log is written in batches: read once the server is down)
        assert f"layer downloads (sendfile) on http://127.0.0.1:{data_port}" in log
        assert re.search(r'"path":"/layers/[^"]*","status":200,[^}]*"bytes_out":' + str(len(layer)), log), log[-3000:]
    finally:
        server.kill()
