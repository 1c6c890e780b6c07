"""``hubctl report`` against a hub carrying real traffic: the report's figures equal the
figures this test works out on its own from the raw events in MongoDB."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from hub.bootstrap import Hub
from hub.config import Settings
from hub.domain.model import Lifecycle
from hub.entrypoints.cli_web import register
from hub.service.coordinator import Coordinator
from partner_sdk import messages as m
from tests.conftest import PartnerFactory
from tests.traffic import PartnerClient, now, place_claim, wait_case, wait_events

pytestmark = pytest.mark.services

L = Lifecycle


async def traffic(hub: Hub, partner: PartnerFactory) -> dict[str, str]:
    """Cases in two currencies and four countries, worked by two partners."""
    pde, pgb = await partner(["DE"]), await partner(["GB"])
    de, gb = PartnerClient(hub, pde), PartnerClient(hub, pgb)
    a = await place_claim(hub, 1, debtor=1, country="DE")
    await wait_case(hub, a, L.ASSIGNED)
    assert await place_claim(hub, 2, debtor=1, country="DE", principal="500.00") == a
    b = await place_claim(hub, 3, country="DE", principal="2000.00")
    c = await place_claim(hub, 4, country="GB", currency="GBP", principal="800.00")
    d = await place_claim(hub, 5, country="PL")
    e = await place_claim(hub, 6, country="DE")
    await wait_case(hub, d, L.UNASSIGNED)
    for case in (b, c, e):
        await wait_case(hub, case, L.ASSIGNED)
    await wait_events(hub, a, 3)  # added, assigned, second claim

    due = (now() + dt.timedelta(days=30)).date().isoformat()
    await de.report(m.CaseAccepted, a)
    await de.report(m.CaseActivity, a, kind="call", outcome="right_party_contact")
    await de.report(m.CaseActivity, a, kind="letter", outcome="sent")
    await de.report(m.CasePromise, a, amount="500.00", currency="EUR", due_date=due)
    await wait_events(hub, a, 7)
    await de.report(m.CasePayment, a, amount="500.00", currency="EUR")
    await de.report(m.CaseAccepted, b)
    await de.report(m.CaseActivity, b, kind="call", outcome="no_contact")
    await de.report(m.CasePayment, b, amount="2052.50", currency="EUR")
    await wait_events(hub, b, 5)
    await de.report(m.CaseClosed, b, close_code="paid")
    await de.report(m.CaseDeclined, e, reason="conflict of interest")
    await gb.report(m.CaseAccepted, c)
    await gb.report(m.SettlementProposed, c, settlement_id="S1", amount="400.00", currency="GBP")
    await wait_events(hub, c, 4)
    out = await Coordinator(hub.store, hub.partners).decide_settlement(
        c, "S1", approved=True, decided_by="kam-anna"
    )
    await hub.store.mark_sent(await hub.publisher.publish(out))
    await gb.report(m.CasePayment, c, amount="400.00", currency="GBP")
    await wait_events(hub, c, 6)
    await gb.report(m.CaseClosed, c, close_code="settled")
    await wait_case(hub, b, L.CLOSED)
    await wait_case(hub, c, L.CLOSED)
    await wait_events(hub, a, 8)
    await wait_case(hub, e, L.UNASSIGNED)  # the only DE partner declined it
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "pde": pde, "pgb": pgb}


def q(v: Decimal) -> str:
    return str(v.quantize(Decimal("0.0001"), ROUND_HALF_EVEN))


async def independent(hub: Hub) -> dict[tuple[str, str, str, str], str]:
    """The report's key figures from the raw event documents, without the KPI code."""
    cases: dict[str, dict[str, Any]] = {}
    async for e in hub.store.db.events.find({}).sort([("case_id", 1), ("seq", 1)]):
        c = cases.setdefault(
            e["case_id"],
            {"claims": {}, "paid": Decimal(0), "assigned": [], "last_answer": None},
        )
        d, kind = e["data"], e["kind"]
        if "case" in d:
            c.update(currency=d["case"]["currency"], country=d["case"]["country"])
            c["entity"] = d["case"]["creditor_entity"]
            c["month"] = e["occurred_at"].strftime("%Y-%m")
        if kind in ("claim_added", "claim_amended"):
            c["claims"][d["claim"]["invoice_number"]] = d["claim"]
        elif kind == "payment":
            c["paid"] += Decimal(d["amount"])
            c.setdefault("paid_by", defaultdict(Decimal))[e["actor"]] += Decimal(d["amount"])
        elif kind == "assigned":
            c["assigned"].append([d["partner_id"], total(c), d["accept_by"], None])
        elif kind in ("accepted", "declined"):
            c["assigned"][-1][3] = e["occurred_at"]
    fig: dict[tuple[str, str, str, str], str] = {}
    placed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    paid: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for c in cases.values():
        for key in ("all", c["country"], c["entity"], c["month"]):
            placed[(key, c["currency"])] += total(c)
            paid[(key, c["currency"])] += c["paid"]
    for (key, cur), amount in placed.items():
        section = "summary" if key == "all" else None
        if section:
            fig[("summary", "", cur, "placed")] = str(amount)
            fig[("summary", "", cur, "collected")] = str(paid[(key, cur)])
            fig[("summary", "", cur, "recovery_rate")] = q(paid[(key, cur)] / amount)
    for c in cases.values():
        for section, key in (("country", c["country"]), ("entity", c["entity"])):
            fig[(section, key, c["currency"], "placed")] = str(placed[(key, c["currency"])])
            fig[(section, key, c["currency"], "collected")] = str(paid[(key, c["currency"])])
        fig[("vintage", c["month"], c["currency"], "placed")] = str(
            placed[(c["month"], c["currency"])]
        )
    partner_placed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    partner_paid: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    sla: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in cases.values():
        for pid, amount, accept_by, answered in c["assigned"]:
            partner_placed[(pid, c["currency"])] += amount
            if answered is not None:
                sla[pid][1] += 1
                sla[pid][0] += int(answered <= accept_by)
        for pid, amount in c.get("paid_by", {}).items():
            partner_paid[(pid, c["currency"])] += amount
    for (pid, cur), amount in partner_placed.items():
        fig[("league", pid, cur, "placed")] = str(amount)
        fig[("league", pid, cur, "collected")] = str(partner_paid[(pid, cur)])
        fig[("league", pid, cur, "sla_met")] = str(sla[pid][0])
        fig[("league", pid, cur, "sla_due")] = str(sla[pid][1])
    async for doc in await hub.store.db.cases.aggregate(
        [{"$group": {"_id": "$lifecycle", "n": {"$sum": 1}}}]
    ):
        fig[("lifecycle", doc["_id"], "", "cases")] = str(doc["n"])
    return fig


def total(c: dict[str, Any]) -> Decimal:
    return sum(
        (
            Decimal(x["principal"]) + Decimal(x["interest"]) + Decimal(x["fees"])
            for x in c["claims"].values()
            if not x.get("withdrawn")
        ),
        Decimal(0),
    )


def run_report(settings: Settings, *args: str) -> str:
    app = typer.Typer()
    register(app)
    env = {
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_MONGO_URL": settings.mongo_url,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, ["report", *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


async def test_report_figures_equal_the_raw_events(
    hub: Hub, partner: PartnerFactory, settings: Settings, tmp_path: Path
) -> None:
    ids = await traffic(hub, partner)
    month = now().strftime("%Y-%m")
    expected = await independent(hub)

    out = tmp_path / "report.csv"
    shown = await asyncio.to_thread(
        run_report, settings, "--month", month, "--format", "csv", "-o", str(out)
    )
    assert "EUR" in shown and "GBP" in shown
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    got = {(r["section"], r["group"], r["currency"], r["metric"]): r["value"] for r in rows}
    missing = {k: v for k, v in expected.items() if got.get(k) != v}
    assert not missing, {k: (v, got.get(k)) for k, v in missing.items()}

    # hand-checked too: what the story above must come to
    eur_placed = Decimal("1605.00") + Decimal("2052.50") + Decimal("1052.50") * 2
    assert got["summary", "", "EUR", "placed"] == str(eur_placed)  # D (PL) is EUR as well
    assert got["summary", "", "EUR", "collected"] == "2552.50"
    assert got["summary", "", "GBP", "collected"] == "400.00"
    assert got["summary", "", "", "cases"] == "5"
    assert got["summary", "", "", "right_party_contact_rate"] == "0.5000"  # 1 of 2 calls
    assert got["summary", "", "", "promise_kept_rate"] == "1.0000"
    assert got["summary", "", "GBP", "settlement_discount"] == q(
        (Decimal("852.50") - 400) / Decimal("852.50")
    )
    assert got["lifecycle", "closed", "", "cases"] == "2"
    assert got["lifecycle", "unassigned", "", "cases"] == "2"
    assert got["league", ids["pde"], "EUR", "sla_met"] == "3"  # A, B accepted; E declined
    assert got["league", ids["pgb"], "GBP", "sla_rate"] == "1.0000"

    # the other formats carry the same figures
    xlsx = tmp_path / "report.xlsx"
    await asyncio.to_thread(run_report, settings, "--month", month, "-o", str(xlsx))
    book = openpyxl.load_workbook(xlsx)
    summary = {
        (str(r[0]), str(r[1] or "")): r[2]
        for r in book["summary"].iter_rows(min_row=4, values_only=True)
    }
    assert Decimal(str(summary["placed", "EUR"])) == eur_placed
    assert Decimal(str(summary["collected", "GBP"])) == Decimal(400)
    assert {"vintage", "league", "ageing", "curves_chart"} <= set(book.sheetnames)
    assert book["vintage"]._charts and book["curves_chart"]._charts

    html = tmp_path / "report.html"
    await asyncio.to_thread(
        run_report, settings, "--month", month, "--format", "html", "-o", str(html)
    )
    page = html.read_text()
    assert "Partner league table" in page and page.count("<svg") >= 4
    assert ids["pde"] in page and str(eur_placed) in page

    pdf = tmp_path / "report.pdf"
    await asyncio.to_thread(
        run_report, settings, "--month", month, "--format", "pdf", "-o", str(pdf)
    )
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5000


async def test_report_of_an_earlier_month_is_empty_and_bad_options_are_refused(
    hub: Hub, settings: Settings, tmp_path: Path
) -> None:
    await place_claim(hub, 1, country="PL")
    out = tmp_path / "old.csv"
    await asyncio.to_thread(
        run_report, settings, "--month", "2020-01", "--format", "csv", "-o", str(out)
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["metric"]: r["value"] for r in rows if r["section"] == "summary"}["cases"] == "0"
    app = typer.Typer()
    register(app)
    bad = CliRunner().invoke(app, ["report", "--month", "2026-13"])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output
    bad = CliRunner().invoke(app, ["report", "--format", "docx"])
    assert bad.exit_code == 2 and "xlsx" in bad.output
