from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soko.aws.service_model import InvalidRequest, get_service_model, validate_request

UPLOAD_ID = "0f2cbbb5-8c8d-4b7e-9a61-3e35a7d2b3f1"
REPO_PATTERN = get_service_model("ecr").shape_for("RepositoryName").metadata["pattern"]


def rejected(operation: str, params: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_request(operation, params)
    return info.value


def test_model_is_cached() -> None:
    assert get_service_model("ecr") is get_service_model("ecr")


def test_valid_create_repository_passes_through() -> None:
    params = {
        "repositoryName": "team/app-1",
        "imageTagMutability": "IMMUTABLE",
        "tags": [{"Key": "k", "Value": "v"}],
        "imageScanningConfiguration": {"scanOnPush": True},
        "encryptionConfiguration": {"encryptionType": "AES256"},
    }
    assert validate_request("CreateRepository", params) == params


def test_unknown_members_are_dropped() -> None:
    assert validate_request("CreateRepository", {"repositoryName": "app", "bogus": 1}) == {"repositoryName": "app"}


def test_null_is_absent() -> None:
    assert validate_request("DescribeRepositories", {"maxResults": None}) == {}


@pytest.mark.parametrize("name", ["App", "a", "-app", "app/", "app//x", "a" * 257, "app:latest"])
def test_repository_name_constraints(name: str) -> None:
    err = rejected("CreateRepository", {"repositoryName": name})
    assert err.type_name == "InvalidParameterException"


def test_repository_name_pattern_message() -> None:
    err = rejected("CreateRepository", {"repositoryName": "Bad_Name!"})
    assert err.message == (
        "Invalid parameter at 'repositoryName' failed to satisfy constraint: "
        f"'must satisfy regular expression '{REPO_PATTERN}''"
    )


def test_repository_name_length_message() -> None:
    err = rejected("CreateRepository", {"repositoryName": "a"})
    assert err.message == (
        "1 validation error detected: Value 'a' at 'repositoryName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 2"
    )


def test_missing_required() -> None:
    err = rejected("CreateRepository", {})
    assert err.message == (
        "1 validation error detected: Value null at 'repositoryName' failed to satisfy constraint: "
        "Member must not be null"
    )


@pytest.mark.parametrize(("value", "bound"), [(0, "greater than or equal to 1"), (1001, "less than or equal to 1000")])
def test_max_results_range(value: int, bound: str) -> None:
    err = rejected("DescribeRepositories", {"maxResults": value})
    assert err.message == (
        f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy constraint: "
        f"Member must have value {bound}"
    )


def test_enum_violation() -> None:
    err = rejected("ListImages", {"repositoryName": "app", "filter": {"tagStatus": "SOME"}})
    assert err.message == (
        "1 validation error detected: Value 'SOME' at 'filter.tagStatus' failed to satisfy constraint: "
        "Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]"
    )


def test_several_violations_are_counted() -> None:
    err = rejected("BatchGetImage", {"repositoryName": "app", "imageIds": [], "acceptedMediaTypes": ["x"] * 101})
    assert err.message.startswith("2 validation errors detected: ")
    assert "'imageIds'" in err.message and "'acceptedMediaTypes'" in err.message


def test_nested_list_paths() -> None:
    err = rejected("BatchGetImage", {"repositoryName": "app", "imageIds": [{"imageTag": "ok"}, {"imageTag": ""}]})
    assert "at 'imageIds.2.member.imageTag'" in err.message


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("DescribeRepositories", {"maxResults": "10"}, "STRING_VALUE can not be converted to an Integer"),
        ("DescribeRepositories", {"maxResults": True}, "BOOLEAN_VALUE can not be converted to an Integer"),
        ("DescribeRepositories", {"maxResults": 1.5}, "NUMBER_VALUE can not be converted to an Integer"),
        ("DescribeRepositories", {"maxResults": 2**40}, "NUMBER_VALUE can not be converted to an Integer"),
        ("DescribeRepositories", {"repositoryNames": "app"}, "STRING_VALUE can not be converted to a List"),
        ("DescribeRepositories", {"repositoryNames": {"a": 1}}, "Start of structure or map found where not expected."),
        ("CreateRepository", {"repositoryName": 5}, "NUMBER_VALUE can not be converted to a String"),
        ("CreateRepository", {"repositoryName": ["app"]}, "Start of list found where not expected"),
        (
            "CreateRepository",
            {"repositoryName": "app", "imageScanningConfiguration": {"scanOnPush": "yes"}},
            "STRING_VALUE can not be converted to a Boolean",
        ),
        (
            "CreateRepository",
            {"repositoryName": "app", "imageScanningConfiguration": []},
            "Start of list found where not expected",
        ),
        ("CreateRepository", [], "Start of structure or map was expected, but not found."),
        ("CreateRepository", "x", "Start of structure or map was expected, but not found."),
    ],
)
def test_wrong_types_are_serialization_errors(operation: str, params: Any, message: str) -> None:
    err = rejected(operation, params)
    assert (err.type_name, err.message) == ("SerializationException", message)


def test_unknown_operation() -> None:
    assert rejected("LaunchRocket", {}).type_name == "UnknownOperationException"


def upload(blob: Any) -> dict[str, Any]:
    return {
        "repositoryName": "app",
        "uploadId": UPLOAD_ID,
        "partFirstByte": 0,
        "partLastByte": 3,
        "layerPartBlob": blob,
    }


def test_layer_part_blob_is_decoded() -> None:
    out = validate_request("UploadLayerPart", upload(base64.b64encode(b"\x00\x01\x02\xff").decode()))
    assert out["layerPartBlob"] == b"\x00\x01\x02\xff"
    assert out["partLastByte"] == 3


@pytest.mark.parametrize("blob", ["not base64!", "AAA", 12, ["AA=="]])
def test_layer_part_blob_must_be_base64(blob: Any) -> None:
    assert rejected("UploadLayerPart", upload(blob)).type_name == "SerializationException"


def test_layer_part_blob_max_length() -> None:
    big = base64.b64encode(b"\x00" * (20 * 1024 * 1024 + 1)).decode()
    err = rejected("UploadLayerPart", upload(big))
    assert err.type_name == "InvalidParameterException"
    assert "Value at 'layerPartBlob'" in err.message and "less than or equal to 20971520" in err.message


def test_upload_id_pattern() -> None:
    params = upload("AA==")
    params["uploadId"] = "nope"
    assert rejected("UploadLayerPart", params).message.startswith("Invalid parameter at 'uploadId'")


# --- property: random JSON never escapes the declared error --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _member_values(operation: str) -> st.SearchStrategy[dict[str, Any]]:
    shape = get_service_model("ecr").operation_model(operation).input_shape
    names = list(shape.members) if shape else []
    return st.dictionaries(st.sampled_from(names) if names else st.text(max_size=5), json_values, max_size=6)


OPERATIONS = sorted(get_service_model("ecr").operation_names)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(OPERATIONS).flatmap(lambda op: st.tuples(st.just(op), _member_values(op))))
def test_random_params_only_raise_invalid_request(case: tuple[str, dict[str, Any]]) -> None:
    operation, params = case
    try:
        out = validate_request(operation, params)
    except InvalidRequest as err:
        assert err.type_name in {"InvalidParameterException", "SerializationException"}
    else:
        json.dumps(out, default=repr)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_random_bodies_only_raise_invalid_request(body: Any) -> None:
    try:
        validate_request("CreateRepository", body)
    except InvalidRequest:
        pass


def test_maps_are_walked() -> None:
    # No ECR input has a map today; check the walker on a tiny synthetic model instead.
    from botocore.model import ServiceModel

    from soko.aws.service_model import _Validator

    model = ServiceModel(
        {
            "metadata": {"protocol": "json", "apiVersion": "1"},
            "operations": {},
            "shapes": {
                "Labels": {"type": "map", "key": {"shape": "Key"}, "value": {"shape": "Count"}, "max": 2},
                "Key": {"type": "string", "min": 1, "max": 3},
                "Count": {"type": "integer", "min": 0},
            },
        }
    )
    shape = model.shape_for("Labels")
    ok = _Validator(json_wire=True, pattern_style="coral")
    assert ok.walk({"a": 1, "bb": 0}, shape, "labels") == {"a": 1, "bb": 0}
    assert not ok.violations
    bad = _Validator(json_wire=True, pattern_style="coral")
    bad.walk({"toolong": -1, "b": 2, "c": 3}, shape, "labels")
    assert len(bad.violations) == 3  # map size, key length, value range
    with pytest.raises(InvalidRequest):
        bad.walk({"a": "1"}, shape, "labels")
