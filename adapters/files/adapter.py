"""The file adapter: a partner that exchanges CSV files, connected to the hub as itself.

Drop folder layout (created if missing)::

    <drop>/outgoing/      placement and notice files for the partner (``outgoing``)
    <drop>/incoming/      the partner's status return files, *.csv (``incoming``)
    <drop>/incoming/documents/   documents a return row names in its ``document`` column
    <drop>/processed/     return files (and their documents) once handled
    <drop>/quarantine/    rows the adapter would not guess about, with the reason

Out: the messages of ``partner.<id>`` are written in batches (up to the client's
prefetch) as one placement file and one notice file, and acknowledged once the files are
renamed into place; a message is never acknowledged before its file exists. If the
folder cannot be written, the batch is given back (requeued); the broker dead-letters a
message after its delivery limit.

In: every ``poll_s`` seconds each settled return file is read; each row is sent to the
hub as the partner's report (its message id derived from file, line and content), or
quarantined (folder + MongoDB ``quarantine``) when its status code is not in the mapping
or it does not make a valid report. Then the file moves to ``processed/``. If the broker
does not confirm a row, the file stays in ``incoming/`` and is read again next time; the
rows already sent are recognised by their ids.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import datetime as dt
import io
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from adapters.files.incoming import (
    ParsedFile,
    file_entry_id,
    parse_return_file,
    quarantine_entry,
)
from adapters.files.mapping import StatusMapping
from adapters.files.outgoing import (
    NOTICE_COLUMNS,
    PLACEMENT_COLUMNS,
    atomic_write,
    notice_row,
    placement_row,
    write_csv,
)
from adapters.files.quarantine import QuarantineEntry, QuarantineLog
from partner_sdk import messages as m
from partner_sdk.client import Delivery, PartnerClient
from partner_sdk.errors import PartnerSDKError

__all__ = ["DropFolder", "FileAdapter", "FileReport", "Forwarder"]

log = logging.getLogger(__name__)

_SOURCES_KEPT = 10_000


class Forwarder(Protocol):
    """What sends a report to the hub: ``PartnerClient.send`` (or a test double)."""

    async def send(self, report: m.Message, *, message_id: str | None = None) -> str: ...


@dataclass(frozen=True)
class DropFolder:
    root: Path

    @property
    def outgoing(self) -> Path:
        return self.root / "outgoing"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def documents(self) -> Path:
        return self.root / "incoming" / "documents"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def create(self) -> None:
        for folder in (self.outgoing, self.documents, self.processed, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)

    def ready(self, settle_s: float, now: float) -> list[Path]:
        """Return files complete enough to read, oldest first."""
        found = []
        for path in self.incoming.glob("*.csv"):
            if path.name.startswith(".") or not path.is_file():
                continue
            mtime = path.stat().st_mtime
            if now - mtime >= settle_s:
                found.append((mtime, path.name, path))
        return [p for _, _, p in sorted(found)]

    def read_document(self, name: str) -> bytes | None:
        path = self.documents / name
        if path.parent != self.documents or not path.is_file():
            return None
        return path.read_bytes()


@dataclass
class FileReport:
    """What became of one return file."""

    file: str
    forwarded: list[tuple[int, str, str]] = field(default_factory=list)  # line, id, type
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    moved_to: Path | None = None


def _unique(folder: Path, name: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"{Path(name).stem}.{stamp}{Path(name).suffix}"


def _quarantine_csv(parsed: ParsedFile, entries: Sequence[QuarantineEntry]) -> bytes:
    columns = [*(h for h in parsed.header if h), "line", "reason_code", "reason"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for e in entries:
        writer.writerow(
            {**e.row, "line": str(e.line), "reason_code": e.reason_code, "reason": e.reason}
        )
    return buffer.getvalue().encode("utf-8")


class FileAdapter:
    """Run with ``async with FileAdapter(...)`` (or ``start()`` / ``stop()``); after
    ``open()``, ``pump_once`` and ``poll_once`` do one round of each direction (cron-style
    runs, tests)."""

    def __init__(
        self,
        client: PartnerClient,
        drop: Path | str,
        mapping: StatusMapping,
        quarantine: QuarantineLog,
        *,
        forwarder: Forwarder | None = None,
        poll_s: float = 2.0,
        settle_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mapping.partner_id is not None and mapping.partner_id != client.partner_id:
            raise ValueError(
                f"mapping {mapping.source} is partner {mapping.partner_id}'s, "
                f"not {client.partner_id}'s"
            )
        self.client = client
        self.forwarder: Forwarder = forwarder or client
        self.partner_id = client.partner_id
        self.drop = DropFolder(Path(drop))
        self.mapping = mapping
        self.quarantine = quarantine
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.clock = clock
        self.batch_max = client.prefetch
        # message id -> "file:line", so an error.reply can name the row it answers
        self.sources: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []

    # --- running ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the folders and connect, without starting the loops (for driving the
        adapter round by round with ``pump_once`` and ``poll_once``)."""
        await asyncio.to_thread(self.drop.create)
        await self.client.connect()

    async def start(self) -> None:
        """``open`` and run both directions in the background until ``stop``."""
        await self.open()
        self._tasks = [
            asyncio.create_task(self._forever(self._pump), name=f"files-out:{self.partner_id}"),
            asyncio.create_task(self._forever(self._poll), name=f"files-in:{self.partner_id}"),
        ]
        log.info("file adapter for %s on %s", self.partner_id, self.drop.root)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.disconnect()

    async def __aenter__(self) -> FileAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _forever(self, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception:  # e.g. MongoDB or the folder unreachable: log, keep going
                log.exception(
                    "partner %s: file adapter round failed; next try in %.1f s",
                    self.partner_id,
                    self.poll_s,
                )
                await asyncio.sleep(self.poll_s)

    async def _pump(self) -> None:
        await self.pump_once(self.poll_s)

    async def _poll(self) -> None:
        await self.poll_once()
        await asyncio.sleep(self.poll_s)

    # --- out: hub -> files --------------------------------------------------------------

    async def pump_once(self, wait_s: float = 1.0) -> int:
        """Write the messages waiting (up to ``batch_max``, the first awaited for
        ``wait_s`` seconds) to files; how many were taken."""
        first = await self.client.next_delivery(timeout=wait_s)
        if first is None:
            return 0
        batch = [first]
        while len(batch) < self.batch_max:
            more = await self.client.next_delivery(timeout=0.05)
            if more is None:
                break
            batch.append(more)
        try:
            await asyncio.to_thread(self._write, batch)
        except OSError as e:
            log.error(
                "partner %s: cannot write to %s (%s); %d message(s) given back",
                self.partner_id,
                self.drop.outgoing,
                e,
                len(batch),
            )
            for d in batch:
                await d.reject(requeue=True)
            await asyncio.sleep(self.poll_s)
            return len(batch)
        for d in batch:
            await d.ack()
        return len(batch)

    def _write(self, batch: Sequence[Delivery]) -> None:
        placements = [d for d in batch if isinstance(d.message, m.CaseAssigned)]
        notices = [d for d in batch if not isinstance(d.message, m.CaseAssigned)]
        if placements:
            path = write_csv(
                self.drop.outgoing,
                "placements",
                PLACEMENT_COLUMNS,
                (
                    placement_row(d.message_id, d.message)
                    for d in placements
                    if isinstance(d.message, m.CaseAssigned)
                ),
                keys=[d.message_id for d in placements],
            )
            log.info("partner %s: %d placement(s) in %s", self.partner_id, len(placements), path)
        if notices:
            path = write_csv(
                self.drop.outgoing,
                "notices",
                NOTICE_COLUMNS,
                (notice_row(d.message_id, d.message, self._source_of(d.message)) for d in notices),
                keys=[d.message_id for d in notices],
            )
            log.info("partner %s: %d notice(s) in %s", self.partner_id, len(notices), path)

    def _source_of(self, msg: m.Message) -> str:
        if isinstance(msg, m.ErrorReply):
            return self.sources.get(msg.in_reply_to, "")
        return ""

    # --- in: files -> hub ---------------------------------------------------------------

    async def poll_once(self) -> list[FileReport]:
        """Handle every settled return file once. A file whose rows the broker did not
        confirm stays for the next round."""
        reports = []
        paths = await asyncio.to_thread(self.drop.ready, self.settle_s, self.clock())
        for path in paths:
            try:
                reports.append(await self.process(path))
            except PartnerSDKError as e:
                log.warning(
                    "partner %s: %s left in incoming/ for the next round: %s",
                    self.partner_id,
                    path.name,
                    e,
                )
                break
        return reports

    async def process(self, path: Path) -> FileReport:
        """Send or quarantine every row of one return file, then move it to processed/."""
        data = await asyncio.to_thread(path.read_bytes)
        report = FileReport(path.name)
        parsed = await asyncio.to_thread(
            parse_return_file,
            path.name,
            data,
            self.partner_id,
            self.mapping,
            documents=self.drop.read_document,
        )
        if parsed.problem is not None:
            entry = QuarantineEntry(
                entry_id=file_entry_id(self.partner_id, path.name, data),
                partner_id=self.partner_id,
                file=path.name,
                line=0,
                code=None,
                reason_code="invalid_file",
                reason=parsed.problem,
            )
            await self.quarantine.record([entry])
            report.quarantined.append(entry)
            report.moved_to = await asyncio.to_thread(self._quarantine_file, path, parsed.problem)
            log.warning(
                "partner %s: %s quarantined whole: %s", self.partner_id, path.name, parsed.problem
            )
            return report
        documents: list[str] = []
        for row in parsed.rows:
            if row.report is None:
                report.quarantined.append(quarantine_entry(self.partner_id, path.name, row))
                continue
            await self.forwarder.send(row.report, message_id=row.message_id)
            self._remember(row.message_id, f"{path.name}:{row.line}")
            report.forwarded.append((row.line, row.message_id, row.report.TYPE))
            if isinstance(row.report, m.DocumentAdded):
                documents.append(row.row.get("document", "").strip())
        if report.quarantined:
            await self.quarantine.record(report.quarantined)
            for e in report.quarantined:
                log.warning(
                    "partner %s: %s line %d (code %s, case %s) quarantined: %s",
                    self.partner_id,
                    e.file,
                    e.line,
                    e.code,
                    e.row.get("case_id"),
                    e.reason,
                )
        report.moved_to = await asyncio.to_thread(
            self._finish, path, parsed, report.quarantined, documents
        )
        log.info(
            "partner %s: %s: %d row(s) sent, %d quarantined",
            self.partner_id,
            path.name,
            len(report.forwarded),
            len(report.quarantined),
        )
        return report

    def _remember(self, message_id: str, source: str) -> None:
        self.sources[message_id] = source
        self.sources.move_to_end(message_id)
        while len(self.sources) > _SOURCES_KEPT:
            self.sources.popitem(last=False)

    def _finish(
        self,
        path: Path,
        parsed: ParsedFile,
        quarantined: Sequence[QuarantineEntry],
        documents: Sequence[str],
    ) -> Path:
        self.drop.create()
        if quarantined:
            target = _unique(self.drop.quarantine, f"{path.stem}.quarantine.csv")
            atomic_write(target, _quarantine_csv(parsed, quarantined))
        for name in documents:
            source = self.drop.documents / name
            if source.is_file():
                (self.drop.processed / "documents").mkdir(exist_ok=True)
                shutil.move(source, _unique(self.drop.processed / "documents", name))
        target = _unique(self.drop.processed, path.name)
        shutil.move(path, target)
        return target

    def _quarantine_file(self, path: Path, reason: str) -> Path:
        self.drop.create()
        target = _unique(self.drop.quarantine, path.name)
        shutil.move(path, target)
        atomic_write(target.with_name(target.name + ".reason.txt"), (reason + "\n").encode())
        return target
