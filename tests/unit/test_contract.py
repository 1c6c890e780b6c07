"""The pydantic models and the JSON Schemas accept and reject the same documents.

For every message type the examples of its schema are mutated, guided by the schema: each
required field dropped, unknown fields added at every level, every value replaced by
values of the wrong JSON type, strings made too long or just long enough, bad money,
currencies, countries, dates and timestamps, integers out of bounds, NaN... For each
mutant the model (``model_validate_json``) and the schema (``hub.contract``'s validator)
must give the same answer, and the answer expected.
"""

from __future__ import annotations

import copy
import json
import math
import re
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pydantic
import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hub import contract
from hub.contract import (
    ContractError,
    explain,
    pydantic_errors,
    schema_for,
    validate,
    validator_for,
)
from partner_sdk.messages import MESSAGE_TYPES, ClaimPlaced, ErrorDetail

TYPES = sorted(MESSAGE_TYPES)
MISSING = object()
# Strings longer than this are bounds-tested once, in a dedicated test, not per mutant.
LONG = 100_000

Case = tuple[str, Any, bool]  # label, document, expected to be valid


def body_of(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


def model_accepts(message_type: str, body: bytes) -> bool:
    try:
        MESSAGE_TYPES[message_type].model_validate_json(body)
    except pydantic.ValidationError:
        return False
    return True


def schema_accepts(message_type: str, body: bytes) -> bool:
    return validator_for(message_type).is_valid(pydantic_core.from_json(body))


# --- mutants ---------------------------------------------------------------------------

MONEY: dict[str, list[Any]] = {
    "invalid": [
        "1.2.3",
        "-5",
        "1e3",
        "+1",
        "01",
        "1.",
        ".5",
        "1.23456",
        "1,50",
        " 1",
        "1 ",
        "12.50\n",
        "\uff11\uff12",
        "",
        "NaN",
        "1234567890123456",
        "0x10",
    ],
    "valid": ["0", "0.5", "10", "1234.5678", "999999999999999.9999"],
    "wrong": [12.5, 12, 0],
}
CURRENCY: dict[str, list[Any]] = {
    "invalid": ["EURO", "eur", "EU", "", "XXX", "EUR\n", " EUR"],
    "valid": ["USD", "JPY"],
}
COUNTRY: dict[str, list[Any]] = {
    "invalid": ["XX", "de", "DEU", "D", "", "UK", "DE\n"],
    "valid": ["FR", "GB"],
}
TIMESTAMP: dict[str, list[Any]] = {
    "invalid": [
        "2025-03-03T09:00:00",  # no offset
        "2025-03-03 09:00:00Z",
        "2025-03-03T09:00Z",
        "2025-03-03T09:00:00+0100",
        "2025-03-03T09:00:00+01",
        "2025-03-03T09:00:00 Z",
        "2025-03-03T09:00:00,5Z",
        "2025-03-03T09:00:00.Z",
        "2025-03-03T09:00:00.1234567890Z",
        "2025-02-30T09:00:00Z",
        "2023-02-29T09:00:00Z",
        "2025-13-01T09:00:00Z",
        "2025-03-03T24:00:00Z",
        "2025-06-30T23:59:60Z",
        "2025-03-03T09:60:00Z",
        "2025-03-03T09:00:00+24:00",
        "2025-03-03T09:00:00+01:60",
        "0000-01-01T00:00:00Z",
        "+2025-03-03T09:00:00Z",
        "2025-3-3T09:00:00Z",
        "2025-03-03T09:00:00Z\n",
        "1700000000",
        "2025-03-03",
        "",
    ],
    "valid": [
        "2025-03-03T09:00:00Z",
        "2025-03-03t09:00:00z",
        "2025-03-03T09:00:00.5+01:00",
        "2025-03-03T09:00:00.123456789+23:59",
        "2025-03-03T09:00:00-00:00",
        "2024-02-29T12:00:00-12:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
    "wrong": [1700000000, 1700000000.5],
}
DATE: dict[str, list[Any]] = {
    "invalid": [
        "2025-02-30",
        "2023-02-29",
        "2025-1-1",
        "20250101",
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00",
        "0000-01-01",
        "2025-01-01\n",
        "2025-W01-1",
        "2025-001",
        "+2025-01-01",
        "1700000000",
        "",
    ],
    "valid": ["2024-02-29", "0001-01-01", "9999-12-31"],
    "wrong": [20250101, 1700000000.0],
}
EMAIL: dict[str, list[Any]] = {
    "invalid": [
        "a b@c.de",
        "a@b@c.de",
        "@c.de",
        "a@",
        "a\x1c@c.de",
        "a\u00a0@c.de",
        "a\ufeff@c.de",
        "a\u200b@c.de",
        "a\u2028@c.de",
        "a\x7f@c.de",
        "a@c.de\n",
        "a.c.de",
    ],
    "valid": ["müller@bücher.de", "a@b", "first.last+tag@example.co.uk"],
}
SPECIAL: dict[str, dict[str, list[Any]]] = {
    "#/$defs/Money": MONEY,
    "#/$defs/Currency": CURRENCY,
    "#/$defs/Country": COUNTRY,
    "#/$defs/Timestamp": TIMESTAMP,
    "#/$defs/Date": DATE,
}
WRONG_TYPED: list[Any] = [
    None,
    True,
    False,
    0,
    7,
    12.5,
    "x",
    [],
    ["x"],
    {},
    {"a": 1},
    math.nan,
    math.inf,
    -math.inf,
]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def replaced(document: Any, path: list[str | int], value: Any) -> Any:
    if not path:
        return value
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


def fits(node: dict[str, Any], text: str) -> bool:
    """Whether a string satisfies a (format-free) string schema; patterns are ^...$."""
    if not node.get("minLength", 0) <= len(text) <= node["maxLength"]:
        return False
    if "enum" in node:
        return text in node["enum"]
    pattern = node.get("pattern")
    return pattern is None or re.fullmatch(pattern[1:-1], text) is not None


def string_cases(node: dict[str, Any], value: str, name: str) -> Iterator[tuple[str, Any, bool]]:
    limit = node["maxLength"]
    if "enum" in node:
        yield "longest enum value", max(node["enum"], key=len), True
        yield "not in enum", "nope", False
        yield "upper case", value.upper(), value.upper() in node["enum"]
        yield "trailing newline", value + "\n", False
        return
    if limit <= LONG:
        yield "one too long", "a" * (limit + 1), False
        candidates = ["x" * limit, "A" * limit, "a" * limit, "1" * limit, "+" + "1" * (limit - 1)]
        candidates.append("a" * (limit - 2) + "@b")
        fitting = [c for c in candidates if fits(node, c)]
        assert fitting, f"no max-length candidate for {node}"
        yield "max length", fitting[0], True
    yield "empty", "", fits(node, "")
    if "pattern" in node:
        yield "trailing newline", value + "\n", fits(node, value + "\n")
        yield "leading space", " " + value, fits(node, " " + value)
    else:
        yield (
            "control characters and unicode",
            "\x00\t\n\u2028 é 😀",
            fits(node, "\x00\t\n\u2028 é 😀"),
        )
    if name == "email" and "pattern" in node:
        for text in EMAIL["invalid"]:
            yield f"email {text!r}", text, False
        for text in EMAIL["valid"]:
            yield f"email {text!r}", text, True


def integer_cases(node: dict[str, Any], value: int) -> Iterator[tuple[str, Any, bool]]:
    low, high = node.get("minimum"), node.get("maximum")
    yield "integral float", float(value), True
    yield "with a fraction", value + 0.5, False
    yield "as a string", str(value), False
    if low is not None:
        yield "minimum", low, True
        yield "below minimum", low - 1, False
        yield "below minimum as float", float(low - 1), False
    if high is not None:
        yield "maximum", high, True
        yield "above maximum", high + 1, False
        yield "maximum as exponent", float(high), True
    else:
        yield "huge", 10**30, True
        yield "huge float", 1e300, True
    yield "overflowing float", math.inf, False


def mutants(schema: dict[str, Any], example: dict[str, Any]) -> Iterator[Case]:
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = node.get("$ref")
        return (defs[ref.removeprefix("#/$defs/")], ref) if ref else (node, None)

    def walk(raw: dict[str, Any], value: Any, path: list[str | int]) -> Iterator[Case]:
        node, ref = resolve(raw)
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        kinds = {node["type"]} if isinstance(node["type"], str) else set(node["type"])
        for wrong in WRONG_TYPED:
            kind = json_type(wrong)
            if kind not in kinds and not (kind == "integer" and "number" in kinds):
                yield f"{where} = {wrong!r} (wrong type)", replaced(example, path, wrong), False
        if "null" in kinds and value is not None:
            yield f"{where} = null", replaced(example, path, None), True
        special = SPECIAL.get(ref or "")
        if special:
            for key, expected in (("invalid", False), ("valid", True), ("wrong", False)):
                for text in special.get(key, []):
                    yield f"{where} = {text!r}", replaced(example, path, text), expected
        elif isinstance(value, str):
            name = str(path[-1]) if path else ""
            for label, text, expected in string_cases(node, value, name):
                yield f"{where}: {label}", replaced(example, path, text), expected
        elif isinstance(value, int) and not isinstance(value, bool):
            for label, number, expected in integer_cases(node, value):
                yield f"{where}: {label} {number!r}", replaced(example, path, number), expected
        elif isinstance(value, dict):
            required = set(node.get("required", []))
            for name, sub in node["properties"].items():
                if name in value:
                    dropped = replaced(example, [*path, name], MISSING)
                    yield f"{where}.{name} dropped", dropped, name not in required
                    yield from walk(sub, value[name], [*path, name])
            yield f"{where}: unknown field", replaced(example, [*path, "unexpected"], "x"), False
            yield f"{where}: unknown null field", replaced(example, [*path, "zz"], None), False
            yield (
                f"{where}: every optional field dropped",
                replaced(example, path, {k: v for k, v in value.items() if k in required}),
                True,
            )
        elif isinstance(value, list):
            low, high = node.get("minItems", 0), node["maxItems"]
            yield f"{where}: empty", replaced(example, path, []), low == 0
            if value:
                filler = value[0]
                full = value + [filler] * (high - len(value))
                yield f"{where}: {high} items (maximum)", replaced(example, path, full), True
                yield f"{where}: too many items", replaced(example, path, [*full, filler]), False
                yield f"{where}: item of wrong type", replaced(example, path, [*value, "x"]), False
                for index, item in enumerate(value[:2]):
                    yield from walk(node["items"], item, [*path, index])

    yield "the example", example, True
    yield "NaN for the whole body", math.nan, False
    yield from walk(schema, example, [])


def all_cases(message_type: str) -> list[Case]:
    schema = schema_for(message_type)
    cases: list[Case] = []
    for number, example in enumerate(schema["examples"]):
        cases.extend(
            (f"example {number}: {label}", doc, ok) for label, doc, ok in mutants(schema, example)
        )
    return cases


@pytest.mark.parametrize("message_type", TYPES)
def test_model_and_schema_agree(message_type: str) -> None:
    cases = all_cases(message_type)
    assert len(cases) > 40
    wrong: list[str] = []
    for number, (label, document, expected) in enumerate(cases):
        body = body_of(document)
        by_model = model_accepts(message_type, body)
        by_schema = schema_accepts(message_type, body)
        if not by_model == by_schema == expected:
            wrong.append(f"{label}: expected {expected}, model {by_model}, schema {by_schema}")
        elif not expected and number % 4 == 0:  # a sample: explain re-validates
            details = explain(message_type, body)
            if not details or not all(d.path.startswith("$") for d in details):
                wrong.append(f"{label}: explain gave {details}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases disagree:\n" + "\n".join(wrong)


@pytest.mark.parametrize("message_type", TYPES)
def test_examples_parse_and_the_models_output_matches_the_schema(message_type: str) -> None:
    model = MESSAGE_TYPES[message_type]
    for example in schema_for(message_type)["examples"]:
        message = validate(message_type, body_of(example))
        assert isinstance(message, model)
        produced = message.to_json()
        assert validator_for(message_type).is_valid(json.loads(produced)), produced
        assert model.model_validate_json(produced) == message


def test_longest_document_content() -> None:
    schema = schema_for("document.added")
    limit = schema["properties"]["content_base64"]["maxLength"]
    example = schema["examples"][0]
    for length, expected in ((limit, True), (limit + 1, False)):
        body = body_of({**example, "content_base64": "A" * length})
        assert model_accepts("document.added", body) is expected
        assert schema_accepts("document.added", body) is expected


# --- the schema describes the model's fields -------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _choices(annotation: Any) -> set[str] | None:
    """The allowed values of an enum or Literal field (``None`` is dropped)."""
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return {member.value for member in annotation}
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _choices(arg) if arg is not type(None) else None
        if found:
            return found
    return None


def _compare(
    model: type[BaseModel], node: dict[str, Any], defs: dict[str, Any], where: str
) -> list[str]:
    problems: list[str] = []
    fields = model.model_fields
    if set(node["properties"]) != set(fields):
        problems.append(
            f"{where}: properties {sorted(node['properties'])} != fields {sorted(fields)}"
        )
        return problems
    required = {name for name, field in fields.items() if field.is_required()}
    if set(node["required"]) != required:
        problems.append(f"{where}: required {sorted(node['required'])} != {sorted(required)}")
    for name, field in fields.items():
        prop = node["properties"][name]
        target = defs[prop["$ref"].removeprefix("#/$defs/")] if "$ref" in prop else prop
        choices = _choices(field.annotation)
        if choices is not None and set(target.get("enum", [])) - {None} != choices:
            problems.append(f"{where}.{name}: enum {target.get('enum')} != {sorted(choices)}")
        if not field.is_required() and field.default is not None:
            default = pydantic_core.to_jsonable_python(field.default)
            if prop.get("default") != default:
                problems.append(f"{where}.{name}: default {prop.get('default')!r} != {default!r}")
        declared = target.get("type", [])
        nullable = "null" in ([declared] if isinstance(declared, str) else declared)
        if nullable != (not field.is_required() and field.default is None):
            problems.append(f"{where}.{name}: nullable in schema {nullable}")
        for nested in _models_in(field.annotation):
            ref = prop.get("$ref") or prop.get("items", {}).get("$ref", "")
            problems += _compare(
                nested, defs[ref.removeprefix("#/$defs/")], defs, f"{where}.{name}"
            )
    return problems


@pytest.mark.parametrize("message_type", TYPES)
def test_schema_has_the_models_fields_required_enums_and_defaults(message_type: str) -> None:
    schema = schema_for(message_type)
    problems = _compare(MESSAGE_TYPES[message_type], schema, schema.get("$defs", {}), "$")
    assert not problems, "\n".join(problems)


# --- explain -----------------------------------------------------------------------------


def claim() -> dict[str, Any]:
    example: dict[str, Any] = schema_for("claim.placed")["examples"][0]
    return example


def pairs(details: list[ErrorDetail]) -> list[tuple[str, str]]:
    return [(d.path, d.rule) for d in details]


def test_explain_missing_nested_field() -> None:
    document = claim()
    del document["debtor"]["country"]
    details = explain("claim.placed", body_of(document))
    assert pairs(details) == [("$.debtor", "required")]
    assert "country" in details[0].message


def test_explain_bad_currency() -> None:
    assert pairs(explain("claim.placed", body_of({**claim(), "currency": "eur"}))) == [
        ("$.currency", "enum")
    ]
    assert ("$.currency", "enum") in pairs(
        explain("claim.placed", body_of({**claim(), "currency": "EURO"}))
    )


def test_explain_bad_country_unknown_field_and_money() -> None:
    document = claim()
    document["debtor"]["address"]["country"] = "XX"
    document["debtor"]["address"]["zip"] = "20457"
    document["principal"] = "1.2.3"
    document["interest"] = 12.5
    assert pairs(explain("claim.placed", body_of(document))) == [
        ("$.debtor.address", "additionalProperties"),
        ("$.debtor.address.country", "enum"),
        ("$.interest", "type"),
        ("$.principal", "pattern"),
    ]


def test_explain_paths_into_arrays_are_indexed_and_sorted_numerically() -> None:
    schema = schema_for("case.assigned")
    document = schema["examples"][0]
    document["claims"] = [dict(document["claims"][0]) for _ in range(12)]
    document["claims"][11]["principal"] = "-1"
    document["claims"][2]["fees"] = "1e3"
    details = explain("case.assigned", body_of(document))
    assert pairs(details) == [
        ("$.claims[2].fees", "pattern"),
        ("$.claims[11].principal", "pattern"),
    ]


def test_explain_timestamp_without_offset() -> None:
    example = schema_for("case.accepted")["examples"][0]
    details = explain("case.accepted", body_of({**example, "occurred_at": "2025-03-03T09:00:00"}))
    assert ("$.occurred_at", "pattern") in pairs(details)
    assert ("$.occurred_at", "format") in pairs(details)


def test_explain_caps_details_and_message_length() -> None:
    document = schema_for("case.assigned")["examples"][0]
    document["claims"] = [{**document["claims"][0], "principal": "-1"} for _ in range(30)]
    details = explain("case.assigned", body_of(document))
    assert pairs(details) == [(f"$.claims[{n}].principal", "pattern") for n in range(20)]
    example = claim()
    long_field = {**example, "notes": "n" * 5000, "x" * 3000: 1}
    for detail in explain("claim.placed", body_of(long_field)):
        assert len(detail.message) <= 1000 and len(detail.path) <= 300


def test_explain_is_empty_for_a_valid_body() -> None:
    assert explain("claim.placed", body_of(claim())) == []


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"", "json"),
        (b"\xff", "json"),
        (b"\xef\xbb\xbf{}", "json"),
        (b'{"a":', "json"),
        (b"{'a': 1}", "json"),
        (b'"\\ud800"', "json"),
        (b"[" * 100_000 + b"]" * 100_000, "json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "json"),
        (b"1" * 5000, "json"),
        (b"[1]", "type"),
        (b"null", "type"),
        (b'"claim"', "type"),
        (b"NaN", "type"),
    ],
)
def test_explain_garbage_never_raises(body: bytes, rule: str) -> None:
    details = explain("claim.placed", body)
    assert pairs(details) == [("$", rule)]
    with pytest.raises(ContractError) as caught:
        validate("claim.placed", body)
    assert caught.value.details


def test_explain_odd_but_valid_json_never_raises() -> None:
    bodies = [
        b"{}",
        b'{"debtor": ' + b'{"debtor": ' * 200 + b"1" + b"}" * 201,
        b'{"principal": 1' + b"0" * 4000 + b"}",
        b'{"batch_size": 1' + b"0" * 4000 + b"}",
        b'{"\\u0000": "\\u0000", "currency": [[[[[]]]]], "debtor": {"address": []}}',
        json.dumps({"claims": [{"x": i} for i in range(3000)]}).encode(),
    ]
    for body in bodies:
        details = explain("claim.placed", body)
        assert details and all(isinstance(d, ErrorDetail) for d in details)
    assert pairs(explain("no.such.type", b"{}")) == [("$", "unknown_type")]


# --- validate, pydantic_errors, configuration -------------------------------------------


def test_validate_returns_the_model() -> None:
    message = validate("claim.placed", body_of(claim()))
    assert isinstance(message, ClaimPlaced)
    assert message.business_key == "FS-DE-0142/INV-2025-004711"


def test_validate_raises_contract_error_with_schema_details() -> None:
    document = claim()
    del document["debtor"]["country"]
    with pytest.raises(ContractError) as caught:
        validate("claim.placed", body_of(document))
    assert isinstance(caught.value, ValueError)
    assert pairs(caught.value.details) == [("$.debtor", "required")]
    assert "$.debtor" in str(caught.value)


def test_validate_unknown_type() -> None:
    with pytest.raises(ContractError) as caught:
        validate("claim.lost", b"{}")
    assert pairs(caught.value.details) == [("$", "unknown_type")]


def test_pydantic_errors_shape() -> None:
    document = claim()
    del document["debtor"]["country"]
    document["claims"] = 1
    with pytest.raises(pydantic.ValidationError) as caught:
        ClaimPlaced.model_validate_json(body_of(document))
    assert pairs(pydantic_errors(caught.value)) == [
        ("$.claims", "extra_forbidden"),
        ("$.debtor.country", "missing"),
    ]
    with pytest.raises(pydantic.ValidationError) as caught:
        ClaimPlaced.model_validate_json(b"{")
    assert pairs(pydantic_errors(caught.value)) == [("$", "json")]


def test_validate_falls_back_to_pydantic_when_the_schema_finds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = body_of({**claim(), "currency": "eur"})
    lenient = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
    (tmp_path / "claim.placed.v1.json").write_text(json.dumps(lenient))
    monkeypatch.setenv(contract.SCHEMAS_DIR_ENV, str(tmp_path))
    assert schema_for("claim.placed") == lenient
    assert explain("claim.placed", body) == []
    with pytest.raises(ContractError) as caught:
        validate("claim.placed", body)
    assert pairs(caught.value.details) == [("$.currency", "value_error")]


def test_schema_for_returns_a_copy() -> None:
    schema_for("claim.placed")["properties"].clear()
    assert "debtor" in schema_for("claim.placed")["properties"]
    with pytest.raises(KeyError):
        schema_for("claim.lost")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, database=None)
@given(body=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_explain_never_fails_on_any_bytes(body: bytes) -> None:
    # The private function does not swallow exceptions, unlike explain().
    details = contract._explain("claim.placed", body)
    assert all(isinstance(d, ErrorDetail) for d in details)
    if model_accepts("claim.placed", body):
        assert details == []
    else:
        assert details


@settings(max_examples=100, deadline=None, database=None)
@given(
    edits=st.dictionaries(
        st.sampled_from(["principal", "currency", "invoice_date", "phase", "batch_size", "x"]),
        JSON_VALUES,
        max_size=3,
    )
)
def test_model_and_schema_agree_on_random_edits(edits: dict[str, Any]) -> None:
    body = body_of({**claim(), **edits})
    assert model_accepts("claim.placed", body) == schema_accepts("claim.placed", body)
