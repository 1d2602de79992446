"""No database query runs on the event loop (docs/architecture.md, "Event loop"): with a remote PostgreSQL one
synchronous read stalls every request of the worker. Every statement a push, pulls with cold and warm caches,
the listings, an upload's status, ECR and IAM calls execute must run on a worker thread."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from tests.oci.helpers import push_image, sha256, start_upload


def test_no_database_statement_runs_on_the_event_loop(server, client, aws) -> None:
    on_loop: list[str] = []

    def check(conn, cursor, statement, *args) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread (or this test's own thread)
        on_loop.append(statement[:200])

    engine = server.registry.ctx.db.engine
    sa.event.listen(engine, "before_cursor_execute", check)
    try:
        digest, payload = push_image(client, "loop/app", "v1", seed="loop")
        config = json.loads(payload)["config"]["digest"]
        for cold in (True, False):  # after a write every cache is stale; then the same requests again, warm
            if cold:
                server.registry.ctx.generation.bump()
            assert client.get("/v2/loop/app/manifests/v1", headers={"Accept": "*/*"}).status_code == 200
            assert client.head(f"/v2/loop/app/manifests/{digest}", headers={"Accept": "*/*"}).status_code == 200
            assert client.get(f"/v2/loop/app/blobs/{config}").status_code == 200
            assert client.head(f"/v2/loop/app/blobs/{config}").status_code == 200
            assert client.get("/v2/loop/app/tags/list").status_code == 200
            assert client.get("/v2/_catalog").status_code == 200
            assert client.get(f"/v2/loop/app/referrers/{digest}").status_code == 200
            assert client.get(start_upload(client, "loop/app")).status_code == 204
            assert client.get(f"/v2/loop/app/blobs/{sha256(b'never pushed')}").status_code == 404
            assert aws("ecr").describe_repositories()["repositories"]
            assert "Users" in aws("iam").list_users()
    finally:
        sa.event.remove(engine, "before_cursor_execute", check)
    assert on_loop == []
