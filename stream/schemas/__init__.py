"""JSON Schemas of the messages the product writes, shipped as package data.

`verdict.v1.json` describes a message of the verdicts topic whose `schema` field is
`oanet.contracts.VERDICT_SCHEMA`. A change to the message is a new version and a new file;
readers pick the schema by the message's `schema` field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from oanet.contracts import VERDICT_SCHEMA


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by its message `schema` value (e.g. "oanet.verdict.v1")."""
    filename = name.removeprefix("oanet.") + ".json"
    return json.loads(resources.files(__package__).joinpath(filename).read_text(encoding="utf-8"))


def verdict_schema() -> dict[str, Any]:
    return load_schema(VERDICT_SCHEMA)


def verdict_validator():
    """A jsonschema validator of verdict messages (format checks on)."""
    import jsonschema

    schema = verdict_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
