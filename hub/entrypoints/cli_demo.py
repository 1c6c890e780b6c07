"""``hubctl demo``: the whole flow in one process, watched live.

It starts a hub worker in-process (on the configured broker, database and namespace),
registers a demo partner network (profiles ``demo-*`` and their least-privilege AMQP
users, through the management API), writes a sample monthly batch (creditor
``flexspace``, batch ``demo-<timestamp>``) to a JSON Lines file and imports it like
``hubctl claims import``. Simulated partners, each connected as its own AMQP user (the
broker checks the ``user_id`` they publish under), accept or decline what they are
assigned and report calls, promises, payments and closures; the demo plays the creditor
too and takes its receipts from ``creditor.flexspace`` (acknowledging every message
there). A table refreshed twice a second shows the flow, read from MongoDB; when every
receipt is in and every case with a simulated partner is closed, a summary follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import aio_pika
import orjson
import typer
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from hub.bootstrap import Hub, start_hub
from hub.config import Settings
from hub.domain.model import WITH_PARTNER, Event, Lifecycle
from hub.entrypoints.cli_claims import WaitOutcome as Receipts
from hub.entrypoints.cli_claims import count_receipt, import_file
from hub.infra.rabbit_admin import BrokerAdminError, RabbitAdmin
from hub.infra.topology import Topology, declare_creditor, existing_queue
from hub.service import importer, simulation
from hub.service.simulation import DEMO_CREDITOR, DEMO_PARTNERS
from partner_sdk import messages as m

__all__ = ["DemoResult", "register", "run_demo"]

log = logging.getLogger(__name__)

REFRESH_S = 0.5
#: Lifecycles that still wait for something to happen.
_PENDING = frozenset({Lifecycle.NEW, Lifecycle.DECLINED}) | WITH_PARTNER
_ORDER = [lc.value for lc in Lifecycle]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


# --- simulated partners --------------------------------------------------------------------


@dataclass
class Activity:
    """What the simulated side has done so far."""

    sent: Counter[str] = field(default_factory=Counter)
    assignments: Counter[str] = field(default_factory=Counter)
    recalls: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class SimulatedPartner:
    """One partner firm: consumes ``partner.<id>`` as its own user and answers each
    ``case.assigned`` with the reports :func:`simulation.partner_steps` plans."""

    def __init__(
        self, partner_id: str, url: str, topo: Topology, seed: int, activity: Activity
    ) -> None:
        self.partner_id = partner_id
        self.url = url
        self.topology = topo
        self.seed = seed
        self.activity = activity
        self.cases: dict[str, asyncio.Task[None]] = {}
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.url)
        channel: AbstractChannel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=200)
        self._exchange = await channel.get_exchange(self.topology.partners_in, ensure=False)
        queue = await existing_queue(channel, self.topology.partner_queue(self.partner_id))
        await queue.consume(self._on_message)

    @property
    def busy(self) -> bool:
        return any(not t.done() for t in self.cases.values())

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        async with msg.process(requeue=False):
            if msg.type == m.CaseAssigned.TYPE:
                assigned = m.CaseAssigned.model_validate_json(msg.body)
                self.activity.assignments[self.partner_id] += 1
                old = self.cases.pop(assigned.case_id, None)
                if old is not None:
                    old.cancel()
                self.cases[assigned.case_id] = asyncio.create_task(
                    self._work(assigned), name=f"{self.partner_id}:{assigned.case_id}"
                )
            elif msg.type == m.CaseRecalled.TYPE:
                self.activity.recalls += 1
                body = orjson.loads(msg.body)
                task = self.cases.pop(str(body.get("case_id")), None)
                if task is not None:
                    task.cancel()
            elif msg.type == m.ErrorReply.TYPE:
                body = orjson.loads(msg.body)
                self.activity.errors[str(body.get("code"))] += 1

    async def _work(self, assigned: m.CaseAssigned) -> None:
        today = dt.datetime.now(dt.UTC).date()
        steps = simulation.partner_steps(assigned, seed=self.seed, today=today)
        for n, step in enumerate(steps, 1):
            await asyncio.sleep(step.delay)
            report = simulation.build_report(step, assigned.case_id, dt.datetime.now(dt.UTC))
            assert self._exchange is not None
            try:
                await self._exchange.publish(
                    aio_pika.Message(
                        report.to_json(),
                        content_type="application/json",
                        message_id=f"{self.partner_id}:{assigned.assignment_id}:{n}",
                        type=step.type,
                        user_id=self.partner_id,
                        correlation_id=assigned.case_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        timestamp=dt.datetime.now(dt.UTC),
                    ),
                    routing_key=f"{self.partner_id}.{step.type}",
                )
            except Exception as e:  # the demo goes on; the case will not settle
                log.warning(
                    "partner %s: %s on case %s failed: %r",
                    self.partner_id,
                    step.type,
                    assigned.case_id,
                    e,
                )
                return
            self.activity.sent[step.type] += 1

    async def stop(self) -> None:
        for task in self.cases.values():
            task.cancel()
        for task in self.cases.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()


class CreditorInbox:
    """The creditor's system: takes its receipts queue, counts this batch's receipts."""

    def __init__(self, settings: Settings, topo: Topology, batch_id: str) -> None:
        self.settings = settings
        self.topology = topo
        self.batch_id = batch_id
        self.receipts = Receipts()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await existing_queue(channel, self.topology.creditor_queue(DEMO_CREDITOR))
        await queue.consume(self._on_message)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        count_receipt(msg, self.batch_id, frozenset(), self.receipts)
        await msg.ack()

    async def stop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()


# --- reading the state ---------------------------------------------------------------------


@dataclass
class Snapshot:
    lifecycle: Counter[str] = field(default_factory=Counter)
    assigned: Counter[str] = field(default_factory=Counter)
    holding: Counter[str] = field(default_factory=Counter)
    applied: int = 0
    pending: int = 0
    placed: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    collected: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    close_codes: Counter[str] = field(default_factory=Counter)


async def snapshot(hub: Hub, case_ids: list[str], simulated: set[str]) -> Snapshot:
    """Counts over the demo's cases and their events, from MongoDB."""
    snap = Snapshot()
    db = hub.store.db
    for start in range(0, len(case_ids), 500):
        chunk = case_ids[start : start + 500]
        projection = {
            "lifecycle": 1,
            "partner_id": 1,
            "currency": 1,
            "total": 1,
            "collected": 1,
            "close_code": 1,
        }
        async for doc in db.cases.find({"_id": {"$in": chunk}}, projection):
            lifecycle = Lifecycle(doc["lifecycle"])
            snap.lifecycle[lifecycle.value] += 1
            if lifecycle in WITH_PARTNER and doc.get("partner_id"):
                snap.holding[doc["partner_id"]] += 1
            if lifecycle in _PENDING and (
                lifecycle not in WITH_PARTNER or doc.get("partner_id") in simulated
            ):
                snap.pending += 1
            snap.collected[doc["currency"]] += Decimal(doc.get("collected") or "0")
            if lifecycle is not Lifecycle.CLOSED or doc.get("close_code") != "withdrawn":
                snap.placed[doc["currency"]] += Decimal(doc.get("total") or "0")
            if doc.get("close_code"):
                snap.close_codes[doc["close_code"]] += 1
        events = db.events.find(
            {"case_id": {"$in": chunk}}, {"kind": 1, "actor": 1, "data.partner_id": 1}
        )
        async for ev in events:
            if ev["kind"] == "assigned":
                snap.assigned[(ev.get("data") or {}).get("partner_id", "?")] += 1
            if ev.get("actor") in simulated:
                snap.applied += 1
    return snap


def _counts(counter: Mapping[str, int], order: Iterable[str] | None = None) -> str:
    keys = list(order) if order is not None else sorted(counter)
    return "  ".join(f"{k} [bold]{counter[k]}[/]" for k in keys if counter.get(k))


def _money(amounts: Mapping[str, Decimal]) -> str:
    return "  ".join(f"{c} {a:,.2f}" for c, a in sorted(amounts.items()) if a) or "-"


@dataclass
class DemoResult:
    batch_id: str
    file: Path
    rows: int
    cases: list[str]
    settled: bool
    seconds: float
    receipts: Receipts
    snapshot: Snapshot
    activity: Activity
    published: int = 0
    confirmed: int = 0
    example: list[Event] = field(default_factory=list)
    example_case: str | None = None


def _live_table(
    *,
    rows: int,
    confirmed: int,
    receipts: Receipts,
    snap: Snapshot,
    activity: Activity,
    elapsed: float,
    cases: int,
) -> Table:
    table = Table(title=f"OneWindow demo — {elapsed:5.1f} s", show_header=False, expand=False)
    table.add_column("", style="bold cyan", no_wrap=True)
    table.add_column("")
    table.add_row("claims published", f"{confirmed} / {rows}")
    rec = receipts.reconciled
    table.add_row(
        "receipts",
        f"{receipts.receipts} / {rows}  "
        + _counts(receipts.statuses, [s.value for s in m.ReceiptStatus]),
    )
    table.add_row("batch reconciled", "yes" if rec else "not yet")
    table.add_row(f"cases ({cases})", _counts(snap.lifecycle, _ORDER))
    assigned = Table.grid(padding=(0, 2))
    for _ in range(3):
        assigned.add_column()
        assigned.add_column(justify="right")
    cells: list[str] = []
    for pid in sorted(snap.assigned):
        cells += [pid, f"{snap.assigned[pid]} ({snap.holding.get(pid, 0)} open)"]
    while cells:
        row, cells = cells[:6], cells[6:]
        assigned.add_row(*(row + [""] * (6 - len(row))))
    table.add_row("assignments", assigned)
    table.add_row(
        "partner updates",
        f"sent {sum(activity.sent.values())}  applied {snap.applied}  "
        f"refused {sum(activity.errors.values())}  recalls {activity.recalls}",
    )
    table.add_row("collected", _money(snap.collected))
    return table


# --- the demo --------------------------------------------------------------------------------


async def _provision(hub: Hub, settings: Settings) -> dict[str, str]:
    admin = RabbitAdmin.from_settings(settings)
    urls: dict[str, str] = {}
    for profile in DEMO_PARTNERS:
        await hub.partners.upsert(profile)
        urls[profile.partner_id] = await admin.provision_partner(
            profile.partner_id, secrets.token_urlsafe(18)
        )
    return urls


async def _example(hub: Hub, case_ids: list[str]) -> tuple[str | None, list[Event]]:
    """The closed, paid case with the longest history (else any with the longest)."""
    best: tuple[int, str] | None = None
    cursor = hub.store.db.cases.find(
        {"_id": {"$in": case_ids}, "lifecycle": "closed", "close_code": "paid"},
        {"version": 1},
    )
    async for doc in cursor:
        candidate = (int(doc.get("version", 0)), doc["_id"])
        if best is None or candidate > best:
            best = candidate
    if best is None:
        async for doc in hub.store.db.cases.find({"_id": {"$in": case_ids}}, {"version": 1}):
            candidate = (int(doc.get("version", 0)), doc["_id"])
            if best is None or candidate > best:
                best = candidate
    if best is None:
        return None, []
    return best[1], await hub.store.events(best[1])


async def run_demo(
    settings: Settings,
    *,
    claims: int = 300,
    countries: int = 25,
    seed: int = 7,
    duration: float = 60.0,
    console: Console | None = None,
    workdir: Path | None = None,
) -> DemoResult:
    """Run the demo; returns what happened. ``duration`` bounds the wait for settling."""
    console = console or Console()
    started_at = dt.datetime.now(dt.UTC)
    tag = started_at.strftime("%Y%m%dT%H%M%SZ")
    batch_id = f"demo-{tag}"
    directory = workdir or Path(tempfile.gettempdir()) / "onewindow-demo"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{batch_id}.jsonl"
    sample = simulation.generate_sample(
        claims, countries, seed, today=started_at.date(), tag=tag, creditor_id=DEMO_CREDITOR
    )
    with path.open("wb") as f:
        for row in sample:
            f.write(row.jsonl() + b"\n")
    batch = importer.open_batch(path, "jsonl", batch_id)
    cases, _ = importer.group_cases(importer.read_rows(batch, creditor_id=DEMO_CREDITOR))
    case_ids = list(cases)

    console.print(
        f"[bold]starting the hub[/] (namespace {settings.namespace or '-'}, "
        f"database {settings.mongo_db})"
    )
    hub = await start_hub(settings)
    activity = Activity()
    partners: list[SimulatedPartner] = []
    inbox = CreditorInbox(settings, hub.topology, batch_id)
    confirmed = 0
    result: DemoResult | None = None
    try:
        async with hub.connection.channel() as ch:
            await declare_creditor(ch, hub.topology, DEMO_CREDITOR)
        console.print(f"registering {len(DEMO_PARTNERS)} demo partners and their AMQP users")
        urls = await _provision(hub, settings)
        for pid, url in urls.items():
            partner = SimulatedPartner(pid, url, hub.topology, seed, activity)
            await partner.start()
            partners.append(partner)
        await inbox.start()
        simulated = set(urls)
        console.print(f"publishing {batch.rows} claims from {path} (batch {batch_id})")

        def on_confirmed(n: int) -> None:
            nonlocal confirmed
            confirmed += n

        started = time.monotonic()
        publishing = asyncio.create_task(
            import_file(
                settings,
                path,
                fmt="jsonl",
                batch_id=batch_id,
                creditor_id=DEMO_CREDITOR,
                on_confirmed=on_confirmed,
                check_previous=False,
            )
        )
        settled = False
        snap = Snapshot()
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(REFRESH_S)
                snap = await snapshot(hub, case_ids, simulated)
                elapsed = time.monotonic() - started
                live.update(
                    _live_table(
                        rows=batch.rows,
                        confirmed=confirmed,
                        receipts=inbox.receipts,
                        snap=snap,
                        activity=activity,
                        elapsed=elapsed,
                        cases=len(case_ids),
                    ),
                    refresh=True,
                )
                failure = publishing.exception() if publishing.done() else None
                if failure is not None:
                    raise failure
                settled = (
                    publishing.done()
                    and inbox.receipts.reconciled is not None
                    and snap.pending == 0
                    and not any(p.busy for p in partners)
                )
                if settled or elapsed > duration:
                    break
        console.print()
        outcome = await publishing if publishing.done() else None
        if outcome is None:
            publishing.cancel()
        await asyncio.sleep(REFRESH_S)
        snap = await snapshot(hub, case_ids, simulated)
        example_case, example = await _example(hub, case_ids)
        result = DemoResult(
            batch_id=batch_id,
            file=path,
            rows=batch.rows,
            cases=case_ids,
            settled=settled,
            seconds=time.monotonic() - started,
            receipts=inbox.receipts,
            snapshot=snap,
            activity=activity,
            published=outcome.stats.published if outcome else 0,
            confirmed=confirmed,
            example=example,
            example_case=example_case,
        )
    finally:
        for partner in partners:
            await partner.stop()
        await inbox.stop()
        await hub.close()
    assert result is not None
    return result


# --- the summary -----------------------------------------------------------------------------


def _describe(event: Event) -> str:
    d = dict(event.data)
    if "claim" in d:
        c = d["claim"]
        total = Decimal(c["principal"]) + Decimal(c["interest"]) + Decimal(c["fees"])
        return f"invoice {c['invoice_number']} {total:,.2f}"
    keys = (
        "partner_id",
        "reason",
        "kind",
        "outcome",
        "amount",
        "currency",
        "due_date",
        "close_code",
        "note",
        "invoice_number",
    )
    return ", ".join(f"{k}={d[k]}" for k in keys if d.get(k) not in (None, ""))[:90]


def print_summary(console: Console, r: DemoResult) -> None:
    s = r.snapshot
    rec = r.receipts.reconciled or {}
    receipts = Table(title="receipts by status")
    receipts.add_column("status")
    receipts.add_column("received", justify="right")
    receipts.add_column("batch.reconciled", justify="right")
    for status in m.ReceiptStatus:
        receipts.add_row(
            status.value,
            str(r.receipts.statuses.get(status.value, 0)),
            str(rec.get(status.value, "-")),
        )
    receipts.add_row("[bold]total[/]", str(r.receipts.receipts), str(rec.get("received", "-")))

    cases = Table(title=f"{len(r.cases)} cases by lifecycle")
    cases.add_column("lifecycle")
    cases.add_column("cases", justify="right")
    for lc in _ORDER:
        if s.lifecycle.get(lc):
            cases.add_row(lc, str(s.lifecycle[lc]))
    for code, n in sorted(s.close_codes.items()):
        cases.add_row(f"  closed {code}", str(n))

    money = Table(title="amounts per currency")
    money.add_column("currency")
    money.add_column("placed", justify="right")
    money.add_column("collected", justify="right")
    money.add_column("rate", justify="right")
    for currency in sorted(s.placed):
        placed, got = s.placed[currency], s.collected.get(currency, Decimal(0))
        rate = f"{got / placed:.0%}" if placed else "-"
        money.add_row(currency, f"{placed:,.2f}", f"{got:,.2f}", rate)

    partners = Table(title="assignments per partner")
    partners.add_column("partner")
    partners.add_column("assigned", justify="right")
    for pid, n in sorted(s.assigned.items()):
        partners.add_row(pid, str(n))
    unassigned = s.lifecycle.get(Lifecycle.UNASSIGNED.value, 0)
    partners.add_row("[yellow]unassigned[/]", str(unassigned))

    console.print(Group(receipts, cases, money, partners))
    if r.example_case:
        timeline = Table(title=f"case {r.example_case}: its events")
        for name in ("#", "recorded", "occurred", "event", "by", "what"):
            timeline.add_column(name)
        for e in r.example:
            timeline.add_row(
                str(e.seq),
                e.recorded_at.strftime("%H:%M:%S.%f")[:-3],
                e.occurred_at.strftime("%H:%M:%S.%f")[:-3],
                e.kind.value,
                e.actor,
                _describe(e),
            )
        console.print(timeline)
    verdict = "[green]settled[/]" if r.settled else "[red]did not settle in time[/]"
    console.print(
        f"{verdict}: {r.confirmed} claims published, {r.receipts.receipts} receipts, "
        f"{s.applied} partner updates applied, in {r.seconds:.1f} s"
    )
    console.print("\n[bold]explore further[/]")
    if r.example_case:
        console.print(f"  hubctl cases show {r.example_case}")
    console.print("  hubctl cases list --status unassigned")
    console.print(f"  hubctl route --dry-run {r.file}")
    console.print(
        f"  hubctl run & hubctl claims import {r.file} --batch-id {r.batch_id} --wait"
        "   # again: changes nothing"
    )


def demo(
    claims: Annotated[int, typer.Option(min=1, max=100_000, help="claims in the batch")] = 300,
    countries: Annotated[
        int, typer.Option(min=1, max=len(simulation.COUNTRIES), help="debtor countries")
    ] = 25,
    seed: Annotated[int, typer.Option(help="the same seed tells the same story")] = 7,
    duration: Annotated[
        float, typer.Option(help="seconds to wait at most for everything to settle")
    ] = 60.0,
) -> None:
    """Run the whole flow in one process and watch it live, then a summary.

    Claims in, receipts back, cases routed to simulated partner firms, their updates
    applied; on the configured broker and database (demo data: creditor flexspace,
    batch demo-<timestamp>, partners demo-*)."""
    settings = Settings()
    console = Console(highlight=False)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(name)s %(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    try:
        result = asyncio.run(
            run_demo(
                settings,
                claims=claims,
                countries=countries,
                seed=seed,
                duration=duration,
                console=console,
            )
        )
    except BrokerAdminError as e:
        console.print(
            f"[bold red]error:[/] the RabbitMQ management API is needed to create the demo "
            f"partners' users ({settings.amqp_management_url.split('@')[-1]}): {e}"
        )
        raise typer.Exit(1) from e
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as e:
        console.print(
            f"[bold red]error:[/] cannot reach the services ({e}); run scripts/services up"
        )
        raise typer.Exit(1) from e
    print_summary(console, result)
    raise typer.Exit(0 if result.settled else 1)
