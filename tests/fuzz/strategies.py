"""Hypothesis strategies for hostile requests: ECR JSON bodies, IAM/STS Query forms and /v2/ requests, shaped by
botocore's service models so that many get past the first checks, salted with the inputs that once broke Soko
(deep nesting, escaped lone surrogates, numbers of thousands of digits)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

import botocore.session
from hypothesis import strategies as st

_models = botocore.session.get_session()
ECR = _models.get_service_model("ecr")
IAM = _models.get_service_model("iam")
STS = _models.get_service_model("sts")

NASTY_TEXT = ["", "\x00", "é", "a" * 300, "9" * 5000, "../../etc", "%00", "${x}", "*", "?", "\ufffd", " "]
# Raw JSON fragments no str can produce through json.dumps: escaped lone surrogates, huge numbers, deep nesting.
RAW_JSON = ['"\\ud800"', '"a\\udfff"', "9" * 5000, "1e999999", "-" + "9" * 30, "[" * 2000 + "]" * 2000, "NaN"]

text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_TEXT))
# header values: visible ASCII, no surrounding blanks (HTTP clients refuse to send anything else)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)


def _members(model, operation: str) -> list[str]:
    shape = model.operation_model(operation).input_shape
    return list(shape.members) if shape is not None else []


@st.composite
def ecr_requests(draw) -> tuple[str, bytes]:
    """(operation, body)."""
    operation = draw(st.one_of(st.sampled_from(ECR.operation_names), ascii_text))  # X-Amz-Target: a header
    names = _members(ECR, operation) if operation in ECR.operation_names else []
    kind = draw(st.sampled_from(["shaped", "shaped", "raw", "bytes"]))
    if kind == "bytes":
        return operation, draw(st.binary(max_size=200))
    if kind == "raw":
        return operation, json.dumps(draw(json_values)).encode()
    params = {name: draw(json_values) for name in names if draw(st.booleans())}
    body = json.dumps(params)
    if names and draw(st.booleans()):  # splice a raw fragment in as one member's value
        body = (
            body[:-1]
            + ("," if params else "")
            + f'"{draw(st.sampled_from(names))}":{draw(st.sampled_from(RAW_JSON))}}}'
        )
    return operation, body.encode()


@st.composite
def query_requests(draw) -> tuple[str, bytes]:
    """(signing service, form body)."""
    service, model = draw(st.sampled_from([("iam", IAM), ("iam", IAM), ("sts", STS)]))
    action = draw(st.one_of(st.sampled_from(model.operation_names), text))
    names = _members(model, action) if action in model.operation_names else []
    fields = [("Action", action), ("Version", model.api_version)]
    for name in names:
        if draw(st.booleans()):
            key = draw(st.sampled_from([name, f"{name}.member.1", f"{name}.member.{'9' * 30}", f"{name}.entry.1.key"]))
            value = draw(st.one_of(text, st.sampled_from(RAW_JSON), st.integers().map(str)))
            fields.append((key, value))
    fields += draw(st.lists(st.tuples(text, text), max_size=3))
    return service, "&".join(
        f"{quote(k, safe='', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}" for k, v in fields
    ).encode()


@dataclass(frozen=True)
class OciRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


header_text = st.one_of(
    ascii_text,
    st.sampled_from(["bytes=0-", "bytes=-1", f"bytes={'9' * 5000}-", "0-0", f"0-{'9' * 5000}", "bytes=1-0", "*"]),
)
segment = st.one_of(
    st.sampled_from(["fuzz", "fuzz/app", "a" * 300, "UPPER", "x..y", "%2e%2e", "_", "-a"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#"), min_size=1, max_size=12),
)
reference = st.one_of(
    st.sampled_from(["latest", "sha256:" + "0" * 64, "sha256:abc", "sha512:" + "f" * 128, "md5:00", "", "a" * 200]),
    segment,
)


@st.composite
def oci_requests(draw) -> OciRequest:
    name = draw(segment)
    tail = draw(
        st.sampled_from(
            ["manifests/{ref}", "blobs/{ref}", "blobs/uploads/", "blobs/uploads/{ref}", "tags/list", "referrers/{ref}"]
        )
    ).format(ref=quote(draw(reference), safe=":/"))
    path = draw(st.sampled_from(["/v2/", "/v2/_catalog", f"/v2/{name}/{tail}", f"/v2/{name}/{tail}"]))
    params = draw(
        st.dictionaries(
            st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType"]), header_text, max_size=3
        )
    )
    if params:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Range", "Content-Range", "Content-Type", "Accept", "Docker-Content-Digest"]),
            header_text,
            max_size=3,
        )
    )
    body = draw(st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode())))
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]))
    return OciRequest(method, path, headers, body if method in ("PUT", "PATCH", "POST") else b"")
