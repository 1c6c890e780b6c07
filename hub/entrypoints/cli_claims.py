"""``hubctl claims import`` (a batch file of claims onto ``claims.in``) and
``hubctl route --dry-run`` (where a file's cases would go, changing nothing).

The file format (CSV columns, JSON Lines) is described in :mod:`hub.service.importer`.

``claims import --wait`` plays the creditor's system: it consumes the creditor's receipts
queue ``creditor.<creditor id>`` and acknowledges *every* message it takes from it, also
receipts of other batches (it counts only this batch's). Do not use it while another
consumer of that queue expects to see those receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import aio_pika
import orjson
import typer
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from aio_pika.abc import AbstractConnection as AmqpConnection
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hub.config import Settings
from hub.domain.model import CaseState
from hub.infra import mongo, topology
from hub.infra.topology import Topology, existing_queue
from hub.service import importer
from hub.service.importer import (
    BatchFile,
    ImportFileError,
    ImportRow,
    ImportStats,
    PlannedCase,
    RoutePlan,
)
from partner_sdk import messages as m

__all__ = [
    "AmqpClaimSink",
    "ImportOutcome",
    "WaitOutcome",
    "count_receipt",
    "import_file",
    "register",
    "route_dry_run",
    "wait_for_batch",
]

claims_app = typer.Typer(help="Claims from the creditor: import batch files.", no_args_is_help=True)

#: Unconfirmed publishes kept in flight at once.
WINDOW = 1000
#: After the last expected receipt, how long ``--wait`` still waits for ``batch.reconciled``.
RECONCILE_GRACE_S = 15.0
RECEIPT_STATUSES = tuple(s.value for s in m.ReceiptStatus)


def register(app: typer.Typer) -> None:
    app.add_typer(claims_app, name="claims")
    app.command("route")(route)


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


# --- publishing ---------------------------------------------------------------------------


class AmqpClaimSink:
    """Publishes import rows to ``claims.in`` on a channel with publisher confirms."""

    def __init__(self, exchange: AbstractExchange) -> None:
        self.exchange = exchange

    async def send(self, row: ImportRow) -> None:
        await self.exchange.publish(
            aio_pika.Message(
                row.body,
                content_type=row.content_type,
                message_id=row.message_id,
                type=row.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=dict(row.headers),
                timestamp=dt.datetime.now(dt.UTC),
                app_id="hubctl-import",
            ),
            routing_key=importer.routing_key_for(row.type),
            mandatory=True,
        )


@dataclass
class ImportOutcome:
    batch: BatchFile
    creditor_id: str
    stats: ImportStats
    #: the hub's record of this batch, when it had reconciled it before this import
    previously: dict[str, Any] | None = None


async def _declare(channel: AbstractChannel, settings: Settings, creditor_id: str) -> Topology:
    topo = Topology(settings.namespace, settings.delivery_limit)
    await topology.declare_hub(channel, topo)
    await topology.declare_creditor(channel, topo, creditor_id)
    return topo


async def _reconciled_before(
    settings: Settings, creditor_id: str, batch_id: str
) -> dict[str, Any] | None:
    """The hub's summary of a batch it has already reconciled (None if unknown/unreachable)."""
    client = mongo.connect(settings.mongo_url)
    try:
        doc: dict[str, Any] | None = await client[settings.mongo_db].batches.find_one(
            {"_id": f"{creditor_id}:{batch_id}"}
        )
        return doc
    except Exception:  # only a hint for --wait: never stop an import for it
        return None
    finally:
        await client.close()


async def import_file(
    settings: Settings,
    path: Path,
    *,
    fmt: str | None = None,
    batch_id: str | None = None,
    creditor_id: str | None = None,
    connection: AmqpConnection | None = None,
    window: int = WINDOW,
    on_batch: Callable[[BatchFile], None] | None = None,
    on_confirmed: Callable[[int], None] | None = None,
    check_previous: bool = True,
) -> ImportOutcome:
    """Publish every row of ``path`` to ``claims.in`` (the function behind ``hubctl claims
    import``). Raises :class:`ImportFileError` for a file that cannot be read at all."""
    creditor = creditor_id or settings.creditor_id
    batch = await asyncio.to_thread(importer.open_batch, path, fmt, batch_id)
    if on_batch is not None:
        on_batch(batch)
    previously = (
        await _reconciled_before(settings, creditor, batch.batch_id) if check_previous else None
    )
    own = connection is None
    conn = connection or await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        try:
            topo = await _declare(channel, settings, creditor)
            exchange = await channel.get_exchange(topo.claims_in, ensure=False)
            rows = importer.read_rows(batch, creditor_id=creditor)
            stats = await importer.publish_rows(
                rows, AmqpClaimSink(exchange), window=window, on_confirmed=on_confirmed
            )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        if own:
            await conn.close()
    return ImportOutcome(batch, creditor, stats, previously)


# --- waiting for the receipts --------------------------------------------------------------


@dataclass
class WaitOutcome:
    statuses: Counter[str] = field(default_factory=Counter)
    #: claims whose receipt has been counted: the hub delivers at least once, so a
    #: receipt may come twice (same message id); it is counted once
    seen: set[str] = field(default_factory=set)
    reconciled: dict[str, Any] | None = None
    #: receipts of other batches taken (and acknowledged) from the queue
    others: int = 0
    timed_out: bool = False
    #: the summary came from the hub's store (the batch had been reconciled before)
    from_store: bool = False

    @property
    def receipts(self) -> int:
        return sum(self.statuses.values())


async def wait_for_batch(
    settings: Settings,
    creditor_id: str,
    batch_id: str,
    *,
    rows: int,
    raw_ids: set[str] | frozenset[str] = frozenset(),
    limit_s: float = 120.0,
    connection: AmqpConnection | None = None,
    on_receipt: Callable[[str], None] | None = None,
) -> WaitOutcome:
    """Consume ``creditor.<creditor_id>`` until this batch's ``batch.reconciled`` arrives
    (or ``limit_s``). Acknowledges every message taken, counts this batch's receipts.

    Rows the hub could not tie to the batch (raw rows, ``raw_ids``) are recognised by
    their message id. When every row has its receipt but no summary follows within
    :data:`RECONCILE_GRACE_S`, it stops too (the summary is then ``None``)."""
    result = WaitOutcome()
    own = connection is None
    conn = connection or await aio_pika.connect(settings.amqp_url)
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1000)
        topo = await _declare(channel, settings, creditor_id)
        queue = await existing_queue(channel, topo.creditor_queue(creditor_id))
        tag = await queue.consume(inbox.put)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        complete_at: float | None = None
        try:
            while result.reconciled is None:
                now = loop.time()
                limit = deadline if complete_at is None else min(deadline, complete_at)
                if now >= limit:
                    result.timed_out = complete_at is None or now >= deadline
                    break
                try:
                    msg = await asyncio.wait_for(inbox.get(), min(0.5, limit - now))
                except TimeoutError:
                    continue
                count_receipt(msg, batch_id, raw_ids, result, on_receipt)
                await msg.ack()
                if complete_at is None and result.receipts >= rows:
                    complete_at = loop.time() + RECONCILE_GRACE_S
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            with contextlib.suppress(Exception):
                await channel.close()  # what was delivered but not taken is requeued
    finally:
        if own:
            await conn.close()
    return result


def count_receipt(
    msg: AbstractIncomingMessage,
    batch_id: str,
    raw_ids: set[str] | frozenset[str],
    result: WaitOutcome,
    on_receipt: Callable[[str], None] | None = None,
) -> None:
    """Count one message of a creditor queue into ``result`` (this batch's or another's)."""
    try:
        body = orjson.loads(msg.body)
    except orjson.JSONDecodeError:
        result.others += 1
        return
    if not isinstance(body, dict):
        result.others += 1
        return
    if msg.type == m.BatchReconciled.TYPE and body.get("batch_id") == batch_id:
        result.reconciled = body
        return
    if msg.type == m.ClaimReceipt.TYPE and (
        body.get("batch_id") == batch_id or body.get("claim_message_id") in raw_ids
    ):
        claim = str(body.get("claim_message_id"))
        if claim in result.seen:
            return
        result.seen.add(claim)
        status = str(body.get("status"))
        result.statuses[status] += 1
        if on_receipt is not None:
            on_receipt(status)
        return
    result.others += 1


# --- printing ------------------------------------------------------------------------------


def _summary_table(outcome: ImportOutcome) -> Table:
    s = outcome.stats
    table = Table(title=f"batch {outcome.batch.batch_id}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("file", f"{outcome.batch.path} ({outcome.batch.format})")
    table.add_row("creditor", outcome.creditor_id)
    table.add_row("rows", str(s.rows))
    table.add_row("published", str(s.published))
    table.add_row("confirmed", str(s.confirmed))
    table.add_row("not confirmed", f"[red]{s.failed}[/]" if s.failed else "0")
    table.add_row(
        "invalid locally", f"[yellow]{s.invalid_locally}[/]" if s.invalid_locally else "0"
    )
    table.add_row("seconds", f"{s.seconds:.2f}")
    table.add_row("rate", f"{s.rate:,.0f} rows/s")
    for message_type, n in sorted(s.by_type.items()):
        table.add_row(f"  {message_type}", str(n))
    return table


def _print_problems(console: Console, stats: ImportStats, limit: int = 10) -> None:
    if stats.invalid:
        console.print(
            f"[yellow]{stats.invalid_locally} row(s) are invalid; they were published anyway "
            "and the hub answers each with a rejected receipt:[/]"
        )
        for number, problems in stats.invalid[:limit]:
            console.print(f"  row {number}: " + "; ".join(problems[:3]))
        if stats.invalid_locally > limit:
            console.print(f"  ... and {stats.invalid_locally - limit} more")
    if stats.failures:
        console.print(
            f"[red]{stats.failed} row(s) were not confirmed by the broker; import the file "
            "again (rows the hub has seen are ignored):[/]"
        )
        for number, why in stats.failures[:limit]:
            console.print(f"  row {number}: {why}")


def _wait_table(outcome: WaitOutcome, batch_id: str) -> Table:
    table = Table(title=f"receipts of batch {batch_id}")
    table.add_column("status")
    table.add_column("receipts taken", justify="right")
    table.add_column("batch.reconciled", justify="right")
    rec = outcome.reconciled or {}
    for status in RECEIPT_STATUSES:
        table.add_row(status, str(outcome.statuses.get(status, 0)), str(rec.get(status, "-")))
    table.add_row("[bold]total[/]", str(outcome.receipts), str(rec.get("received", "-")))
    if rec:
        table.add_row("expected", "", str(rec.get("expected", "-")))
    return table


# --- commands ------------------------------------------------------------------------------


@claims_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    format: Annotated[
        str | None,
        typer.Option("--format", help="csv or jsonl (default: by the file's extension)"),
    ] = None,
    batch_id: Annotated[
        str | None,
        typer.Option(help="batch id (default: file stem + first 12 hex of its sha256)"),
    ] = None,
    creditor_id: Annotated[
        str | None,
        typer.Option(help="creditor of rows without creditor_id, and whose receipts --wait reads"),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="then consume the creditor's receipts queue (acknowledging every message "
            "in it) until this batch is reconciled",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 120.0,
) -> None:
    """Publish a CSV or JSON Lines file of claims to claims.in, one message per row.

    Re-importing the same file publishes the same message ids: the hub ignores them."""
    settings = Settings()
    creditor = creditor_id or settings.creditor_id
    console = _out()

    async def main() -> tuple[ImportOutcome, WaitOutcome | None]:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("counting rows", total=None)

            def on_batch(batch: BatchFile) -> None:
                progress.update(task, description="publishing", total=batch.rows)

            outcome = await import_file(
                settings,
                file,
                fmt=format,
                batch_id=batch_id,
                creditor_id=creditor,
                on_batch=on_batch,
                on_confirmed=lambda n: progress.advance(task, n),
                check_previous=wait,
            )
        console.print(_summary_table(outcome))
        _print_problems(console, outcome.stats)
        if not wait:
            return outcome, None
        if outcome.previously is not None:
            console.print(
                f"batch {outcome.batch.batch_id} was reconciled before "
                f"({outcome.previously.get('reconciled_at')}): the hub ignores the messages "
                "it has seen, so no new receipts come; its summary:"
            )
            stored = WaitOutcome(reconciled=outcome.previously, from_store=True)
            return outcome, stored
        console.print(
            f"waiting for the receipts on {settings.namespace}creditor.{creditor} "
            f"(at most {timeout:.0f} s; every message taken from the queue is acknowledged)"
        )
        with Progress(
            TextColumn("[bold]receipts"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("receipts", total=outcome.stats.published)
            waited = await wait_for_batch(
                settings,
                creditor,
                outcome.batch.batch_id,
                rows=outcome.stats.published,
                raw_ids=outcome.stats.raw_ids,
                limit_s=timeout,
                on_receipt=lambda _status: progress.advance(task),
            )
        return outcome, waited

    try:
        outcome, waited = asyncio.run(main())
    except ImportFileError as e:
        _err().print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from e
    code = 1 if outcome.stats.failed else 0
    if waited is not None:
        console.print(_wait_table(waited, outcome.batch.batch_id))
        if waited.others:
            console.print(f"({waited.others} message(s) of other batches taken and acknowledged)")
        if waited.reconciled is None:
            if waited.timed_out:
                console.print(f"[red]no batch.reconciled within {timeout:.0f} s[/]")
                code = 1
            else:
                console.print(
                    "[yellow]every row has its receipt, but the hub sent no batch.reconciled: "
                    "rows it could not read were not counted in the batch[/]"
                )
    raise typer.Exit(code)


# --- routing dry-run ------------------------------------------------------------------------


async def _existing_cases(
    settings: Settings, case_ids: list[str], client: Any
) -> dict[str, CaseState]:
    found: dict[str, CaseState] = {}
    db = client[settings.mongo_db]
    for start in range(0, len(case_ids), 500):
        chunk = case_ids[start : start + 500]
        async for doc in db.cases.find({"_id": {"$in": chunk}}):
            found[doc["_id"]] = mongo.case_from_doc(doc)
    return found


async def _known_claims(
    settings: Settings, keys: list[str], client: Any
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    db = client[settings.mongo_db]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async for doc in db.claims.find({"_id": {"$in": chunk}}, {"content_hash": 1, "status": 1}):
            found[doc["_id"]] = doc
    return found


async def route_dry_run(
    settings: Settings,
    path: Path,
    *,
    fmt: str | None = None,
    creditor_id: str | None = None,
) -> RoutePlan:
    """Group the file's claims into cases and route them against the partner profiles in
    MongoDB, as the hub would. Reads only."""
    batch = await asyncio.to_thread(importer.open_batch, path, fmt, None)
    rows = importer.read_rows(batch, creditor_id=creditor_id or settings.creditor_id)
    cases, plan = await asyncio.to_thread(importer.group_cases, rows)
    client = mongo.connect(settings.mongo_url)
    try:
        directory = mongo.MongoPartnerDirectory(client[settings.mongo_db])
        await directory.refresh()
        profiles = await directory.profiles()
        existing = await _existing_cases(settings, list(cases), client)
        keys = [f"{c.creditor_entity}/{n}" for c in cases.values() for n in c.hashes]
        known = await _known_claims(settings, keys, client)
        return importer.plan_routes(cases, plan, profiles, directory.open_cases(), existing, known)
    finally:
        await client.close()


def _money(totals: Mapping[str, Decimal]) -> str:
    return ", ".join(f"{cur} {amount:,.2f}" for cur, amount in sorted(totals.items()))


def _short_reason(case: PlannedCase) -> str:
    if case.reason.startswith(("stays", "already", "claims updated")):
        return case.reason
    if case.partner_id is not None:
        return "reopened" if case.reason.startswith("reopened") else ""
    if "capacity" in case.reason:
        return "fitting partners at capacity"
    if case.reason.startswith("no active partner"):
        return "no partner fits"
    return case.reason


def _print_plan(console: Console, plan: RoutePlan, show: int) -> None:
    live = [c for c in plan.cases if c.claims]
    table = Table(title=f"{len(live)} case(s) from {plan.rows} row(s) — nothing was changed")
    table.add_column("case", no_wrap=True)
    table.add_column("ctry")
    table.add_column("n", justify="right")
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("cur")
    table.add_column("phase")
    table.add_column("partner", no_wrap=True)
    table.add_column("why", overflow="fold")
    for case in live[:show]:
        partner = case.partner_id or "[yellow]unassigned[/]"
        if case.kept is not None:
            partner = f"[dim]{case.kept}[/]"
        table.add_row(
            case.case_id,
            case.country,
            str(len(case.claims)),
            f"{case.total:,.2f}",
            case.currency,
            case.phase.value,
            partner,
            _short_reason(case),
        )
    console.print(table)
    if len(live) > show:
        console.print(f"... {len(live) - show} more case(s) (--show N to see more)")

    per: dict[str, Counter[str]] = defaultdict(Counter)
    amounts: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    unassigned: Counter[str] = Counter()
    for case in live:
        key = case.kept or case.partner_id or "unassigned"
        per[key]["cases"] += 1
        amounts[key][case.currency] += case.total
        if case.partner_id is None and case.kept is None:
            unassigned[f"{case.country} / {case.phase.value}: {_short_reason(case)}"] += 1
    summary = Table(title="per partner")
    summary.add_column("partner")
    summary.add_column("cases", justify="right")
    summary.add_column("amount")
    kept = {c.kept for c in live if c.kept}
    for key in sorted(per, key=lambda k: (k in kept, k == "unassigned", k)):
        label = f"[yellow]{key}[/]" if key == "unassigned" else key
        label = f"[dim]{key}[/]" if key in kept else label
        summary.add_row(label, str(per[key]["cases"]), _money(amounts[key]))
    console.print(summary)
    if unassigned:
        console.print("unassigned, by country / phase:")
        for what, n in unassigned.most_common():
            console.print(f"  {what}: {n}")
    if plan.refused:
        console.print(
            "rows the hub would refuse: "
            + ", ".join(f"{why} {n}" for why, n in plan.refused.most_common())
        )


def route(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="required: show where the file's cases would go")
    ] = False,
    show: Annotated[int, typer.Option(help="cases listed (all are counted)")] = 30,
    format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: by extension)")
    ] = None,
    creditor_id: Annotated[str | None, typer.Option(help="creditor of rows without one")] = None,
) -> None:
    """Where a claims file's cases would be routed (partner or unassigned), changing nothing."""
    if not dry_run:
        _err().print(
            "routing happens on import: the hub routes each case as its claims arrive "
            "(hubctl claims import FILE). Use --dry-run to see where FILE's cases would go."
        )
        raise typer.Exit(2)
    settings = Settings()
    started = time.monotonic()
    try:
        plan = asyncio.run(route_dry_run(settings, file, fmt=format, creditor_id=creditor_id))
    except ImportFileError as e:
        _err().print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from e
    console = _out()
    _print_plan(console, plan, max(show, 0))
    console.print(f"({time.monotonic() - started:.2f} s)")
