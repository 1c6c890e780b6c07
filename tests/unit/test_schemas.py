"""The JSON Schemas in ``schemas/`` are well-formed, complete, bounded and self-contained."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from hub.contract import validator_for
from partner_sdk.codes import COUNTRIES, CURRENCIES
from partner_sdk.messages import (
    DATE_PATTERN,
    MESSAGE_TYPES,
    MONEY_PATTERN,
    TIMESTAMP_PATTERN,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FILES = sorted(SCHEMAS.glob("*.json"))
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def load(path: Path) -> dict[str, Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def subschemas(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in a schema document (``examples`` hold data, not schemas)."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key in {"examples", "enum", "const", "default", "required"}:
                continue
            if key in {"properties", "$defs"}:
                for name, sub in value.items():
                    yield from subschemas(sub, f"{where}/{key}/{name}")
            else:
                yield from subschemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from subschemas(item, f"{where}/{index}")


def types_of(node: dict[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def test_one_schema_file_per_message_type() -> None:
    assert FILES, f"no schemas in {SCHEMAS}"
    assert {p.name for p in FILES} == {f"{t}.v1.json" for t in MESSAGE_TYPES}


@pytest.fixture(params=FILES, ids=[p.name for p in FILES])
def schema_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_is_a_valid_draft_2020_12_schema(schema_file: Path) -> None:
    schema = load(schema_file)
    Draft202012Validator.check_schema(schema)
    message_type = schema_file.name.removesuffix(".v1.json")
    assert schema["$schema"] == DRAFT
    assert schema["$id"] == f"https://onewindow.dev/schemas/{schema_file.name}"
    assert message_type in schema["title"]
    assert schema["description"].strip()
    assert schema["type"] == "object"


def test_every_object_is_closed_every_string_and_array_bounded(schema_file: Path) -> None:
    schema = load(schema_file)
    problems: list[str] = []
    for where, node in subschemas(schema):
        kinds = types_of(node)
        if "properties" in node and "object" not in kinds:
            problems.append(f"{where}: properties without type object")
        if "object" in kinds and node.get("additionalProperties") is not False:
            problems.append(f"{where}: object without additionalProperties: false")
        if "object" in kinds and not set(node.get("required", [])) <= set(node["properties"]):
            problems.append(f"{where}: requires an undeclared property")
        if "string" in kinds and not isinstance(node.get("maxLength"), int):
            problems.append(f"{where}: string without maxLength")
        if "array" in kinds and not isinstance(node.get("maxItems"), int):
            problems.append(f"{where}: array without maxItems")
        if "$ref" in node and not node["$ref"].startswith("#/$defs/"):
            problems.append(f"{where}: $ref outside this file: {node['$ref']}")
        if "$ref" not in node and not kinds and where != "#":
            problems.append(f"{where}: no type")
    assert not problems, "\n".join(problems)


def test_every_ref_resolves_and_every_def_is_used(schema_file: Path) -> None:
    schema = load(schema_file)
    defs = schema.get("$defs", {})
    refs = {node["$ref"] for _, node in subschemas(schema) if "$ref" in node}
    assert {ref.removeprefix("#/$defs/") for ref in refs} == set(defs)


def test_shared_definitions_are_the_contracts(schema_file: Path) -> None:
    defs = load(schema_file).get("$defs", {})
    if "Money" in defs:
        assert defs["Money"]["type"] == "string"
        assert defs["Money"]["pattern"] == MONEY_PATTERN
    if "Currency" in defs:
        assert defs["Currency"]["enum"] == sorted(CURRENCIES)
    if "Country" in defs:
        assert defs["Country"]["enum"] == sorted(COUNTRIES)
    if "Timestamp" in defs:
        assert defs["Timestamp"]["format"] == "date-time"
        assert defs["Timestamp"]["pattern"] == TIMESTAMP_PATTERN
    if "Date" in defs:
        assert defs["Date"]["format"] == "date"
        assert defs["Date"]["pattern"] == DATE_PATTERN == r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def test_examples_are_valid(schema_file: Path) -> None:
    schema = load(schema_file)
    message_type = schema_file.name.removesuffix(".v1.json")
    examples = schema.get("examples")
    assert isinstance(examples, list) and examples
    plain = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for example in examples:
        assert [e.message for e in plain.iter_errors(example)] == []
        assert [e.message for e in validator_for(message_type).iter_errors(example)] == []


def test_claim_example_looks_like_a_real_placement() -> None:
    claim = load(SCHEMAS / "claim.placed.v1.json")["examples"][0]
    assert claim["creditor_id"] == "flexspace"
    for field in ("creditor_entity", "invoice_number", "invoice_date", "due_date", "currency"):
        assert claim[field]
    for field in ("principal", "interest", "fees", "contract_ref", "notes"):
        assert claim[field]
    debtor = claim["debtor"]
    for field in ("name", "kind", "country", "address", "email", "phone", "language"):
        assert debtor[field]
    assert debtor.get("registration_id") or debtor.get("vat_id")
