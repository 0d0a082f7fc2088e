"""Names and small value types."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

# A JSON-schema (ECMA 262) regex too, for the OpenAPI document; Python checks it with
# fullmatch, because re's "$" also matches before a trailing newline ("web1\n").
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_MAX_LENGTH = 63
NAME_RULE = (
    "1 to 63 characters: lowercase letters, digits and '-', starting with a letter and not "
    "ending with '-'"
)
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: {NAME_RULE}")
    return value


# The JSON schema publishes the rule check_name enforces, so the OpenAPI document states
# which names are valid (a schema-valid name is accepted); check_name gives the message.
NAME_SCHEMA = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "minLength": 1,
    "maxLength": NAME_MAX_LENGTH,
    "description": NAME_RULE,
}
Name = Annotated[str, AfterValidator(check_name), WithJsonSchema(NAME_SCHEMA)]


class Frozen(BaseModel):
    """Base of every stored model: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
