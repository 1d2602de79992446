"""AWS Query protocol (IAM, STS): form-encoded requests in, namespaced XML out, both driven by botocore's models.

Request: `Action=CreateUser&Version=2010-05-08&UserName=x&Tags.member.1.Key=k&Tags.member.1.Value=v`.
Response: `<CreateUserResponse xmlns="..."><CreateUserResult>...</CreateUserResult><ResponseMetadata>
<RequestId>...</RequestId></ResponseMetadata></CreateUserResponse>`; lists nest `<member>` elements, maps
`<entry><key/><value/></entry>`, timestamps are ISO 8601, booleans lower case.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from botocore.model import Shape

from soko.aws.errors import AwsAuthError, InvalidRequest
from soko.aws.service_model import get_service_model, validate_params

__all__ = [
    "CONTENT_TYPE",
    "auth_error_response",
    "error_response",
    "parse_form",
    "parse_request",
    "serialize_response",
]

CONTENT_TYPE = "text/xml"
_INDEX = re.compile(r"\d{1,9}")


def parse_form(body: bytes | str) -> dict[str, str]:
    """A form body (or query string) as a flat dict; the last of a repeated key wins."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return dict(parse_qsl(text, keep_blank_values=True))


def _bad_value(raw: str, path: str, what: str) -> InvalidRequest:
    return InvalidRequest("InvalidParameterValue", f"Value '{raw}' for parameter {path} is invalid. {what}")


class _FormReader:
    """Rebuilds nested params from flattened form keys, following the input shape."""

    def __init__(self, form: Mapping[str, str]) -> None:
        self.form = form

    def indices(self, prefix: str) -> list[int]:
        """The 1-based positions present under `prefix.` (`Tags.member.` -> 1, 2, ...), in numeric order."""
        found = set()
        for key in self.form:
            if key.startswith(prefix):
                head = key[len(prefix) :].split(".", 1)[0]
                if _INDEX.fullmatch(head):
                    found.add(int(head))
        return sorted(found)

    def present(self, prefix: str) -> bool:
        return prefix in self.form or any(k.startswith(prefix + ".") for k in self.form)

    def read(self, shape: Shape, prefix: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            out = {}
            for name, member in shape.members.items():
                wire = member.serialization.get("name", name)
                key = f"{prefix}.{wire}" if prefix else wire
                if self.present(key):
                    out[name] = self.read(member, key)
            return out
        if kind == "list":
            if self.form.get(prefix) == "":
                return []  # botocore sends an explicitly empty list as `Name=`
            item = shape.member.serialization.get("name", "member")
            base = prefix if shape.serialization.get("flattened") else f"{prefix}.{item}"
            return [self.read(shape.member, f"{base}.{i}") for i in self.indices(base + ".")]
        if kind == "map":
            base = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
            key_name = shape.key.serialization.get("name", "key")
            value_name = shape.value.serialization.get("name", "value")
            out = {}
            for i in self.indices(base + "."):
                key = self.form.get(f"{base}.{i}.{key_name}")
                if key is not None:
                    out[key] = self.read(shape.value, f"{base}.{i}.{value_name}")
            return out
        return self.scalar(shape, prefix)

    def scalar(self, shape: Shape, key: str) -> Any:
        raw = self.form.get(key)
        if raw is None:
            return None
        kind = shape.type_name
        if kind in ("integer", "long"):
            # more than 19 digits is past any long (and int() refuses past 4,300)
            if not re.fullmatch(r"[+-]?\d{1,19}", raw.strip()):
                raise _bad_value(raw, key, "Expected an integer.")
            return int(raw)
        if kind in ("double", "float"):
            try:
                return float(raw)
            except ValueError:
                raise _bad_value(raw, key, "Expected a number.") from None
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise _bad_value(raw, key, "Expected true or false.")
            return raw.lower() == "true"
        if kind == "timestamp":
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                raise _bad_value(raw, key, "Expected an ISO 8601 timestamp.") from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if kind == "blob":
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_value(raw, key, "Expected base64.") from None
        return raw


def parse_request(service: str, form: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """(operation, validated params) from a Query request's form; raises `InvalidRequest` with IAM/STS codes."""
    model = get_service_model(service)
    action = form.get("Action", "")
    version = form.get("Version", model.api_version)
    if not action:
        raise InvalidRequest("MissingAction", "The request is missing an action or a required parameter.")
    if version != model.api_version or action not in model.operation_names:
        raise InvalidRequest("InvalidAction", f"Could not find operation {action} for version {version}")
    shape = model.operation_model(action).input_shape
    params = _FormReader(form).read(shape, "") if shape is not None else {}
    return action, validate_params(
        service, action, params, json_wire=False, error_type="ValidationError", unknown_operation="InvalidAction"
    )


def _iso8601(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class _XmlWriter:
    def __init__(self, service: str) -> None:
        self.service = service
        self.parts: list[str] = []

    def element(self, name: str, value: Any, shape: Shape) -> None:
        self.parts.append(f"<{name}>")
        self.content(value, shape)
        self.parts.append(f"</{name}>")

    def content(self, value: Any, shape: Shape) -> None:
        kind = shape.type_name
        if kind == "structure":
            for name, member in shape.members.items():
                if value.get(name) is not None:
                    self.field(member.serialization.get("name", name), value[name], member)
        elif kind == "list":
            item = shape.member.serialization.get("name", "member")
            for v in value:
                self.element(item, v, shape.member)
        elif kind == "map":
            key_name = shape.key.serialization.get("name", "key")
            value_name = shape.value.serialization.get("name", "value")
            for k, v in value.items():
                self.parts.append("<entry>")
                self.element(key_name, k, shape.key)
                self.element(value_name, v, shape.value)
                self.parts.append("</entry>")
        else:
            self.parts.append(escape(self.scalar(value, shape)))

    def field(self, name: str, value: Any, shape: Shape) -> None:
        if shape.type_name == "list" and shape.serialization.get("flattened"):
            for v in value:
                self.element(name, v, shape.member)
        else:
            self.element(name, value, shape)

    def scalar(self, value: Any, shape: Shape) -> str:
        kind = shape.type_name
        if kind == "boolean":
            return "true" if value else "false"
        if kind == "timestamp":
            return _iso8601(value)
        if kind == "blob":
            return base64.b64encode(value).decode("ascii")
        if shape.name == "policyDocumentType" and self.service == "iam":
            return quote(str(value), safe="")  # IAM returns policy documents URL-encoded (RFC 3986)
        return str(value)


def _namespace(service: str) -> str:
    return get_service_model(service).metadata["xmlNamespace"]


def serialize_response(service: str, operation: str, result: Mapping[str, Any] | None, request_id: str) -> bytes:
    """The success body for `operation`; `result` is keyed by the output shape's member names."""
    op = get_service_model(service).operation_model(operation)
    writer = _XmlWriter(service)
    writer.parts.append(f'<{operation}Response xmlns="{_namespace(service)}">')
    if op.output_shape is not None:
        wrapper = op.output_shape.serialization.get("resultWrapper", f"{operation}Result")
        writer.element(wrapper, result or {}, op.output_shape)
    writer.parts.append(f"<ResponseMetadata><RequestId>{escape(request_id)}</RequestId></ResponseMetadata>")
    writer.parts.append(f"</{operation}Response>")
    return "".join(writer.parts).encode()


@functools.cache
def _error_index(service: str) -> dict[str, tuple[str, int, bool]]:
    """Shape name and wire code -> (wire code, HTTP status, sender fault), from the model's error shapes."""
    index: dict[str, tuple[str, int, bool]] = {}
    for shape in get_service_model(service).error_shapes:
        meta = shape.metadata.get("error", {})
        status = meta.get("httpStatusCode", 400)
        entry = (meta.get("code", shape.name), status, meta.get("senderFault", status < 500))
        index[shape.name] = index[entry[0]] = entry
    return index


def error_response(
    service: str, code: str, message: str, request_id: str, *, status: int | None = None
) -> tuple[int, bytes]:
    """(HTTP status, `<ErrorResponse>` body). `code` may be a model shape name (`NoSuchEntityException`) or the
    wire code (`NoSuchEntity`); codes outside the model (ValidationError, InvalidAction...) default to 400."""
    wire, model_status, sender = _error_index(service).get(code, (code, 400, True))
    status = status or model_status
    sender = sender if status == model_status else status < 500
    body = (
        f'<ErrorResponse xmlns="{_namespace(service)}"><Error><Type>{"Sender" if sender else "Receiver"}</Type>'
        f"<Code>{escape(wire)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
    )
    return status, body.encode()


def auth_error_response(service: str, error: AwsAuthError, request_id: str) -> tuple[int, bytes]:
    """A SigV4 failure as IAM/STS report it (InvalidClientTokenId, SignatureDoesNotMatch, ...)."""
    return error_response(service, error.query_code, error.query_message, request_id, status=error.query_status)
