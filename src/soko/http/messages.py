"""Soko's own request and response types: what every handler sees, independent of the server underneath.

The server (granian, through RSGI: soko.http.rsgi) builds a ``Request`` and writes back whichever response a
handler returns: bytes (``Response``) or a stream of pieces (``StreamResponse``: blobs, read ahead on a thread).
Keeping handlers on these types keeps the domain's front ends testable and the server replaceable.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from soko.access import Principal, RequestContext


class BodyInterrupted(Exception):
    """The client went away (or broke the framing) before the request body was complete."""


class Headers(Protocol):
    """Case-insensitive request headers; ``items()`` yields repeated headers once per value, names in lower case."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def __contains__(self, key: str) -> bool: ...
    def items(self) -> Iterable[tuple[str, str]]: ...


class Request:
    __slots__ = (
        "_authority",
        "_body",
        "_host",
        "_query",
        "account",
        "body_complete",
        "bytes_in",
        "client",
        "context",
        "headers",
        "method",
        "operation",
        "path",
        "principal",
        "query_string",
        "scheme",
        "server",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: Headers,
        client: str,
        server: str,
        scheme: str,
        body: AsyncIterator[bytes] | None,
    ) -> None:
        self.method = method
        self.path = path  # percent-decoded by the server
        self.query_string = query_string  # raw
        self.headers = headers
        self.client = client  # "ip:port" of the peer
        self.server = server  # "ip:port" of the listener the request arrived on
        self.scheme = scheme
        self._body = body
        self._query: dict[str, str] | None = None
        self.bytes_in = 0  # body bytes read so far (the access log and metrics report it)
        self.body_complete = False  # the whole body was read (else the connection cannot be reused after the answer)
        self._host: str | None = None
        self._authority: str | None = None
        # Set by the front ends as the request is handled:
        self.context: RequestContext | None = None
        self.principal: Principal | None = None
        self.account: str | None = None
        self.operation: str | None = None  # what a front end recognised (metrics label), e.g. "oci:get_manifest"

    @property
    def query(self) -> Mapping[str, str]:
        """Query parameters; a repeated parameter's first value wins."""
        if self._query is None:
            query: dict[str, str] = {}
            if self.query_string:
                for key, value in urllib.parse.parse_qsl(self.query_string, keep_blank_values=True):
                    query.setdefault(key, value)
            self._query = query
        return self._query

    @property
    def host(self) -> str:
        """The host the client addressed, for the URLs Soko hands back and account routing: ``authority``, or a
        trusted proxy's X-Forwarded-Host."""
        if self._host is not None:
            return self._host
        return self.authority

    @host.setter
    def host(self, value: str) -> None:
        self._host = value

    @property
    def authority(self) -> str:
        """The host as this request arrived: the Host header (HTTP/2's :authority). What a SigV4 signature covers:
        a proxy's X-Forwarded-Host never changes it."""
        if self._authority is not None:
            return self._authority
        return self.headers.get("host") or ""

    @authority.setter
    def authority(self, value: str) -> None:
        self._authority = value

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def getall(self, name: str) -> list[str]:
        """Every value of a repeated header, in order."""
        name = name.lower()
        return [value for key, value in self.headers.items() if key == name]

    @property
    def has_body(self) -> bool:
        """The request declares a body (a non-zero Content-Length, or chunked transfer coding)."""
        return bool(self.content_length) or "transfer-encoding" in self.headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        return int(value) if len(value) <= 19 else 1 << 63  # past any real body (int() refuses past 4,300 digits)

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as the pieces arrive; raises BodyInterrupted when the client breaks off."""
        if self._body is None:
            return
        body, self._body = self._body, None
        try:
            async for piece in body:
                if piece:
                    self.bytes_in += len(piece)
                    yield piece
            self.body_complete = True
        except (ConnectionError, RuntimeError) as exc:  # granian's RSGIProtocolClosed/Error are RuntimeErrors
            raise BodyInterrupted(str(exc) or type(exc).__name__) from None


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        self.status = status
        # Not copied: handlers may hand over a cached mapping; nobody mutates a response's headers after this.
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        if content_type is not None:
            self.headers = {**self.headers, "Content-Type": content_type}
        self.body = body


class StreamResponse:
    """A body produced piece by piece; the handler sets Content-Length when it knows it. ``close`` runs once the
    response is over — sent, cut off, or never started (HEAD) — to release what the body reads from. ``source``, when
    given, is a reader (with ``readinto``) whose next Content-Length bytes are the same body: the server may copy it
    on a thread of its own instead of iterating ``body`` (soko.http.piped). ``done``, when set, is called once the
    response is over with the body bytes that went out (a presigned layer download is metered there)."""

    __slots__ = ("body", "close", "done", "headers", "source", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
        close: Callable[[], object] | None = None,
        source: Any = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers)
        self.body = body
        self.close = close
        self.source = source
        self.done: Callable[[int], object] | None = None


class FileResponse:
    """``length`` bytes of a local file from ``start`` on, sent by the server itself (granian reads the file on its
    own threads: no Python per piece). The handler opened the file first, so a missing file was its clean 404.
    ``done``: as ``StreamResponse``'s."""

    __slots__ = ("done", "headers", "length", "path", "start", "status")

    def __init__(self, status: int, headers: Mapping[str, str], path: str, start: int, length: int) -> None:
        self.status = status
        self.headers = dict(headers)
        self.path = path
        self.start = start
        self.length = length
        self.done: Callable[[int], object] | None = None


AnyResponse = Response | StreamResponse | FileResponse


def report_sent(response: AnyResponse | None, sent: int) -> None:
    """Hand ``response``'s ``done`` (if any) the body bytes sent, once the server is through with it; its failure
    never fails the request."""
    done = getattr(response, "done", None)
    if done is not None:
        try:
            done(sent)
        except Exception:
            logging.getLogger("soko.http").exception("could not record a response's bytes sent")


def error_response(
    status: int,
    code: str,
    message: str,
    detail: object | None = None,
    headers: Mapping[str, str] | None = None,
    head: bool = False,
) -> Response:
    """The registry's error body (OCI's ``{"errors": [{code, message, detail}]}``), which Soko also uses outside
    /v2/ wherever no other protocol applies."""
    entry: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    body = json.dumps({"errors": [entry]}).encode()
    if head:  # no body, but an honest length
        return Response(status, {**(headers or {}), "Content-Length": str(len(body))})
    return Response(status, headers, body, "application/json")


def json_response(
    document: object,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Response:
    return Response(status, headers, json.dumps(document).encode(), content_type)
