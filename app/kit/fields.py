"""Field types that request bodies of every resource share: one line of text, RFC 3339
date-times, whole numbers as JSON Schema counts them. Each refusal is a
`PydanticCustomError` whose type is the stable error code."""

import re
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

# one line of text without control characters (Postgres refuses NUL in text; the rest
# has no place in a name or a description)
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_text(value: object) -> object:
    """Only RFC 3339 text, as the schema's `date-time` says: pydantic alone would also read
    a number as Unix time and a bare date as midnight."""
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise PydanticCustomError(
        "invalid_datetime", "give an RFC 3339 date-time with an offset: 2026-11-26T09:30:00Z"
    )


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


def _whole_number(value: object) -> object:
    """A JSON integer as JSON Schema counts them (8 and 8.0), never a string or a boolean."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("invalid_type", "Input should be a whole number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
