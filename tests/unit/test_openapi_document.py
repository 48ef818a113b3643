"""The OpenAPI document as generated code and fuzzers read it: operation ids that read
well, an example for every JSON body that the body's own schema accepts, optional
parameters that are never `null`, links from a created job to what can be done with it."""

import re
from typing import Any

import jsonschema_rs
import pytest

from app.config import Settings
from app.main import create_app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///unused.db")  # type: ignore[call-arg]
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_operation_ids_are_unique_camel_case_verbs(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]*)*", name) for name in ids), ids
    by_path = {(m, p): op["operationId"] for m, p, op in operations(document)}
    assert by_path[("post", "/jobs")] == "createJob"
    assert by_path[("get", "/jobs/{job_id}/events")] == "streamJobEvents"
    assert by_path[("post", "/jobs/batch")] == "createBatch"


def test_every_json_body_has_an_example_its_schema_accepts(document: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in operations(document):
        bodies = [operation.get("requestBody", {})] + [
            answer for status, answer in operation["responses"].items() if status[0] == "2"
        ]
        for body in bodies:
            media = body.get("content", {}).get("application/json")
            if media is None:
                continue
            schema = {**media["schema"], "components": document["components"]}
            validator = jsonschema_rs.validator_for(schema, validate_formats=True)
            example = media.get("example", (media["schema"].get("examples") or [None])[0])
            if example is None and "$ref" in media["schema"]:
                name = media["schema"]["$ref"].rsplit("/", 1)[1]
                example = document["components"]["schemas"][name]["examples"][0]
            assert validator.is_valid(example), (method, path, example)
            checked += 1
    assert checked >= 36


def test_optional_parameters_are_absent_not_null(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert "null" not in str(parameter["schema"].get("anyOf", "")), (method, path)
            assert parameter["schema"].get("type") != "null", (method, path)


def test_a_created_job_links_to_what_can_be_done_with_it(document: dict[str, Any]) -> None:
    links = document["paths"]["/jobs"]["post"]["responses"]["202"]["links"]
    assert {"getJob", "cancelJob", "streamJobEvents"} <= set(links)
    assert links["getJob"]["parameters"] == {"job_id": "$response.body#/id"}
    operation_ids = {operation["operationId"] for _, _, operation in operations(document)}
    for _, _, operation in operations(document):
        for answer in operation["responses"].values():
            for link in answer.get("links", {}).values():
                assert link["operationId"] in operation_ids
