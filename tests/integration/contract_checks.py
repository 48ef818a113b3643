"""Schemathesis hooks for tests/integration/test_contract_fuzzing.py.

`positive_data_acceptance` sends schema-valid requests and expects them accepted. The
document states every rule a schema can; the few it cannot (which hosts are special-use,
whether a cursor is one we issued, what time it is now, the configured plans and blocked
words, lone surrogates in JSON strings, which uploads exist and what a file's bytes are)
stay 422s with the codes below. The run lets a schema-valid request get a 422
(schemathesis.toml), and this check fails it unless every field error carries one of
these codes.

One filter works around the fuzzer: its coverage phase derives some "invalid" bodies from
one branch of a conditional (it drops `prompt` from a body with images, which the whole
schema allows); a negative case whose only negative part is a body the document's own
schema accepts is not sent.
"""

from typing import Any

import jsonschema_rs
import schemathesis

RULES_NO_SCHEMA_CAN_STATE = frozenset(
    {
        "url_host_not_public",  # special-use names (.local, .internal, .example, ...)
        "invalid_cursor",  # base64url that this service did not issue
        "in_the_past",  # an API key's expiry, against the clock
        "unknown_plan",  # PLANS is configuration
        "content_policy",  # what the moderation provider says of a prompt or an image
        "prompt_invalid_unicode",  # JSON strings may carry lone surrogates
        "upload_not_found",  # which uploads exist, and whose
        "upload_wrong_kind",  # what an upload is
        "upload_invalid",  # what a file's bytes are (pixels, codecs, length)
    }
)


@schemathesis.check
def refused_only_for_rules_no_schema_can_state(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    codes = {error["code"] for error in response.json().get("errors", [])}
    unexpected = codes - RULES_NO_SCHEMA_CAN_STATE
    if not codes or unexpected:
        raise AssertionError(
            f"schema-valid data refused for a rule the schema could state: {sorted(unexpected)}"
            f"\n{response.text}"
        )


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return True
    negative = {
        location.value for location, part in meta.components.items() if part.mode.is_negative
    }
    if negative != {"body"} or not isinstance(case.body, (dict, list)):
        return True
    document = case.operation.schema.raw_schema
    operation = document["paths"][case.operation.path][case.operation.method.lower()]
    content = operation["requestBody"]["content"]
    if "application/json" not in content:  # a file upload: its bytes are not JSON
        return True
    body_schema = content["application/json"]["schema"]
    validator = jsonschema_rs.validator_for(
        {**body_schema, "components": document["components"]}, validate_formats=True
    )
    return not validator.is_valid(case.body)
