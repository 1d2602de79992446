from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.parsers import create_parser

from soko.aws.errors import InvalidRequest
from soko.aws.json_protocol import dumps, epoch_seconds, error_body, load_body, parse_target
from soko.aws.service_model import get_service_model


def parse_with_botocore(operation: str, body: bytes, status: int = 200) -> dict:
    model = get_service_model("ecr").operation_model(operation)
    response = {"body": body, "headers": {"x-amzn-requestid": "req-1"}, "status_code": status}
    return create_parser("json").parse(response, model.output_shape)


def test_parse_target() -> None:
    assert parse_target("AmazonEC2ContainerRegistry_V20150921.CreateRepository") == "CreateRepository"


@pytest.mark.parametrize(
    "target", [None, "", "CreateRepository", "DynamoDB_20120810.Query", "AmazonEC2ContainerRegistry_V20150921."]
)
def test_bad_target_is_unknown_operation(target: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_target(target)
    assert info.value.type_name == "UnknownOperationException"


def test_load_body() -> None:
    assert load_body(b"") == {}
    assert load_body(b'{"a": 1}') == {"a": 1}
    for bad in (b"{", b"\xff\xfe", b"[1,"):
        with pytest.raises(InvalidRequest) as info:
            load_body(bad)
        assert info.value.type_name == "SerializationException"


def test_error_body_is_read_by_botocore() -> None:
    body = error_body("RepositoryNotFoundException", "The repository with name 'x' does not exist", extra="y")
    assert json.loads(body) == {
        "__type": "RepositoryNotFoundException",
        "message": "The repository with name 'x' does not exist",
        "extra": "y",
    }
    parsed = parse_with_botocore("DescribeRepositories", body, 400)
    assert parsed["Error"]["Code"] == "RepositoryNotFoundException"
    assert parsed["Error"]["Message"] == "The repository with name 'x' does not exist"


def test_epoch_seconds() -> None:
    assert epoch_seconds(datetime(2026, 1, 1, tzinfo=UTC)) == 1767225600.0
    assert epoch_seconds(datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)) == 1767225600.123
    assert epoch_seconds(datetime(2026, 1, 1)) == 1767225600.0  # naive means UTC


def test_response_round_trips_through_botocore() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    body = dumps(
        {
            "repositories": [
                {
                    "repositoryName": "team/app",
                    "createdAt": created,
                    "imageScanningConfiguration": {"scanOnPush": True},
                }
            ]
        }
    )
    parsed = parse_with_botocore("DescribeRepositories", body)
    repo = parsed["repositories"][0]
    assert repo["createdAt"] == created and repo["repositoryName"] == "team/app"
    assert json.loads(body)["repositories"][0]["createdAt"] == 1767323045.678


def test_bytes_are_base64() -> None:
    assert json.loads(dumps({"b": b"\x00\xff"})) == {"b": "AP8="}
    with pytest.raises(TypeError):
        dumps({"x": object()})
