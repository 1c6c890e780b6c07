"""Reading a partner's status return files (``<drop>/incoming/*.csv``).

A return file is CSV with a header row naming at least ``case_id``, ``status_code`` and
``date`` (see ``mapping`` for every column); header names are matched case-insensitively,
unknown columns are ignored, blank rows skipped. Each row becomes a report through the
partner's mapping, or a quarantine entry saying why not. Each row's message id is
``row_message_id(partner, file name, line, cells)``: reading a file again (after a crash,
or the partner dropping it twice) yields the same ids, and the hub applies each once.

Partners write a file under another name (``.name.tmp``, ``name.part``) and rename it to
``*.csv`` when complete; the adapter also leaves alone a ``*.csv`` changed within the
last ``settle_s`` seconds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.files.mapping import (
    REQUIRED_COLUMNS,
    RowProblem,
    StatusMapping,
    row_message_id,
    translate,
)
from adapters.files.quarantine import QuarantineEntry
from partner_sdk import messages as m

__all__ = [
    "ParsedFile",
    "ParsedRow",
    "file_entry_id",
    "parse_return_file",
    "quarantine_entry",
]


@dataclass(frozen=True)
class ParsedRow:
    line: int
    message_id: str
    cells: Sequence[str]
    row: Mapping[str, str]
    report: m.Message | None = None
    problem: RowProblem | None = None

    @property
    def code(self) -> str | None:
        return (self.row.get("status_code") or "").strip() or None


@dataclass
class ParsedFile:
    name: str
    header: list[str] = field(default_factory=list)
    rows: list[ParsedRow] = field(default_factory=list)
    #: A problem with the whole file (encoding, header): nothing in it is forwarded.
    problem: str | None = None


def file_entry_id(partner_id: str, name: str, data: bytes) -> str:
    """Quarantine id of a whole file (line 0)."""
    return row_message_id(partner_id, name, 0, [data.decode("utf-8", "replace")])


def parse_return_file(
    name: str,
    data: bytes,
    partner_id: str,
    mapping: StatusMapping,
    *,
    documents: Callable[[str], bytes | None] = lambda _: None,
) -> ParsedFile:
    """Parse and translate every row of a return file. Pure but for ``documents``."""
    parsed = ParsedFile(name)
    try:
        text = data.decode(mapping.encoding)
    except UnicodeDecodeError as e:
        parsed.problem = f"the file is not {mapping.encoding} text: {e}"
        return parsed
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter)
    try:
        raw_header = next(reader, None)
    except csv.Error as e:
        parsed.problem = f"the header row is not valid CSV: {e}"
        return parsed
    if raw_header is None:
        parsed.problem = "the file is empty (no header row)"
        return parsed
    header = [h.strip().lower() for h in raw_header]
    parsed.header = header
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        parsed.problem = (
            f"the header lacks column(s) {', '.join(missing)} (it has {', '.join(header)}); "
            f"expected delimiter {mapping.delimiter!r}"
        )
        return parsed
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        parsed.problem = f"the header repeats column(s) {', '.join(dupes)}"
        return parsed
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader, None)
        except csv.Error as e:
            parsed.problem = f"line {line} is not valid CSV: {e}"
            return parsed
        if cells is None:
            break
        if not any(c.strip() for c in cells):
            continue
        mid = row_message_id(partner_id, name, line, cells)
        row = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}
        if len(cells) > len(header):
            problem = RowProblem(
                "invalid_message",
                f"the row has {len(cells)} cells, the header {len(header)}",
                [{"path": "(row)", "rule": "columns", "message": "more cells than columns"}],
            )
            parsed.rows.append(ParsedRow(line, mid, cells, row, problem=problem))
            continue
        try:
            report = translate(row, mapping, documents=documents)
        except RowProblem as problem:
            parsed.rows.append(ParsedRow(line, mid, cells, row, problem=problem))
            continue
        parsed.rows.append(ParsedRow(line, mid, cells, row, report=report))
    return parsed


def quarantine_entry(partner_id: str, name: str, row: ParsedRow) -> QuarantineEntry:
    assert row.problem is not None
    return QuarantineEntry(
        entry_id=row.message_id,
        partner_id=partner_id,
        file=name,
        line=row.line,
        code=row.code,
        reason_code=row.problem.code,
        reason=row.problem.reason,
        errors=row.problem.errors,
        row=dict(row.row),
    )
