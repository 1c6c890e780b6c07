"""Quarantine: rows (or whole files) the file adapter will not guess about.

Each quarantined row is kept twice: in the partner's drop folder
(``<drop>/quarantine/<file>.quarantine.csv``, the row as the partner wrote it plus
``line``, ``reason_code`` and ``reason``) for whoever fixes and re-drops it, and in
MongoDB collection ``quarantine`` for the coordinator's dashboard, one document per row::

    {
      "_id": "<the row's message id>",      # so re-reading a file records it once
      "partner_id": "acme-de",
      "file": "status-2026-05-03.csv",
      "line": 7,                             # 0: the whole file
      "code": "XYZ",                         # the partner's status code (None if absent)
      "reason_code": "unknown_code",         # unknown_code | invalid_message | invalid_file
      "reason": "status code 'XYZ' is not in the mapping ...",
      "errors": [{"path": ..., "rule": ..., "message": ...}],
      "row": {"case_id": ..., "status_code": ..., ...},
      "source": "files",
      "status": "open",                      # the coordinator sets "resolved"
      "quarantined_at": <UTC datetime>
    }
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "COLLECTION",
    "InMemoryQuarantineLog",
    "MongoQuarantineLog",
    "QuarantineEntry",
    "QuarantineLog",
]

COLLECTION = "quarantine"


@dataclass(frozen=True)
class QuarantineEntry:
    entry_id: str
    partner_id: str
    file: str
    line: int
    code: str | None
    reason_code: str
    reason: str
    errors: Sequence[Mapping[str, str]] = ()
    row: Mapping[str, str] = field(default_factory=dict)
    quarantined_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.entry_id,
            "partner_id": self.partner_id,
            "file": self.file,
            "line": self.line,
            "code": self.code,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "errors": [dict(e) for e in self.errors],
            "row": dict(self.row),
            "source": "files",
            "status": "open",
            "quarantined_at": self.quarantined_at,
        }


class QuarantineLog(Protocol):
    """Where quarantined rows are recorded for the coordinator."""

    async def record(self, entries: Sequence[QuarantineEntry]) -> None: ...


class InMemoryQuarantineLog:
    """``QuarantineLog`` in a dict, with the semantics of the MongoDB one (first write wins)."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}

    async def record(self, entries: Sequence[QuarantineEntry]) -> None:
        for entry in entries:
            self.documents.setdefault(entry.entry_id, entry.to_document())


class MongoQuarantineLog:
    """``QuarantineLog`` in the MongoDB collection ``quarantine`` (idempotent upserts)."""

    def __init__(self, db: Any) -> None:
        self.collection = db[COLLECTION]

    async def record(self, entries: Sequence[QuarantineEntry]) -> None:
        for entry in entries:
            doc = entry.to_document()
            await self.collection.update_one(
                {"_id": doc.pop("_id")}, {"$setOnInsert": doc}, upsert=True
            )
