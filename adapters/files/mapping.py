"""A partner's own status codes, mapped to the hub's canonical reports. Pure.

A mapping is a YAML file per partner (``examples/mappings/<partner>.yaml``)::

    partner: acme-de            # optional; when given it must be the adapter's partner
    delimiter: ","              # of the partner's CSV files (default ",")
    encoding: utf-8-sig         # default; a BOM is skipped
    decimal_comma: false        # true: amounts are written 1.234,56
    codes:
      ACC:  {type: case.accepted}
      TEL1: {type: case.activity, kind: call, outcome: right_party_contact}
      PAY:  {type: case.payment}
      CLP:  {type: case.closed, close_code: paid}

What a code may fix, by type (the rest comes from the row's columns):

=====================  ================================  ===============================
type                   fixed by the mapping              from the row
=====================  ================================  ===============================
case.accepted          -                                 -
case.declined          reason (default)                  note (the reason)
case.activity          kind, outcome (both required)     note
case.promise           -                                 amount, currency, due_date, note
case.payment           -                                 amount, currency, reference
settlement.proposed    -                                 reference (settlement id),
                                                         amount, currency, note (terms)
case.dispute           status (required), reason         note (the reason)
case.legal_step        step, phase (required), country   country, note
case.closed            close_code (required)             note
document.added         kind (default other)              document (a file name in
                                                         ``incoming/documents/``), note
=====================  ================================  ===============================

Every row also needs ``case_id`` and ``date`` (``YYYY-MM-DD``, taken as 00:00 UTC, or
an RFC 3339 timestamp with an offset). A code missing from the mapping is never guessed:
``translate`` refuses it (``unknown_code``) and the adapter quarantines the row.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from partner_sdk import messages as m
from partner_sdk.client import REPORT_TYPES, build
from partner_sdk.codes import COUNTRIES
from partner_sdk.errors import InvalidMessage

__all__ = [
    "REQUIRED_COLUMNS",
    "RETURN_COLUMNS",
    "CodeRule",
    "MappingError",
    "RowProblem",
    "StatusMapping",
    "document_content_type",
    "load_mapping",
    "parse_mapping",
    "row_message_id",
    "translate",
]

#: Columns a return file must have...
REQUIRED_COLUMNS: Final = ("case_id", "status_code", "date")
#: ...and those it may have (others are ignored).
RETURN_COLUMNS: Final = (
    *REQUIRED_COLUMNS,
    "amount",
    "currency",
    "note",
    "reference",
    "due_date",
    "country",
    "document",
)

_ENUMS: dict[str, frozenset[str]] = {
    "kind:case.activity": frozenset(k.value for k in m.ActivityKind),
    "outcome": frozenset(o.value for o in m.ActivityOutcome),
    "close_code": frozenset(c.value for c in m.CloseCode),
    "phase": frozenset(p.value for p in m.Phase),
    "status": frozenset({"opened", "resolved"}),
    "kind:document.added": frozenset(k.value for k in m.DocumentKind),
}

#: For each report type: (fields the mapping may fix, of which required).
_FIXED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "case.accepted": (frozenset(), frozenset()),
    "case.declined": (frozenset({"reason"}), frozenset()),
    "case.activity": (frozenset({"kind", "outcome"}), frozenset({"kind", "outcome"})),
    "case.promise": (frozenset(), frozenset()),
    "case.payment": (frozenset(), frozenset()),
    "settlement.proposed": (frozenset(), frozenset()),
    "case.dispute": (frozenset({"status", "reason"}), frozenset({"status"})),
    "case.legal_step": (frozenset({"step", "phase", "country"}), frozenset({"step", "phase"})),
    "case.closed": (frozenset({"close_code"}), frozenset({"close_code"})),
    "document.added": (frozenset({"kind"}), frozenset()),
}
_CODE = re.compile(r"^[^\x00-\x1f]{1,64}\Z")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_DOCUMENT_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class MappingError(ValueError):
    """A mapping file is unreadable or invalid; the message names the file and the code."""


@dataclass(frozen=True)
class CodeRule:
    """What one partner status code means: a report type and the fields it fixes."""

    code: str
    type: str
    fixed: Mapping[str, str] = field(default_factory=dict)

    def matches(self, message_type: str, **fixed: str) -> bool:
        return self.type == message_type and all(self.fixed.get(k) == v for k, v in fixed.items())


@dataclass(frozen=True)
class StatusMapping:
    """A partner's status codes (see the module docstring)."""

    codes: Mapping[str, CodeRule]
    partner_id: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    decimal_comma: bool = False
    source: str = "<mapping>"

    def rule(self, code: str) -> CodeRule | None:
        return self.codes.get(code.strip())

    def code_for(self, message_type: str, **fixed: str) -> str | None:
        """The first code meaning ``message_type`` (with these fixed fields), if any."""
        return next((c for c, r in self.codes.items() if r.matches(message_type, **fixed)), None)


def load_mapping(path: str | Path) -> StatusMapping:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise MappingError(f"{p}: cannot read: {e}") from None
    return parse_mapping(text, source=str(p))


def parse_mapping(text: str, *, source: str = "<mapping>") -> StatusMapping:
    """A mapping from YAML text; ``MappingError`` naming the code and field at fault."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MappingError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(doc, Mapping):
        raise MappingError(f"{source}: must be a mapping with a 'codes' key")
    unknown = set(doc) - {"partner", "delimiter", "encoding", "decimal_comma", "codes"}
    if unknown:
        raise MappingError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    codes = doc.get("codes")
    if not isinstance(codes, Mapping) or not codes:
        raise MappingError(f"{source}: 'codes' must map each status code to its meaning")
    delimiter = doc.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise MappingError(f"{source}: delimiter must be one character")
    encoding = doc.get("encoding", "utf-8-sig")
    try:
        b"".decode(str(encoding))
    except LookupError:
        raise MappingError(f"{source}: unknown encoding {encoding!r}") from None
    partner = doc.get("partner")
    rules = {}
    for raw_code, meaning in codes.items():
        code = str(raw_code).strip()
        rules[code] = _rule(source, code, raw_code, meaning)
    return StatusMapping(
        codes=MappingProxyType(rules),
        partner_id=str(partner) if partner is not None else None,
        delimiter=delimiter,
        encoding=str(encoding),
        decimal_comma=bool(doc.get("decimal_comma", False)),
        source=source,
    )


def _rule(source: str, code: str, raw_code: object, meaning: object) -> CodeRule:
    where = f"{source}: code {code!r}"
    if isinstance(raw_code, bool) or not _CODE.match(code):
        raise MappingError(
            f"{where}: a status code is 1 to 64 characters (quote codes such as 'NO' or "
            "'YES', which YAML reads as booleans)"
        )
    if not isinstance(meaning, Mapping):
        raise MappingError(f"{where}: must be a mapping such as {{type: case.accepted}}")
    mtype = meaning.get("type")
    if mtype not in _FIXED:
        raise MappingError(
            f"{where}: type must be one of {', '.join(sorted(_FIXED))}, not {mtype!r}"
        )
    allowed, required = _FIXED[str(mtype)]
    fixed = {str(k): v for k, v in meaning.items() if k != "type"}
    extra = set(fixed) - allowed
    if extra:
        raise MappingError(
            f"{where}: {mtype} cannot fix {', '.join(sorted(extra))}"
            + (f" (it may fix {', '.join(sorted(allowed))})" if allowed else "")
        )
    missing = required - set(fixed)
    if missing:
        raise MappingError(f"{where}: {mtype} needs {', '.join(sorted(missing))}")
    for key, value in fixed.items():
        if not isinstance(value, str) or not value:
            raise MappingError(f"{where}: {key} must be a non-empty string")
        options = _ENUMS.get(f"{key}:{mtype}") or _ENUMS.get(key)
        if options is not None and value not in options:
            raise MappingError(
                f"{where}: {key} must be one of {', '.join(sorted(options))}, not {value!r}"
            )
    if mtype == "case.legal_step" and not re.match(r"^[a-z][a-z0-9_]{1,63}\Z", fixed["step"]):
        raise MappingError(f"{where}: step {fixed['step']!r} is not a legal step code")
    if "country" in fixed and fixed["country"] not in COUNTRIES:
        raise MappingError(f"{where}: {fixed['country']!r} is not an ISO 3166-1 country")
    return CodeRule(code, str(mtype), MappingProxyType(fixed))


# --- rows ---------------------------------------------------------------------------------


class RowProblem(Exception):
    """A row that cannot become a report; ``code`` is ``unknown_code`` or
    ``invalid_message``, ``errors`` list ``{"path", "rule", "message"}``."""

    def __init__(self, code: str, reason: str, errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.errors = [dict(e) for e in errors]


def row_message_id(partner_id: str, file_name: str, line: int, cells: Sequence[str]) -> str:
    """The row's message id: sha256 of ``partner|file name|line|content``, so reading the
    same file again yields the same ids and the hub applies each row once."""
    content = json.dumps(list(cells), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{partner_id}|{file_name}|{line}|{content}".encode()).hexdigest()


def _occurred_at(value: str) -> dt.datetime:
    text = value.strip()
    if not text:
        raise RowProblem(
            "invalid_message",
            "date is empty",
            [{"path": "date", "rule": "required", "message": "date is required"}],
        )
    try:
        if _DATE.match(text):
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        raise RowProblem(
            "invalid_message",
            f"date {text[:40]!r} is neither YYYY-MM-DD nor a timestamp with an offset",
            [{"path": "date", "rule": "format", "message": "YYYY-MM-DD or RFC 3339 with offset"}],
        )
    return moment


def _amount(value: str, decimal_comma: bool) -> str:
    text = value.strip().replace(" ", "")
    if decimal_comma:
        text = text.replace(".", "").replace(",", ".")
    return text


def _text(row: Mapping[str, str], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


def document_content_type(name: str) -> str | None:
    """The contract's content type of a document file name (by extension), if accepted."""
    return _DOCUMENT_TYPES.get(Path(name).suffix.lower())


def translate(
    row: Mapping[str, str],
    mapping: StatusMapping,
    *,
    documents: Callable[[str], bytes | None] = lambda name: None,
) -> m.Message:
    """The report a return-file row stands for; ``RowProblem`` when it cannot be one.

    ``documents`` reads a document named in the row's ``document`` column (None: there is
    no such file).
    """
    code = (row.get("status_code") or "").strip()
    rule = mapping.rule(code)
    if rule is None:
        known = ", ".join(sorted(mapping.codes))
        raise RowProblem(
            "unknown_code",
            f"status code {code!r} is not in the mapping ({mapping.source}); known: {known}",
            [{"path": "status_code", "rule": "enum", "message": "unknown status code"}],
        )
    fields: dict[str, Any] = {
        "case_id": (row.get("case_id") or "").strip(),
        "occurred_at": _occurred_at(row.get("date") or ""),
    }
    note = _text(row, "note")
    fixed = dict(rule.fixed)
    money = {
        "amount": _amount(row.get("amount") or "", mapping.decimal_comma),
        "currency": (row.get("currency") or "").strip().upper(),
    }
    match rule.type:
        case "case.accepted":
            pass
        case "case.declined":
            fields["reason"] = note or fixed.get("reason")
        case "case.activity":
            fields.update(kind=fixed["kind"], outcome=fixed["outcome"], note=note)
        case "case.promise":
            fields.update(money, due_date=(row.get("due_date") or "").strip(), note=note)
        case "case.payment":
            fields.update(money, reference=_text(row, "reference"))
        case "settlement.proposed":
            fields.update(money, settlement_id=_text(row, "reference"), terms=note)
        case "case.dispute":
            fields.update(status=fixed["status"], reason=note or fixed.get("reason"))
        case "case.legal_step":
            country = (_text(row, "country") or fixed.get("country") or "").upper()
            fields.update(step=fixed["step"], phase=fixed["phase"], country=country, note=note)
        case "case.closed":
            fields.update(close_code=fixed["close_code"], note=note)
        case "document.added":
            fields.update(_document(row, fixed.get("kind", "other"), documents))
    try:
        return build(REPORT_TYPES[rule.type], fields)
    except InvalidMessage as e:
        errors = [
            {
                "path": ".".join(str(p) for p in err.get("loc", ())),
                "rule": str(err.get("type", "invalid")),
                "message": str(err.get("msg", "")),
            }
            for err in e.errors
        ]
        raise RowProblem(
            "invalid_message", f"code {code} ({rule.type}): {_summary(errors) or e}", errors
        ) from None


def _document(
    row: Mapping[str, str], kind: str, documents: Callable[[str], bytes | None]
) -> dict[str, Any]:
    name = _text(row, "document")
    if name is None or "/" in name or "\\" in name or name.startswith("."):
        raise RowProblem(
            "invalid_message",
            "a document row needs a file name of incoming/documents/ in its document column",
            [{"path": "document", "rule": "required", "message": "a plain file name"}],
        )
    content_type = document_content_type(name)
    if content_type is None:
        raise RowProblem(
            "invalid_message",
            f"document {name!r}: only {', '.join(sorted(_DOCUMENT_TYPES))} files are accepted",
            [{"path": "document", "rule": "content_type", "message": "unsupported file type"}],
        )
    data = documents(name)
    if data is None:
        raise RowProblem(
            "invalid_message",
            f"document {name!r} is not in incoming/documents/",
            [{"path": "document", "rule": "exists", "message": "no such file"}],
        )
    digest = hashlib.sha256(data).hexdigest()
    return {
        "document_id": f"DOC-{digest[:24]}",
        "kind": kind,
        "filename": name[:200],
        "content_type": content_type,
        "size": len(data),
        "sha256": digest,
        "content_base64": base64.b64encode(data).decode("ascii"),
    }


def _summary(errors: Sequence[Mapping[str, str]]) -> str:
    return "; ".join(f"{e['path'] or '(row)'}: {e['message']}" for e in errors[:5])
