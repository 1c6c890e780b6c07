"""Batch files of claims: read a CSV or JSON Lines file row by row and turn every row
into a claim message for ``claims.in``; and a routing dry-run of such a file.

The file is streamed, never loaded whole: a first pass counts the rows (the batch size
every message carries) and computes the file's sha256 (the default batch id), a second
pass maps and yields one :class:`ImportRow` at a time.

CSV
---
The first line names the columns; the order is free, unknown names are an error, missing
ones are empty. The delimiter is ``,`` (or ``;`` / tab when the header uses that). UTF-8,
with or without a byte-order mark. An empty cell leaves its field out (the schema's
default applies, e.g. ``interest`` ``"0"``, ``phase`` ``amicable``). Blank lines and rows
whose every cell is empty are not rows.

====================== =============================================================
column                 field of the message
====================== =============================================================
type                   ``claim.placed`` (default), ``claim.amended`` or ``claim.withdrawn``
creditor_id            ``creditor_id`` (default: ``--creditor-id``, else the hub's)
creditor_entity        ``creditor_entity``: the creditor's legal entity
invoice_number         ``invoice_number`` (with ``creditor_entity``: the business key)
invoice_date           ``invoice_date``, ``YYYY-MM-DD``
due_date               ``due_date``, ``YYYY-MM-DD``
currency               ``currency``, ISO 4217 (``EUR``)
principal              ``principal``, a decimal string (``1234.50``)
interest               ``interest``
fees                   ``fees``
debtor_name            ``debtor.name``
debtor_kind            ``debtor.kind``: ``company`` or ``person``
debtor_registration_id ``debtor.registration_id``
debtor_vat_id          ``debtor.vat_id``
debtor_country         ``debtor.country`` and ``debtor.address.country``, ISO 3166-1 alpha-2
debtor_address_line1   ``debtor.address.line1``
debtor_address_line2   ``debtor.address.line2``
debtor_city            ``debtor.address.city``
debtor_postal_code     ``debtor.address.postal_code``
debtor_region          ``debtor.address.region``
debtor_email           ``debtor.email``
debtor_phone           ``debtor.phone``
debtor_language        ``debtor.language``, ISO 639-1 (``de``)
contract_ref           ``contract_ref``
notes                  ``notes``
phase                  ``phase``: ``amicable`` (default), ``legal`` or ``enforcement``
reason                 ``reason`` (withdrawals only)
====================== =============================================================

A withdrawal row uses only ``creditor_id``, ``creditor_entity``, ``invoice_number`` and
``reason``; the other cells of that row are ignored (and ``reason`` on other rows).

JSON Lines
----------
One message body per line, exactly as on the wire; an optional ``"type"`` key is
removed and used as the message type (default ``claim.placed``). Blank lines are skipped.

Every row
---------
* gets ``batch_id`` (default: the file's stem and the first 12 hex digits of its sha256)
  and ``batch_size`` (the number of rows), replacing any the line had, so that the hub
  can send one ``batch.reconciled`` for the file;
* gets a deterministic ``message_id``: the sha256 of ``creditor_entity|invoice_number|
  type|canonical JSON of the body without its batch fields|batch id|row number``.
  Importing the same file again publishes the same ids, and the hub's inbox makes the
  re-run a no-op. The batch id and row number are part of it because the hub answers a
  message id it has seen with silence: two identical rows (an exact re-send inside the
  file) or a claim re-sent unchanged in next month's file must have ids of their own to
  each get their ``duplicate`` receipt and be counted in their batch;
* is published even when it is wrong, so that the hub answers it with a ``rejected``
  receipt and records it: nothing is dropped. A row that cannot be mapped at all (a CSV
  row with the wrong number of cells, a line that is not a JSON object) goes out as its
  raw bytes (``text/csv`` for a CSV row), addressed by AMQP headers ``creditor_id``,
  ``batch_id``, ``batch_size`` and ``import_row``; a row the contract refuses goes out
  mapped. Both are counted as *invalid locally*.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import io
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from hub import contract
from hub.domain.model import WITH_PARTNER, CaseState, Lifecycle, case_id_for
from hub.domain.routing import PartnerProfile, RoutingRequest, choose_partner
from hub.service.intake import content_hash
from partner_sdk import messages as m

__all__ = [
    "CLAIM_TYPES",
    "CSV_COLUMNS",
    "BatchFile",
    "ClaimSink",
    "Format",
    "ImportFileError",
    "ImportRow",
    "ImportStats",
    "PlannedCase",
    "RoutePlan",
    "default_batch_id",
    "detect_format",
    "group_cases",
    "map_csv_cells",
    "open_batch",
    "plan_routes",
    "publish_rows",
    "read_rows",
    "routing_key_for",
    "to_csv_record",
]

Format = Literal["csv", "jsonl"]

CLAIM_TYPES = (m.ClaimPlaced.TYPE, m.ClaimAmended.TYPE, m.ClaimWithdrawn.TYPE)
DEFAULT_TYPE = m.ClaimPlaced.TYPE

CSV_COLUMNS: tuple[str, ...] = (
    "creditor_id",
    "creditor_entity",
    "invoice_number",
    "invoice_date",
    "due_date",
    "currency",
    "principal",
    "interest",
    "fees",
    "debtor_name",
    "debtor_kind",
    "debtor_registration_id",
    "debtor_vat_id",
    "debtor_country",
    "debtor_address_line1",
    "debtor_address_line2",
    "debtor_city",
    "debtor_postal_code",
    "debtor_region",
    "debtor_email",
    "debtor_phone",
    "debtor_language",
    "contract_ref",
    "notes",
    "phase",
    "type",
    "reason",
)

_HEAD = ("creditor_id", "creditor_entity", "invoice_number")
_CLAIM = ("invoice_date", "due_date", "currency", "principal", "interest", "fees")
_DEBTOR = (
    ("debtor_name", "name"),
    ("debtor_kind", "kind"),
    ("debtor_registration_id", "registration_id"),
    ("debtor_vat_id", "vat_id"),
    ("debtor_country", "country"),
)
_ADDRESS = (
    ("debtor_address_line1", "line1"),
    ("debtor_address_line2", "line2"),
    ("debtor_city", "city"),
    ("debtor_postal_code", "postal_code"),
    ("debtor_region", "region"),
)
_DEBTOR_TAIL = (
    ("debtor_email", "email"),
    ("debtor_phone", "phone"),
    ("debtor_language", "language"),
)
_TAIL = ("contract_ref", "notes", "phase")
_BATCH_FIELDS = ("batch_id", "batch_size")
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:-]+")
#: Routing key of a row whose type is not a claim type: still routed to ``hub.claims``
#: (bound by ``claim.*``), where the hub rejects it by its AMQP ``type``.
UNKNOWN_TYPE_KEY = "claim.unknown"


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (unknown format, no or a bad CSV header)."""


@dataclass(frozen=True)
class BatchFile:
    """A claims file and the batch it becomes."""

    path: Path
    format: Format
    rows: int
    sha256: str
    batch_id: str


@dataclass(frozen=True)
class ImportRow:
    """One row as a message. ``document`` is None when the row could not be mapped (then
    ``body`` is its raw bytes); ``problems`` lists why the contract refuses it."""

    number: int
    type: str
    message_id: str
    body: bytes
    headers: Mapping[str, str | int]
    content_type: str = "application/json"
    document: Mapping[str, Any] | None = None
    model: m.Message | None = None
    problems: tuple[str, ...] = ()

    @property
    def mapped(self) -> bool:
        return self.document is not None

    @property
    def valid(self) -> bool:
        return self.model is not None


# --- the file ----------------------------------------------------------------------------


def detect_format(path: Path, explicit: str | None = None) -> Format:
    """``explicit`` if given, else by extension: ``.csv``, ``.jsonl`` / ``.ndjson``."""
    name = (explicit or path.suffix.lstrip(".")).lower()
    if name == "csv":
        return "csv"
    if name in ("jsonl", "ndjson", "json-lines"):
        return "jsonl"
    raise ImportFileError(
        f"cannot tell the format of {path.name}: use --format csv or --format jsonl"
    )


def default_batch_id(path: Path, sha256: str) -> str:
    """``<file stem>-<first 12 hex of its sha256>``, fitted to the contract's id pattern."""
    stem = _NOT_ID.sub("-", path.stem).strip("-._:") or "batch"
    return f"{stem[:51]}-{sha256[:12]}"


def _check_batch_id(batch_id: str) -> str:
    if not re.fullmatch(m.ID_PATTERN.removesuffix("$").removeprefix("^"), batch_id):
        raise ImportFileError(
            f"batch id {batch_id!r} must match {m.ID_PATTERN} (letters, digits, _ . : -)"
        )
    return batch_id


class _Lines:
    """The file's lines as bytes, streamed; the sha256 of what has been read so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            for line in f:
                self.digest.update(line)
                self.bytes_read += len(line)
                yield line


def _text(lines: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    for line in lines:
        yield decoder.decode(line)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


@dataclass
class _CsvRecords:
    header: list[str] = field(default_factory=list)
    delimiter: str = ","


def _csv_records(lines: Iterable[bytes], meta: _CsvRecords) -> Iterator[list[str]]:
    """Data rows of a CSV stream (after its header, which goes into ``meta``)."""
    text = _text(lines)
    first = ""
    for line in text:
        if line.strip():
            first = line
            break
    if not first:
        return
    meta.delimiter = max((",", ";", "\t"), key=lambda d: (first.count(d), d == ","))

    def chained() -> Iterator[str]:
        yield first
        yield from text

    reader = csv.reader(chained(), delimiter=meta.delimiter)
    header = next(reader, [])
    meta.header = _check_header(header)
    for cells in reader:
        if any(c.strip() for c in cells):
            yield cells


def _check_header(header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown:
        raise ImportFileError(
            f"unknown column(s) {', '.join(repr(u) for u in unknown)} in the CSV header; "
            f"known columns: {', '.join(CSV_COLUMNS)}"
        )
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise ImportFileError(f"column(s) {', '.join(dupes)} appear more than once in the header")
    if "creditor_entity" not in names or "invoice_number" not in names:
        raise ImportFileError(
            "the CSV header must name at least creditor_entity and invoice_number"
        )
    return names


def _jsonl_records(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        stripped = line.strip()
        if stripped:
            yield stripped


def open_batch(path: Path, fmt: str | None = None, batch_id: str | None = None) -> BatchFile:
    """The first, counting pass over ``path``: rows, sha256 and the batch id."""
    kind = detect_format(path, fmt)
    lines = _Lines(path)
    try:
        if kind == "csv":
            rows = sum(1 for _ in _csv_records(lines, _CsvRecords()))
        else:
            rows = sum(1 for _ in _jsonl_records(lines))
    except OSError as e:
        raise ImportFileError(f"cannot read {path}: {e}") from e
    except csv.Error as e:
        raise ImportFileError(f"{path.name} is not readable as CSV: {e}") from e
    sha = lines.digest.hexdigest()
    chosen = _check_batch_id(batch_id) if batch_id else default_batch_id(path, sha)
    return BatchFile(path, kind, rows, sha, chosen)


# --- rows ---------------------------------------------------------------------------------


def _canonical(document: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in document.items() if k not in _BATCH_FIELDS}, option=orjson.OPT_SORT_KEYS
    )


def _message_id(message_type: str, document: Mapping[str, Any], batch_id: str, number: int) -> str:
    key = "|".join(
        (
            str(document.get("creditor_entity", "")),
            str(document.get("invoice_number", "")),
            message_type,
            _canonical(document).decode(),
            batch_id,
            str(number),
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()


def _raw_message_id(raw: bytes, batch_id: str, number: int) -> str:
    return hashlib.sha256(b"raw|" + batch_id.encode() + f"|{number}|".encode() + raw).hexdigest()


def map_csv_cells(
    header: list[str], cells: list[str], *, creditor_id: str
) -> tuple[str, dict[str, Any]]:
    """A CSV row (cells already matched to the header) as (type, message body)."""
    row = {name: cell.strip() for name, cell in zip(header, cells, strict=True)}

    def put(target: dict[str, Any], key: str, column: str) -> None:
        value = row.get(column, "")
        if value:
            target[key] = value

    message_type = row.get("type") or DEFAULT_TYPE
    doc: dict[str, Any] = {}
    put(doc, "creditor_id", "creditor_id")
    doc.setdefault("creditor_id", creditor_id)
    put(doc, "creditor_entity", "creditor_entity")
    put(doc, "invoice_number", "invoice_number")
    if message_type == m.ClaimWithdrawn.TYPE:
        put(doc, "reason", "reason")
        return message_type, doc
    for column in _CLAIM:
        put(doc, column, column)
    debtor: dict[str, Any] = {}
    for column, key in _DEBTOR:
        put(debtor, key, column)
    address: dict[str, Any] = {}
    for column, key in _ADDRESS:
        put(address, key, column)
    if address or "country" in debtor:
        if "country" in debtor:
            address["country"] = debtor["country"]
        debtor["address"] = address
    for column, key in _DEBTOR_TAIL:
        put(debtor, key, column)
    if debtor:
        doc["debtor"] = debtor
    for column in _TAIL:
        put(doc, column, column)
    return message_type, doc


def to_csv_record(message_type: str, document: Mapping[str, Any]) -> dict[str, str]:
    """The inverse of the CSV mapping: a message body as a row of :data:`CSV_COLUMNS`."""
    record = dict.fromkeys(CSV_COLUMNS, "")
    for column in (*_HEAD, *_CLAIM, *_TAIL, "reason"):
        if document.get(column) is not None:
            record[column] = str(document[column])
    debtor = document.get("debtor") or {}
    address = debtor.get("address") or {}
    for column, key in (*_DEBTOR, *_DEBTOR_TAIL):
        if debtor.get(key) is not None:
            record[column] = str(debtor[key])
    for column, key in _ADDRESS:
        if address.get(key) is not None:
            record[column] = str(address[key])
    record["type"] = "" if message_type == DEFAULT_TYPE else message_type
    return record


def _problems(details: Iterable[m.ErrorDetail]) -> tuple[str, ...]:
    return tuple(f"{d.path} {d.rule}: {d.message}" for d in details)


class _RowBuilder:
    def __init__(self, batch: BatchFile, creditor_id: str, validate: bool) -> None:
        self.batch = batch
        self.creditor_id = creditor_id
        self.validate = validate

    def headers(self, number: int) -> dict[str, str | int]:
        return {
            "creditor_id": self.creditor_id,
            "batch_id": self.batch.batch_id,
            "batch_size": self.batch.rows,
            "import_row": number,
        }

    def mapped(self, number: int, message_type: str, document: dict[str, Any]) -> ImportRow:
        document["batch_id"] = self.batch.batch_id
        document["batch_size"] = self.batch.rows
        body = orjson.dumps(document)
        model: m.Message | None = None
        problems: tuple[str, ...] = ()
        if self.validate:
            try:
                model = contract.validate(message_type, body)
            except contract.ContractError as e:
                problems = _problems(e.details)
        return ImportRow(
            number=number,
            type=message_type,
            message_id=_message_id(message_type, document, self.batch.batch_id, number),
            body=body,
            headers=self.headers(number),
            document=document,
            model=model,
            problems=problems,
        )

    def raw(self, number: int, raw: bytes, content_type: str, problem: str) -> ImportRow:
        return ImportRow(
            number=number,
            type=DEFAULT_TYPE,
            message_id=_raw_message_id(raw, self.batch.batch_id, number),
            body=raw,
            headers=self.headers(number),
            content_type=content_type,
            problems=(problem,),
        )


def _csv_line(cells: list[str], delimiter: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(cells)
    return out.getvalue().encode()


def read_rows(batch: BatchFile, *, creditor_id: str, validate: bool = True) -> Iterator[ImportRow]:
    """The second pass: every row of ``batch`` as a message, one at a time.

    ``creditor_id`` fills rows without one. With ``validate`` each mapped row is also
    checked against the contract (``ImportRow.model`` / ``problems``)."""
    builder = _RowBuilder(batch, creditor_id, validate)
    lines = _Lines(batch.path)
    number = 0
    if batch.format == "csv":
        meta = _CsvRecords()
        for cells in _csv_records(lines, meta):
            number += 1
            if len(cells) != len(meta.header):
                yield builder.raw(
                    number,
                    _csv_line(cells, meta.delimiter),
                    "text/csv",
                    f"row {number}: {len(cells)} cells, the header names {len(meta.header)}",
                )
                continue
            message_type, document = map_csv_cells(meta.header, cells, creditor_id=creditor_id)
            yield builder.mapped(number, message_type, document)
        return
    for line in _jsonl_records(lines):
        number += 1
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield builder.raw(number, line, "application/json", f"line {number}: {e}")
            continue
        if not isinstance(document, dict):
            yield builder.raw(number, line, "application/json", f"line {number}: not a JSON object")
            continue
        given = document.pop("type", None)
        message_type = DEFAULT_TYPE if given is None else str(given)[:64]
        document.setdefault("creditor_id", creditor_id)
        yield builder.mapped(number, message_type, document)


def routing_key_for(message_type: str) -> str:
    """``claims.in`` routing key: the type, or :data:`UNKNOWN_TYPE_KEY` for other types."""
    return message_type if message_type in CLAIM_TYPES else UNKNOWN_TYPE_KEY


# --- publishing --------------------------------------------------------------------------


class ClaimSink(Protocol):
    """Where rows go: ``send`` returns once the broker has confirmed the row, or raises."""

    async def send(self, row: ImportRow) -> None: ...


@dataclass
class ImportStats:
    rows: int = 0
    published: int = 0
    confirmed: int = 0
    invalid_locally: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    #: (row number, why) of rows the broker did not confirm; the first 100
    failures: list[tuple[int, str]] = field(default_factory=list)
    #: (row number, problems) of rows invalid locally; the first 100
    invalid: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    #: message ids of rows that could not be mapped (the hub may not tie them to the batch)
    raw_ids: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.published - self.confirmed

    @property
    def rate(self) -> float:
        return self.confirmed / self.seconds if self.seconds > 0 else 0.0


async def publish_rows(
    rows: Iterable[ImportRow],
    sink: ClaimSink,
    *,
    window: int = 1000,
    on_confirmed: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ImportStats:
    """Send every row, keeping up to ``window`` unconfirmed at once (publisher confirms
    are pipelined, not awaited one by one). Never stops at a bad row."""
    stats = ImportStats()
    started = clock()
    room = asyncio.Semaphore(window)
    in_flight: set[asyncio.Task[None]] = set()

    async def send(row: ImportRow) -> None:
        try:
            await sink.send(row)
        except Exception as e:
            if len(stats.failures) < 100:
                stats.failures.append((row.number, repr(e)[:300]))
            return
        finally:
            room.release()
        stats.confirmed += 1
        if on_confirmed is not None:
            on_confirmed(1)

    for row in rows:
        stats.rows += 1
        stats.by_type[row.type] += 1
        if not row.valid:
            stats.invalid_locally += 1
            if len(stats.invalid) < 100:
                stats.invalid.append((row.number, row.problems))
            if not row.mapped:
                stats.raw_ids.add(row.message_id)
        # a semaphore, not asyncio.wait: waiting on the whole window for each row
        # would cost O(window) per row
        await room.acquire()
        task = asyncio.create_task(send(row))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        stats.published += 1
    if in_flight:
        await asyncio.gather(*in_flight)
    stats.seconds = clock() - started
    return stats


# --- routing dry-run ---------------------------------------------------------------------


@dataclass
class PlannedCase:
    """A case as the file (and what the hub already holds) would make it."""

    case_id: str
    creditor_entity: str
    debtor_name: str
    country: str
    currency: str
    phase: m.Phase
    #: invoice number -> amount of the open claims
    claims: dict[str, Decimal] = field(default_factory=dict)
    #: invoice number -> content hash (as intake computes it) of the file's claims
    hashes: dict[str, str] = field(default_factory=dict)
    existing: CaseState | None = None
    partner_id: str | None = None
    reason: str = ""
    #: set when the file does not route the case: what happens instead ("no change", ...)
    kept: str | None = None

    @property
    def total(self) -> Decimal:
        return sum(self.claims.values(), Decimal(0))


@dataclass
class RoutePlan:
    cases: list[PlannedCase]
    #: rows the hub would refuse, by why
    refused: Counter[str] = field(default_factory=Counter)
    rows: int = 0

    def per_partner(self) -> Counter[str | None]:
        """Cases per partner (None: unassigned) of the cases the file routes or keeps
        with their partner; cases it leaves as they are (``kept``) are not counted."""
        return Counter(c.partner_id for c in self.cases if c.claims and c.kept is None)


def group_cases(rows: Iterable[ImportRow]) -> tuple[dict[str, PlannedCase], RoutePlan]:
    """Claims of the file grouped into cases by ``case_id_for``, as intake would."""
    cases: dict[str, PlannedCase] = {}
    claim_case: dict[str, str] = {}
    plan = RoutePlan([])
    for row in rows:
        plan.rows += 1
        model = row.model
        if model is None:
            plan.refused["invalid"] += 1
            continue
        if isinstance(model, m.ClaimWithdrawn):
            case_id = claim_case.pop(model.business_key, None)
            if case_id is not None:
                cases[case_id].claims.pop(model.invoice_number, None)
                cases[case_id].hashes.pop(model.invoice_number, None)
            continue
        assert isinstance(model, m.ClaimPlaced)
        case_id = case_id_for(model.creditor_entity, model.debtor.model_dump())
        known = claim_case.get(model.business_key)
        if known is not None and known != case_id:
            plan.refused["claim moved to another debtor"] += 1
            continue
        case = cases.get(case_id)
        if case is None:
            case = cases[case_id] = PlannedCase(
                case_id=case_id,
                creditor_entity=model.creditor_entity,
                debtor_name=model.debtor.name,
                country=model.debtor.country,
                currency=model.currency,
                phase=model.phase,
            )
        elif case.currency != model.currency:
            plan.refused["currency differs from the case's"] += 1
            continue
        claim_case[model.business_key] = case_id
        case.claims[model.invoice_number] = model.total
        case.hashes[model.invoice_number] = content_hash(model)
    return cases, plan


def plan_routes(
    cases: Mapping[str, PlannedCase],
    plan: RoutePlan,
    profiles: Iterable[PartnerProfile],
    open_cases: Mapping[str, int],
    existing: Mapping[str, CaseState],
    known_claims: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoutePlan:
    """Where each case of :func:`group_cases` would go: ``choose_partner`` over the
    partner profiles, in file order, counting the file's own assignments against
    capacity. Pure.

    What the hub already holds counts as intake counts it: ``existing`` cases (by id)
    and ``known_claims`` (claims by business key, with ``content_hash`` and ``status``).
    A case with a partner stays there; a claim the hub already has unchanged changes
    nothing; a new claim reopens a closed case and has it routed again."""
    partners = list(profiles)
    counts = dict(open_cases)
    known = known_claims or {}
    for case in cases.values():
        added = changed = 0
        for number, digest in case.hashes.items():
            claim = known.get(f"{case.creditor_entity}/{number}")
            if claim is None or claim.get("status") == "withdrawn":
                added += 1
            elif claim.get("content_hash") != digest:
                changed += 1
        state = existing.get(case.case_id)
        if state is not None:
            case.existing = state
            merged = {
                number: Decimal(c["principal"]) + Decimal(c["interest"]) + Decimal(c["fees"])
                for number, c in state.open_claims.items()
            }
            merged.update(case.claims)
            case.claims = merged
            case.phase = state.phase
            lifecycle = state.lifecycle
            if lifecycle in WITH_PARTNER:
                case.partner_id = state.partner_id
                case.reason = f"stays with its partner (case {lifecycle.value})"
                continue
            if not added and not changed:
                case.kept = "no change"
                case.reason = f"already at the hub, unchanged (case {lifecycle.value})"
                continue
            awaiting = lifecycle in (Lifecycle.NEW, Lifecycle.UNASSIGNED)
            if not awaiting and not (lifecycle is Lifecycle.CLOSED and added):
                case.kept = f"stays {lifecycle.value}"
                case.reason = f"claims updated; the case stays {lifecycle.value}"
                continue
        if not case.claims:
            case.reason = "every claim withdrawn"
            continue
        decision = choose_partner(
            RoutingRequest(
                case_id=case.case_id,
                country=case.country,
                phase=case.phase,
                amount=case.total,
                exclude=frozenset(state.declined_by) if state else frozenset(),
            ),
            partners,
            counts,
        )
        case.partner_id = decision.partner_id
        case.reason = decision.reason
        if decision.partner_id is not None:
            counts[decision.partner_id] = counts.get(decision.partner_id, 0) + 1
        if state is not None and state.lifecycle is Lifecycle.CLOSED:
            case.reason = f"reopened; {decision.reason}"
    plan.cases = list(cases.values())
    return plan
