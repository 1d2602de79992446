"""Tag lists, the catalog and the referrers API: paginated listings."""

from __future__ import annotations

import urllib.parse
from functools import partial

from soko.access import repository_arn
from soko.errors import RepositoryNotFound, SokoError
from soko.http.messages import Request, Response, json_response
from soko.http.threads import offload
from soko.oci.base import OciContext
from soko.oci.errors import API_VERSION_HEADER, error_response
from soko.registry import media_types as mt

MAX_PAGE = 10_000


class PaginationInvalid(SokoError):
    pass


def _page(request: Request) -> tuple[int | None, str | None]:
    raw_n, last = request.query.get("n"), request.query.get("last")
    if raw_n is None:
        return None, last
    if not raw_n.isdigit() or len(raw_n) > 9:
        raise PaginationInvalid(f"n must be a non-negative whole number, got '{raw_n[:20]}'")
    return min(int(raw_n), MAX_PAGE), last


def _json(body: dict, headers: dict[str, str] | None = None, content_type: str = "application/json") -> Response:
    return json_response(body, 200, {**API_VERSION_HEADER, **(headers or {})}, content_type)


def _link(path: str, n: int, last: str) -> dict[str, str]:
    query = urllib.parse.urlencode({"n": n, "last": last})
    return {"Link": f'<{path}?{query}>; rel="next"'}


async def list_tags(ctx: OciContext, request: Request, name: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:ListImages")
    try:
        n, last = _page(request)
    except PaginationInvalid as exc:
        return error_response(400, "PAGINATION_NUMBER_INVALID", exc.message)
    if n == 0:
        return _json({"name": name, "tags": []})
    found = await offload(partial(ctx.registry.manifests.list_tags, ref, last=last, limit=None if n is None else n + 1))
    headers = {}
    if n is not None and len(found) > n:
        found = found[:n]
        headers = _link(f"/v2/{name}/tags/list", n, found[-1])
    return _json({"name": name, "tags": found}, headers)


async def catalog(ctx: OciContext, request: Request) -> Response:
    account = ctx.repo(request, "_").account_id
    arn = repository_arn(ctx.settings.region, account, "*")
    await ctx.authorize_arn(request, arn, account, "ecr:DescribeRepositories")
    try:
        n, last = _page(request)
    except PaginationInvalid as exc:
        return error_response(400, "PAGINATION_NUMBER_INVALID", exc.message)
    if n == 0:
        return _json({"repositories": []})
    limit = None if n is None else n + 1
    names = await offload(partial(ctx.registry.repositories.list_names, account, last=last, limit=limit))
    headers = {}
    if n is not None and len(names) > n:
        names = names[:n]
        headers = _link("/v2/_catalog", n, names[-1])
    return _json({"repositories": names}, headers)


async def referrers(ctx: OciContext, request: Request, name: str, digest: str) -> Response:
    ref = ctx.repo(request, name)
    await ctx.authorize(request, ref, "ecr:BatchGetImage")
    artifact_type = request.query.get("artifactType")
    try:
        descriptors = await offload(ctx.registry.manifests.referrers, ref, digest, artifact_type)
    except RepositoryNotFound:
        # The spec: the referrers API MUST NOT answer 404; nothing refers to anything in a missing repository.
        # (ECR's ListImageReferrers keeps RepositoryNotFoundException.) The digest is still checked (400).
        descriptors = []
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type is not None else {}
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    return _json(body, headers, content_type=mt.OCI_INDEX)
