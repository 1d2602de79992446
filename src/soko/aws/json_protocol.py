"""AWS JSON 1.1 wire helpers for the ECR API: target parsing, bodies, error bodies, response encoding."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from typing import Any

from soko.aws.errors import InvalidRequest

__all__ = [
    "CONTENT_TYPE",
    "ECR_TARGET_PREFIX",
    "ResponseEncoder",
    "dumps",
    "epoch_seconds",
    "error_body",
    "load_body",
    "parse_target",
]

ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921"
CONTENT_TYPE = "application/x-amz-json-1.1"


def parse_target(target: str | None, prefix: str = ECR_TARGET_PREFIX) -> str:
    """`X-Amz-Target: <prefix>.<Operation>` -> `Operation`; anything else is an unknown operation."""
    service, dot, operation = (target or "").strip().rpartition(".")
    if not dot or service != prefix or not operation:
        raise InvalidRequest("UnknownOperationException", f"Unknown operation {target or ''!r}".rstrip())
    return operation


def load_body(body: bytes) -> Any:
    """Decode a request body; an empty body is the empty object, as AWS treats it."""
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except (UnicodeDecodeError, ValueError):  # ValueError includes integers too long to convert
        raise InvalidRequest("SerializationException", "Request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("SerializationException", "Request body is nested too deeply") from None
    if b"\\u" in body:
        check_unicode(params, "Request body")
    return params


def check_unicode(value: Any, what: str) -> None:
    """JSON text may escape lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 text can carry: refuse them
    instead of storing or echoing what cannot be encoded."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest("SerializationException", f"{what} contains an unpaired UTF-16 surrogate") from None


def error_body(type_name: str, message: str, **extra: Any) -> bytes:
    """`{"__type": ..., "message": ..., **extra}`, the body every awsJson error carries."""
    return dumps({"__type": type_name, "message": message, **extra})


def epoch_seconds(value: datetime) -> float:
    """Epoch seconds as ECR sends them (a JSON number with fractional milliseconds)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp(), 3)


class ResponseEncoder(json.JSONEncoder):
    """JSON for responses: datetimes as epoch seconds, bytes as base64 (the awsJson blob encoding)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return epoch_seconds(o)
        if isinstance(o, date):
            return epoch_seconds(datetime(o.year, o.month, o.day, tzinfo=UTC))
        if isinstance(o, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(o)).decode("ascii")
        return super().default(o)


def dumps(payload: Any) -> bytes:
    try:
        return json.dumps(payload, cls=ResponseEncoder, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate from somewhere: \\u-escaped JSON is still valid JSON
        return json.dumps(payload, cls=ResponseEncoder, separators=(",", ":")).encode()
