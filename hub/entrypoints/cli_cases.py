"""``hubctl cases``, ``hubctl settlements`` and ``hubctl docs``: the coordinator's desk.

Read commands only need MongoDB. Commands that change a case write its events and their
outgoing messages in one transaction, then publish those messages right away; what the
broker does not confirm stays in the outbox, and a running hub worker's relay sends it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from hub.config import Settings
from hub.domain.errors import DomainError
from hub.domain.lifecycle import outstanding
from hub.domain.model import CaseState, Event
from hub.infra import mongo
from hub.service.coordinator import Coordinator
from hub.service.ports import OutMessage

T = TypeVar("T")

log = logging.getLogger(__name__)

cases_app = typer.Typer(help="Find, read and act on cases.", no_args_is_help=True)
settlements_app = typer.Typer(
    help="Settlement offers waiting for a decision.", no_args_is_help=True
)
docs_app = typer.Typer(help="Documents exchanged on a case (GridFS).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cases_app, name="cases")
    app.add_typer(settlements_app, name="settlements")
    app.add_typer(docs_app, name="docs")


# --- plumbing shared with cli_partners -----------------------------------------------------


def out() -> Console:
    """A console made at call time, so that it sees the terminal (or test runner) of now."""
    return Console(highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str) -> typer.Exit:
    err().print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(1)


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; a refusal of the domain is printed in red, exit 1."""
    from pymongo.errors import PyMongoError

    from hub.infra.rabbit_admin import BrokerAdminError

    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except DomainError as e:
        raise fail(e.message) from None
    except BrokerAdminError as e:
        raise fail(f"RabbitMQ management API: {e}") from None
    except PyMongoError as e:
        raise fail(f"MongoDB: {e}") from None


@dataclass
class Session:
    """What a command works with: the store, the partner directory, documents and, when
    the broker could be reached, a publisher."""

    settings: Settings
    store: mongo.MongoStore
    partners: mongo.MongoPartnerDirectory
    documents: mongo.GridFSDocuments
    publisher: Any = None

    @property
    def coordinator(self) -> Coordinator:
        return Coordinator(self.store, self.partners)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish what a command produced; say what the relay will have to send."""
        if not messages:
            return
        confirmed: list[str] = []
        if self.publisher is not None:
            try:
                confirmed = await self.publisher.publish(messages)
                await self.store.mark_sent(confirmed)
            except Exception as e:  # the outbox keeps them
                log.warning("publishing after commit failed: %r", e)
        for msg in messages:
            sent = msg.message_id in confirmed
            mark = "[green]sent[/]" if sent else "[yellow]queued[/]"
            out().print(f"  {mark} {msg.type} -> {msg.routing_key} ({msg.message_id})")
        left = len(messages) - len(confirmed)
        if left:
            out().print(
                f"[yellow]{left} message(s) could not be published now; they stay in the "
                "outbox and a running hub worker's relay publishes them.[/]"
            )


@asynccontextmanager
async def session(
    settings: Settings | None = None, *, publish: bool = False
) -> AsyncIterator[Session]:
    """Open MongoDB (and, with ``publish``, a confirming channel to the broker)."""
    from hub.bootstrap import declare_topology, open_store
    from hub.infra import rabbit

    settings = settings or Settings()
    client, store = await open_store(settings)
    connection = None
    s = Session(
        settings, store, mongo.MongoPartnerDirectory(store.db), mongo.GridFSDocuments(store.db)
    )
    try:
        if publish:
            try:
                connection = await rabbit.connect(settings.amqp_url)
                topo = await declare_topology(connection, settings)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                s.publisher = rabbit.RabbitPublisher(channel, topo)
            except Exception as e:  # broker down: the change still goes into the outbox
                err().print(
                    f"[yellow]warning:[/] RabbitMQ unreachable ({e!r}); changes are saved and "
                    "their messages wait in the outbox for a hub worker's relay."
                )
                if connection is not None:
                    await connection.close()
                    connection = None
        yield s
    finally:
        if connection is not None:
            await connection.close()
        await client.close()


# --- formatting ------------------------------------------------------------------------


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``2025-01-31T12:00:00Z``, ``2025-01-31 12:00``, ``2025-01-31``) or
    ``now``; without an offset the time is UTC."""
    if text.strip().lower() == "now":
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time such as 2025-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def fmt_time(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return fmt_time(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def summarize(event: Event, width: int = 90) -> str:
    """The gist of an event's data, on one line."""
    d = event.data
    if "claim" in d:
        c = d["claim"]
        total = sum(
            (Decimal(str(c.get(k, 0))) for k in ("principal", "interest", "fees")), Decimal(0)
        )
        text = f"invoice {c.get('invoice_number')} total {total} due {c.get('due_date')}"
    else:
        skip = {"case", "assignment_id"} if event.kind.value != "assigned" else {"case"}
        text = " ".join(f"{k}={_short(v)}" for k, v in d.items() if k not in skip and v is not None)
    return text if len(text) <= width else text[: width - 1] + "…"


def case_panel(state: CaseState, *, title: str) -> Panel:
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column()
    debtor = state.debtor
    pending = ", ".join(
        f"{sid} ({s.get('amount')} {s.get('currency')})"
        for sid, s in state.pending_settlements.items()
    )
    for label, value in (
        ("lifecycle", state.lifecycle.value),
        ("phase", state.phase.value),
        ("creditor", f"{state.creditor_id} / {state.creditor_entity}"),
        ("debtor", f"{debtor.get('name')} ({state.country})"),
        ("partner", state.partner_id or "-"),
        ("assignment", state.assignment_id or "-"),
        ("accept by", fmt_time(state.accept_by)),
        ("accepted", fmt_time(state.accepted_at)),
        ("claims", ", ".join(sorted(state.open_claims)) or "-"),
        ("total", f"{state.total} {state.currency}"),
        ("collected", f"{state.collected} {state.currency}"),
        ("outstanding", f"{outstanding(state)} {state.currency}"),
        ("promised", f"{state.promised} {state.currency}"),
        ("settlements", pending or "-"),
        ("declined by", ", ".join(state.declined_by) or "-"),
        ("closed", f"{state.close_code} {fmt_time(state.closed_at)}" if state.close_code else "-"),
        ("version", str(state.version)),
    ):
        rows.add_row(label, value)
    return Panel(rows, title=title, expand=False)


def timeline(events: Sequence[Event]) -> Table:
    table = Table(title="timeline (UTC)", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("occurred_at")
    table.add_column("recorded_at")
    table.add_column("kind")
    table.add_column("actor")
    table.add_column("data", overflow="fold")
    for e in events:
        table.add_row(
            str(e.seq),
            fmt_time(e.occurred_at),
            fmt_time(e.recorded_at),
            e.kind.value,
            e.actor,
            summarize(e),
        )
    return table


def cases_table(states: Sequence[CaseState], *, title: str, deadline: bool = False) -> Table:
    table = Table(title=title)
    for name in ("case", "lifecycle", "phase", "country", "partner", "debtor", "total"):
        table.add_column(name, justify="right" if name == "total" else "left")
    if deadline:
        table.add_column("accept by")
    else:
        table.add_column("collected", justify="right")
    for s in states:
        row = [
            s.case_id,
            s.lifecycle.value,
            s.phase.value,
            s.country,
            s.partner_id or "-",
            str(s.debtor.get("name", "")),
            f"{s.total} {s.currency}",
            fmt_time(s.accept_by) if deadline else f"{s.collected} {s.currency}",
        ]
        table.add_row(*row)
    return table


# --- cases ---------------------------------------------------------------------------------


@cases_app.command("show")
def show(
    case_id: Annotated[str, typer.Argument(help="Case id, e.g. C-1A2B3C4D5E6F7081.")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Show the case as of this time (ISO 8601, UTC if no offset)."),
    ] = None,
    axis: Annotated[
        str,
        typer.Option(
            help="recorded: as the hub knew it then; occurred: by what had happened by then."
        ),
    ] = "recorded",
) -> None:
    """A case's state and its timeline, now or as of a moment."""
    if axis not in ("recorded", "occurred"):
        raise typer.BadParameter("must be 'recorded' or 'occurred'", param_hint="--axis")
    moment = parse_time(as_of) if as_of else None

    async def main() -> None:
        async with session() as s:
            state, events = await s.coordinator.show(case_id, moment, axis)
        if state is None:
            if moment is None:
                raise fail(f"there is no case {case_id}")
            raise fail(f"case {case_id} did not exist yet at {fmt_time(moment)} ({axis})")
        title = f"case {case_id}"
        if moment is not None:
            title += f" as of {fmt_time(moment)} UTC ({axis})"
        console = out()
        console.print(case_panel(state, title=title))
        console.print(timeline(events))

    run(main())


@cases_app.command("list")
def list_cases(
    status: Annotated[str | None, typer.Option(help="Lifecycle, e.g. assigned.")] = None,
    partner: Annotated[str | None, typer.Option(help="Partner id.")] = None,
    country: Annotated[str | None, typer.Option(help="Debtor country (ISO 3166-1).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Cases, filtered by lifecycle, partner and country."""

    async def main() -> None:
        async with session() as s:
            states = await s.coordinator.list_cases(
                lifecycle=status, partner_id=partner, country=country, limit=limit
            )
        out().print(cases_table(states, title=f"{len(states)} case(s)"))

    run(main())


@cases_app.command("find")
def find(
    query: Annotated[str, typer.Argument(help="Case id, invoice number or debtor name.")],
) -> None:
    """Find cases by case id, invoice number or the beginning of the debtor's name."""

    async def main() -> None:
        async with session() as s:
            states = await s.coordinator.find(query)
        if not states:
            out().print(f"no case matches {query!r}")
            return
        out().print(cases_table(states, title=f"{len(states)} case(s) matching {query!r}"))

    run(main())


@cases_app.command("overdue")
def overdue(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200) -> None:
    """Assigned cases their partner has not accepted within its SLA: candidates to reassign."""

    async def main() -> None:
        async with session() as s:
            states = await s.coordinator.overdue(limit=limit)
        if not states:
            out().print("no case is overdue")
            return
        out().print(cases_table(states, title=f"{len(states)} overdue case(s)", deadline=True))

    run(main())


def _placed(state: CaseState | None) -> str:
    if state is None:
        return ""
    if state.partner_id:
        return (
            f"case {state.case_id} is now with [bold]{state.partner_id}[/] "
            f"(assignment {state.assignment_id}, accept by {fmt_time(state.accept_by)} UTC)"
        )
    return (
        f"[yellow]case {state.case_id} is {state.lifecycle.value}: no partner fits; it "
        "waits in the unassigned inbox[/]"
    )


@cases_app.command("reassign")
def reassign(
    case_id: str,
    to: Annotated[
        str | None, typer.Option("--to", help="Partner to place it with (default: routing).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Told to the partner it is taken from.")] = (
        "reassigned by the coordinator"
    ),
    by: Annotated[str, typer.Option("--by", help="Who reassigns, for the history.")] = (
        "coordinator"
    ),
) -> None:
    """Take a case from its partner and place it with another (never the same one)."""

    async def main() -> None:
        async with session(publish=True) as s:
            messages = await s.coordinator.reassign(case_id, to_partner=to, reason=reason, actor=by)
            await s.publish(messages)
            out().print(_placed(await s.store.case(case_id)))

    run(main())


@cases_app.command("recall")
def recall(
    case_id: str,
    reason: Annotated[str, typer.Option(help="Why the creditor takes the case back.")],
    by: Annotated[str, typer.Option("--by", help="Who recalls, for the history.")] = "creditor",
) -> None:
    """The creditor takes a case back from its partner; it is not placed again."""

    async def main() -> None:
        async with session(publish=True) as s:
            messages = await s.coordinator.recall(case_id, reason=reason, actor=by)
            await s.publish(messages)
            out().print(f"case {case_id} recalled")

    run(main())


# --- settlements -----------------------------------------------------------------------------


@settlements_app.command("list")
def settlements_list() -> None:
    """Settlement offers waiting for the coordinator's decision."""

    async def main() -> None:
        async with session() as s:
            pending = await s.coordinator.pending_settlements()
        if not pending:
            out().print("no settlement is waiting for a decision")
            return
        table = Table(title=f"{len(pending)} settlement(s) to decide")
        for name in ("case", "settlement", "partner", "country", "offer", "case total", "terms"):
            table.add_column(name)
        for case_id, d in pending:
            table.add_row(
                case_id,
                str(d.get("settlement_id")),
                str(d.get("partner_id") or "-"),
                str(d.get("country")),
                f"{d.get('amount')} {d.get('currency')}",
                str(d.get("case_total")),
                str(d.get("terms") or ""),
            )
        out().print(table)

    run(main())


@settlements_app.command("decide")
def settlements_decide(
    case_id: str,
    settlement_id: str,
    approve: Annotated[
        bool | None, typer.Option("--approve/--reject", help="The decision (required).")
    ] = None,
    note: Annotated[str | None, typer.Option(help="Told to the partner.")] = None,
    by: Annotated[str, typer.Option("--by", help="Who decides.")] = "coordinator",
) -> None:
    """Approve or reject a settlement offer; the partner receives ``settlement.decided``."""
    if approve is None:
        raise typer.BadParameter("say --approve or --reject", param_hint="--approve/--reject")

    async def main() -> None:
        async with session(publish=True) as s:
            messages = await s.coordinator.decide_settlement(
                case_id, settlement_id, approved=approve, decided_by=by, note=note
            )
            await s.publish(messages)
        word = "approved" if approve else "rejected"
        out().print(f"settlement {settlement_id} on case {case_id} {word}")

    run(main())


# --- documents -------------------------------------------------------------------------------


def _document_id(info: Mapping[str, Any]) -> str:
    meta = info.get("metadata") or {}
    return str(meta.get("document_id") or str(info["_id"]).split("/", 1)[-1])


@docs_app.command("list")
def docs_list(case_id: str) -> None:
    """The documents of a case."""

    async def main() -> None:
        async with session() as s:
            infos = await s.documents.list_for_case(case_id)
        if not infos:
            out().print(f"case {case_id} has no documents")
            return
        table = Table(title=f"documents of case {case_id}")
        for name in ("document", "filename", "kind", "bytes", "uploader", "uploaded", "sha256"):
            table.add_column(name, justify="right" if name == "bytes" else "left")
        for info in infos:
            meta = info.get("metadata") or {}
            table.add_row(
                _document_id(info),
                str(info.get("filename", "")),
                str(meta.get("kind", "")),
                str(info.get("length", meta.get("size", ""))),
                str(meta.get("uploader", "")),
                fmt_time(info.get("uploadDate")),
                str(meta.get("sha256", ""))[:16] + "…",
            )
        out().print(table)

    run(main())


@docs_app.command("get")
def docs_get(
    case_id: str,
    document_id: str,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: its filename, here)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Download a document, verifying its sha256 against the one recorded at upload."""
    from hub.service.updates import document_file_id

    async def main() -> None:
        async with session() as s:
            found = await s.documents.get(document_file_id(case_id, document_id))
        if found is None:
            raise fail(f"case {case_id} has no document {document_id}")
        info, data = found
        digest = hashlib.sha256(data).hexdigest()
        expected = (info.get("metadata") or {}).get("sha256")
        if expected and expected != digest:
            raise fail(
                f"document {document_id} of case {case_id} is corrupt: sha256 {digest}, "
                f"recorded {expected}; nothing written"
            )
        target = output or Path(Path(str(info.get("filename") or document_id)).name)
        if target.exists() and not force:
            raise fail(f"{target} exists; use --force to overwrite it")
        target.write_bytes(data)
        state = "verified" if expected else "no recorded sha256 to verify against"
        out().print(f"wrote {target} ({len(data)} bytes), sha256 {digest} ({state})")

    run(main())
