"""The OpenAPI document, shaped for the code generated from it.

FastAPI derives most of it from the routes and models; this adds what generators and
contract fuzzers need on top: operationIds that read well in generated code (`createJob`,
`streamJobEvents`), links from a created resource to the operations on it, optional
parameters that are absent rather than `null`, problem bodies under their one media type,
the shapes of live events (`JobEventOut`, the `data` of every SSE `job` event, and
`QueueSpotOut`, of every `queue` event, `BalanceOut`, of every `credits` event), and an
example for every JSON request and answer.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.credits.schemas import BalanceOut
from app.jobs.schemas import JobEventOut, QueueSpotOut
from app.kit.errors import PROBLEM_MEDIA_TYPE

COMPONENT_REF = "#/components/schemas/{model}"


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase: create_job -> createJob."""
    head, *rest = route.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _links(target: str, parameter: str, *operations: str) -> dict[str, Any]:
    return {name: {"operationId": name, "parameters": {parameter: target}} for name in operations}


_JOB_LINKS = _links(
    "$response.body#/id",
    "job_id",
    "getJob",
    "cancelJob",
    "deleteJob",
    "promoteJob",
    "streamJobEvents",
    "getJobContent",
)
# (method, path) -> links of its success responses
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/jobs"): _JOB_LINKS,
    ("post", "/jobs/{job_id}/promote"): _JOB_LINKS,
    ("post", "/jobs/batch"): _links("$response.body#/id", "batch_id", "getBatch"),
    ("post", "/admin/api-keys"): _links(
        "$response.body#/id", "key_id", "getApiKey", "revokeApiKey"
    ),
    ("post", "/admin/webhook-endpoints"): _links(
        "$response.body#/id",
        "endpoint_id",
        "getWebhookEndpoint",
        "updateWebhookEndpoint",
        "deleteWebhookEndpoint",
        "rotateWebhookSecret",
        "sendTestEvent",
        "listWebhookDeliveries",
    ),
    ("post", "/admin/webhook-endpoints/{endpoint_id}/test"): {
        name: {
            "operationId": name,
            "parameters": {
                "endpoint_id": "$request.path.endpoint_id",
                "delivery_id": "$response.body#/id",
            },
        }
        for name in ("getWebhookDelivery", "retryWebhookDelivery")
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """`app.api.openapi`: built once per app, then served as it is."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if not parameter.get("required"):
                    parameter["schema"] = _without_null(parameter["schema"])
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if PROBLEM_MEDIA_TYPE in content:  # the route's own media type is not a problem's
                    response["content"] = {PROBLEM_MEDIA_TYPE: content[PROBLEM_MEDIA_TYPE]}
                if status.startswith("2") and (method, path) in LINKS:
                    response["links"] = LINKS[(method, path)]
    for live_event in (JobEventOut, QueueSpotOut, BalanceOut):
        _add_component(document, live_event.model_json_schema(ref_template=COMPONENT_REF))
    _add_examples(document)
    app.openapi_schema = document
    return document


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's `anyOf [X, null]` as X: leaving it out is how a client says
    "none" (a literal `null` in a header or query would be refused)."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**branches[0], **rest}


def _add_examples(document: dict[str, Any]) -> None:
    """An `example` on every JSON body of a request or a 2xx answer that has none."""
    components = document["components"]["schemas"]
    for operations in document["paths"].values():
        for operation in operations.values():
            bodies = [operation.get("requestBody", {})] + [
                response
                for status, response in operation["responses"].items()
                if status.startswith("2")
            ]
            for body in bodies:
                media = body.get("content", {}).get("application/json")
                if media is not None and "example" not in media and "examples" not in media:
                    media["example"] = example_of(media["schema"], components)


_FORMAT_EXAMPLES = {
    "uuid": "0f5b6c1e-9d3a-4f7b-8c2d-1e0f9a8b7c6d",
    "date-time": "2026-11-26T09:30:00Z",
    "date": "2026-11-26",
    "uri": "https://cdn.example.com/boat.png",
}


def example_of(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A value of `schema`: the examples its fields carry where they have some, else a
    plain value of each type (tests check every one against its schema)."""
    if "$ref" in schema:
        return example_of(components[schema["$ref"].rsplit("/", 1)[1]], components)
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    for key in ("example", "const"):
        if key in schema:
            return schema[key]
    if schema.get("default") is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = [branch for branch in schema.get(key, []) if branch != {"type": "null"}]
        if branches:
            return example_of(branches[0], components)
    match schema.get("type"):
        case "object":
            properties = schema.get("properties", {})
            return {name: example_of(sub, components) for name, sub in properties.items()}
        case "array":
            item = example_of(schema.get("items", {}), components)
            return [item] * max(schema.get("minItems", 1), 1)
        case "string":
            return _FORMAT_EXAMPLES.get(schema.get("format", ""), "string")
        case "integer" | "number":
            return schema.get("minimum", 1)
        case "boolean":
            return True
    return None


def _add_component(document: dict[str, Any], schema: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(schema["title"], schema)
