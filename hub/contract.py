"""The AMQP contract at run time: parse a body with its model, explain a refusal by its schema.

The pydantic models in :mod:`partner_sdk.messages` and the JSON Schemas in ``schemas/``
describe the same documents (``tests/unit/test_contract.py`` proves it). Parsing uses the
model, the fast path. Only when the model refuses a body does :func:`explain` run it
through the message type's JSON Schema, which names every broken rule the way a partner
reading the schema understands it: a JSON path and the schema keyword, e.g.
``$.debtor.country`` / ``enum``.

Two things differ on purpose from a plain ``Draft202012Validator``, both to follow the
specification where Python's defaults do not:

* ``pattern`` follows ECMA-262: ``$`` matches only at the very end of the string (Python's
  ``re`` also matches before a final newline, so ``"12.50\\n"`` would pass).
* ``format: date-time`` is always checked (jsonschema checks it only when the optional
  ``rfc3339-validator`` package is installed).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import pydantic
import pydantic_core
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from partner_sdk.messages import MESSAGE_TYPES, ErrorDetail, Message

__all__ = [
    "MAX_ERRORS",
    "SCHEMAS_DIR_ENV",
    "ContractError",
    "explain",
    "pydantic_errors",
    "schema_for",
    "schemas_dir",
    "validate",
    "validator_for",
]

log = logging.getLogger(__name__)

SCHEMAS_DIR_ENV = "ONEWINDOW_SCHEMAS_DIR"
SCHEMA_VERSION = "v1"
MAX_ERRORS = 20
# ErrorDetail's own limits.
_MAX_PATH = 300
_MAX_RULE = 64
_MAX_MESSAGE = 1000
# Errors collected before sorting; a body can break thousands of rules.
_MAX_COLLECTED = 1000
_SHOWN_ENUM_VALUES = 12
_JSON_PATH_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*\Z")


class ContractError(ValueError):
    """A body that does not match its message type's contract; ``details`` says why."""

    def __init__(self, details: Sequence[ErrorDetail]) -> None:
        self.details: list[ErrorDetail] = list(details)
        shown = "; ".join(f"{d.path} {d.rule}: {d.message}" for d in self.details[:3])
        more = f" (+{len(self.details) - 3} more)" if len(self.details) > 3 else ""
        super().__init__(f"message does not match the contract: {shown}{more}")


# --- the validator: ECMA-262 "$" in patterns, date-time always checked ------------------


def _ecma_end_anchors(pattern: str) -> str:
    """Rewrite ``$`` (outside classes, unescaped) to ``\\Z``: end of string, as in ECMA-262."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(_ecma_end_anchors(pattern))


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield SchemaValidationError(f"{_show(instance)} does not match {pattern!r}")


_RFC3339_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))\Z"
)


def _is_date_time(instance: object) -> bool:
    """RFC 3339 ``date-time``, with what Python cannot hold (year 0) refused like the model."""
    if not isinstance(instance, str):
        return True
    match = _RFC3339_DATE_TIME.match(instance)
    if match is None:
        return False
    year, month, day, hour, minute, second, off_hour, off_minute = (
        int(part) if part is not None else 0 for part in match.groups()
    )
    dt.date(year, month, day)  # ValueError for Feb 30, year 0, ...
    return hour <= 23 and minute <= 59 and second <= 60 and off_hour <= 23 and off_minute <= 59


def _format_checker() -> FormatChecker:
    checker = FormatChecker(())
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    return checker


_FORMAT_CHECKER = _format_checker()
# ``extend`` is untyped in types-jsonschema; it returns a Draft 2020-12 validator class.
_ContractValidator: type[Validator] = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, validators={"pattern": _pattern}
)


# --- loading ---------------------------------------------------------------------------


def schemas_dir() -> Path:
    """``$ONEWINDOW_SCHEMAS_DIR``, else the repository's ``schemas/``."""
    configured = os.environ.get(SCHEMAS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / "schemas"


@functools.cache
def _load(directory: Path, message_type: str) -> dict[str, Any]:
    if message_type not in MESSAGE_TYPES:
        raise KeyError(message_type)
    path = directory / f"{message_type}.{SCHEMA_VERSION}.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(schema, dict):
        raise ValueError(f"{path}: a schema must be a JSON object")
    Draft202012Validator.check_schema(schema)
    return schema


def schema_for(message_type: str) -> dict[str, Any]:
    """The JSON Schema of a message type (a copy); ``KeyError`` for an unknown type."""
    return copy.deepcopy(_load(schemas_dir(), message_type))


@functools.cache
def _validator(directory: Path, message_type: str) -> Validator:
    return _ContractValidator(_load(directory, message_type), format_checker=_FORMAT_CHECKER)


def validator_for(message_type: str) -> Validator:
    """The compiled (cached) schema validator of a message type; ``KeyError`` if unknown."""
    return _validator(schemas_dir(), message_type)


# --- explaining ------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(path: str, rule: str, message: str) -> ErrorDetail:
    return ErrorDetail(
        path=_clip(path, _MAX_PATH),
        rule=_clip(rule, _MAX_RULE),
        message=_clip(message, _MAX_MESSAGE),
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: object) -> str:
    """A short rendering of a JSON value for a message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "…"
    if isinstance(value, dict | list):
        return f"an {_json_type(value)}" if value else f"an empty {_json_type(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a very large integer"
    return json.dumps(value)


def _describe(error: SchemaValidationError) -> str:
    keyword, limit, value = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    about = schema.get("description")
    hint = f" ({about})" if isinstance(about, str) and about else ""
    if keyword == "type":
        expected = " or ".join(limit) if isinstance(limit, list) else str(limit)
        return f"expected {expected}, got {_json_type(value)}"
    if keyword == "enum" and isinstance(limit, list):
        if len(limit) <= _SHOWN_ENUM_VALUES:
            allowed = ", ".join(json.dumps(v) for v in limit)
            return f"{_show(value)} is not one of: {allowed}"
        return f"{_show(value)} is not an allowed value{hint}"
    if keyword == "maxLength" and isinstance(value, str):
        return f"too long: {len(value)} characters, at most {limit}"
    if keyword == "minLength" and isinstance(value, str):
        return f"too short: {len(value)} characters, at least {limit}"
    if keyword == "maxItems" and isinstance(value, list):
        return f"too many items: {len(value)}, at most {limit}"
    if keyword == "minItems" and isinstance(value, list):
        return f"too few items: {len(value)}, at least {limit}"
    if keyword == "pattern":
        return f"{_show(value)} does not match {limit}{hint}"
    if keyword == "format":
        return f"{_show(value)} is not a valid {limit}{hint}"
    return error.message


def _sort_key(path: Sequence[str | int]) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, 0, elem) if isinstance(elem, str) else (0, elem, "") for elem in path)


def explain(message_type: str, body: bytes | bytearray | str) -> list[ErrorDetail]:
    """Why ``body`` does not match the schema of ``message_type``: at most 20 details,
    sorted by path; ``[]`` when the schema finds nothing. Never raises."""
    try:
        return _explain(message_type, body)
    except Exception:  # a refusal must always be answerable; the caller falls back
        log.exception("explaining a %r body failed", message_type)
        return []


def _explain(message_type: str, body: bytes | bytearray | str) -> list[ErrorDetail]:
    if message_type not in MESSAGE_TYPES:
        return [_detail("$", "unknown_type", f"unknown message type {_show(message_type)}")]
    try:
        # The models' parser (jiter): the two sides agree on what JSON is.
        document = pydantic_core.from_json(body)
    except ValueError as exc:
        return [_detail("$", "json", f"invalid JSON: {exc}")]
    if not isinstance(document, dict):
        return [_detail("$", "type", f"expected object, got {_json_type(document)}")]
    errors = islice(validator_for(message_type).iter_errors(document), _MAX_COLLECTED)
    ordered = sorted(errors, key=lambda e: (_sort_key(e.absolute_path), str(e.validator)))
    return [_detail(e.json_path, str(e.validator), _describe(e)) for e in ordered[:MAX_ERRORS]]


def _pydantic_path(loc: Sequence[str | int]) -> str:
    path = "$"
    for elem in loc:
        if isinstance(elem, int):
            path += f"[{elem}]"
        elif _JSON_PATH_NAME.match(elem):
            path += f".{elem}"
        else:
            path += "['" + elem.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return path


def pydantic_errors(exc: pydantic.ValidationError) -> list[ErrorDetail]:
    """A pydantic refusal in the shape of :func:`explain` (rule: pydantic's error type)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    ordered = sorted(errors, key=lambda e: (_sort_key(e["loc"]), e["type"]))
    return [
        _detail(
            _pydantic_path(e["loc"]),
            "json" if e["type"] == "json_invalid" else e["type"],
            e["msg"],
        )
        for e in ordered[:MAX_ERRORS]
    ]


# --- validating ------------------------------------------------------------------------


def validate(message_type: str, body: bytes | bytearray | str) -> Message:
    """Parse ``body`` as a ``message_type`` message; :class:`ContractError` if it does not
    match (also for a message type the contract does not know: rule ``unknown_type``)."""
    model = MESSAGE_TYPES.get(message_type)
    if model is None:
        raise ContractError(
            [_detail("$", "unknown_type", f"unknown message type {_show(message_type)}")]
        )
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise ContractError(explain(message_type, body) or pydantic_errors(exc)) from exc
