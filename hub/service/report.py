"""The creditor's monthly report: the KPIs of ``hub.service.kpi`` as tables and charts,
written as CSV, XLSX, HTML or PDF.

The report of month ``YYYY-MM`` is the hub's knowledge at the end of that month (events
recorded before the first instant of the next month, or now for the running month), so
the same month's report rebuilt later comes out the same. The same tables and charts
back the dashboard's KPI page.

CSV is tidy (one figure a line: ``section,group,currency,metric,value``) so that a
spreadsheet or a script can pivot it; XLSX has one sheet per table with native charts;
HTML is one self-contained page with inline SVG charts; PDF has the same tables and
charts (fpdf2, pure Python).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hub.domain.model import Event
from hub.service import charts
from hub.service.kpi import CaseFacts, Kpis, case_facts, compute, month_bounds

__all__ = [
    "FORMATS",
    "Table",
    "build",
    "charts_of",
    "load_facts",
    "render",
    "report_as_of",
    "tables_of",
    "to_csv",
    "to_html",
    "to_pdf",
    "to_xlsx",
]

FORMATS = ("xlsx", "csv", "html", "pdf")
Cell = str | int | Decimal | None


# --- loading ---------------------------------------------------------------------------------


async def _case_events(db: Any, as_of: dt.datetime) -> AsyncIterator[list[Event]]:
    """Each case's events recorded up to ``as_of``, case by case, in ``seq`` order."""
    from hub.infra.mongo import event_from_doc  # the service layer does not import PyMongo

    cursor = db.events.find({"recorded_at": {"$lte": as_of}}).sort([("case_id", 1), ("seq", 1)])
    current: list[Event] = []
    async for doc in cursor:
        event = event_from_doc(doc)
        if current and current[0].case_id != event.case_id:
            yield current
            current = []
        current.append(event)
    if current:
        yield current


async def load_facts(db: Any, as_of: dt.datetime) -> list[CaseFacts]:
    """The facts of every case as the hub knew them at ``as_of``."""
    out = []
    async for events in _case_events(db, as_of):
        facts = case_facts(events, as_of)
        if facts is not None:
            out.append(facts)
    return out


def report_as_of(month: str, now: dt.datetime) -> dt.datetime:
    """The moment a month's report describes: the end of the month, or now if earlier.
    Events are taken up to and including this instant."""
    _, end = month_bounds(month)
    return min(now, end - dt.timedelta(microseconds=1))


async def build(db: Any, month: str | None = None, *, now: dt.datetime | None = None) -> Kpis:
    """The KPIs of ``month`` (default: the running month) from the store ``db``."""
    now = now or dt.datetime.now(dt.UTC)
    month = month or now.strftime("%Y-%m")
    as_of = report_as_of(month, now)
    return compute(await load_facts(db, as_of), as_of=as_of, month=month)


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One table of the report. ``group`` and ``currency`` name the columns that identify
    a row (for the tidy CSV); the other columns are figures. Columns ending in ``rate``
    or ``discount`` are fractions (shown as percentages)."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[Cell, ...]]
    group: tuple[str, ...] = ()
    currency: str | None = "currency"
    notes: str = ""

    def is_rate(self, column: str) -> bool:
        return column.endswith(("rate", "discount"))


@dataclass(frozen=True)
class _Summary:
    rows: list[tuple[Cell, ...]] = field(default_factory=list)

    def add(self, metric: str, currency: str | None, value: Cell) -> None:
        self.rows.append((metric, currency or "", value))


def tables_of(k: Kpis) -> list[Table]:
    s = _Summary()
    s.add("as_of", None, k.as_of.isoformat())
    s.add("month", None, k.month or "")
    s.add("cases", None, k.cases)
    for r in k.totals:
        s.add("placed", r.currency, r.placed)
        s.add("collected", r.currency, r.collected)
        s.add("recovery_rate", r.currency, r.rate)
    for r in k.month_placed:
        s.add("placed_in_month_cases", r.currency, r.cases)
        s.add("placed_in_month", r.currency, r.placed)
    for cur, amount in k.month_collected.items():
        s.add("collected_in_month", cur, amount)
    s.add("sla_compliance_rate", None, k.sla.rate)
    s.add("right_party_contact_rate", None, k.rpc.rate)
    s.add("promise_kept_rate", None, k.promises.rate)
    s.add("average_days_to_collect", None, k.days_to_collect)
    for st in k.settlements:
        s.add("settlement_discount", st.currency, st.discount)

    def amounts(name: str, title: str, key: str, rows: Iterable[Any]) -> Table:
        return Table(
            name,
            title,
            (key, "currency", "cases", "placed", "collected", "recovery_rate"),
            [(r.key, r.currency, r.cases, r.placed, r.collected, r.rate) for r in rows],
            group=(key,),
        )

    curves = [
        (c.month, c.currency, i, c.placed, collected, c.rates[i])
        for c in k.vintage_curves
        for i, collected in enumerate(c.collected)
    ]
    league = []
    for p in k.league:
        for cur in sorted(p.placed.keys() | p.collected.keys()):
            league.append(
                (
                    p.partner_id,
                    cur,
                    p.cases,
                    p.placed.get(cur, Decimal(0)),
                    p.collected.get(cur, Decimal(0)),
                    p.recovery(cur),
                    p.sla.part,
                    p.sla.whole,
                    p.sla.rate,
                    p.first_action_hours,
                    p.rpc.part,
                    p.rpc.whole,
                    p.rpc.rate,
                    p.promises.part,
                    p.promises.whole,
                    p.promises.rate,
                )
            )
    return [
        Table(
            "summary",
            "Summary",
            ("metric", "currency", "value"),
            s.rows,
            group=("metric",),
            notes="Amounts are per currency, never added across currencies.",
        ),
        amounts("vintage", "Recovery by placement month (vintage)", "month", k.by_vintage),
        Table(
            "vintage_curves",
            "Vintage curves: cumulative recovery by months after placement",
            ("month", "currency", "months_after", "placed", "collected", "recovery_rate"),
            curves,
            group=("month", "months_after"),
        ),
        amounts("country", "Recovery by country", "country", k.by_country),
        amounts("entity", "Recovery by creditor entity", "entity", k.by_entity),
        Table(
            "league",
            "Partner league table",
            (
                "partner",
                "currency",
                "cases",
                "placed",
                "collected",
                "recovery_rate",
                "sla_met",
                "sla_due",
                "sla_rate",
                "first_action_hours",
                "rpc",
                "contact_attempts",
                "rpc_rate",
                "promises_kept",
                "promises_due",
                "promise_kept_rate",
            ),
            league,
            group=("partner",),
            notes="Placed: case totals at each assignment; collected: payments the partner "
            "reported. SLA: answered by accept_by, of assignments answered or overdue.",
        ),
        Table(
            "lifecycle",
            "Cases by lifecycle",
            ("lifecycle", "cases"),
            list(k.lifecycle.items()),
            group=("lifecycle",),
            currency=None,
        ),
        Table(
            "phase",
            "Cases by phase",
            ("phase", "cases"),
            list(k.phase.items()),
            group=("phase",),
            currency=None,
        ),
        Table(
            "status_by_country",
            "Cases by country and lifecycle",
            ("country", "lifecycle", "cases"),
            [(c, lc, n) for c, inner in k.status_by_country.items() for lc, n in inner.items()],
            group=("country", "lifecycle"),
            currency=None,
        ),
        Table(
            "ageing",
            "Open cases by age (days since placement)",
            ("bucket", "currency", "cases", "outstanding"),
            [(r.bucket, r.currency, r.cases, r.outstanding) for r in k.ageing],
            group=("bucket",),
        ),
        Table(
            "settlements",
            "Approved settlements",
            ("currency", "approved", "outstanding", "settled", "discount"),
            [(r.currency, r.approved, r.outstanding, r.settled, r.discount) for r in k.settlements],
        ),
    ]


def charts_of(k: Kpis) -> dict[str, str]:
    """The report's charts as SVG text, by name."""
    curves = {
        f"{c.month} {c.currency}": [float(r) if r is not None else None for r in c.rates]
        for c in k.vintage_curves
    }
    vintage = {f"{r.key} {r.currency}": float(r.rate or 0) for r in k.by_vintage if r.placed}
    return {
        "vintage_curves": charts.line_chart(
            curves, title="Recovery by placement month", x_label="months after placement"
        ),
        "vintage": charts.bar_chart(vintage, title="Recovery rate by vintage", percent=True),
        "lifecycle": charts.bar_chart(dict(k.lifecycle), title="Cases by lifecycle"),
        "status_by_country": charts.stacked_bars(
            k.status_by_country, title="Cases by country and lifecycle"
        ),
        "ageing": charts.stacked_bars(
            {r.bucket: {r.currency: r.cases} for r in k.ageing}
            if len({r.currency for r in k.ageing}) <= 1
            else _ageing_by_currency(k),
            title="Open cases by age (days)",
        ),
    }


def _ageing_by_currency(k: Kpis) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in k.ageing:
        out.setdefault(r.bucket, {})[r.currency] = r.cases
    return out


# --- formats ---------------------------------------------------------------------------------


def _text(value: Cell, *, is_rate: bool = False) -> str:
    if value is None:
        return ""
    if is_rate and isinstance(value, Decimal):
        return f"{value * 100:.2f}%"
    return str(value)


def to_csv(k: Kpis) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("section", "group", "currency", "metric", "value"))
    for t in tables_of(k):
        keys = set(t.group) | ({t.currency} if t.currency else set())
        for row in t.rows:
            values = dict(zip(t.columns, row, strict=True))
            group = "/".join(str(values[g]) for g in t.group)
            currency = str(values[t.currency]) if t.currency else ""
            if t.name == "summary":
                w.writerow((t.name, "", currency, values["metric"], _text(values["value"])))
                continue
            for col in t.columns:
                if col not in keys:
                    w.writerow((t.name, group, currency, col, _text(values[col])))
    return out.getvalue().encode()


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hub", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = _text
    return env


def kpis_fragment(k: Kpis) -> str:
    """The KPI tables and charts as an HTML fragment (the dashboard embeds it)."""
    import markupsafe

    return str(
        _environment()
        .get_template("kpis.html")
        .render(
            k=k,
            tables=tables_of(k),
            charts={n: markupsafe.Markup(svg) for n, svg in charts_of(k).items()},
        )
    )


def to_html(k: Kpis, *, title: str = "OneWindow: creditor report") -> bytes:
    import markupsafe

    html = (
        _environment()
        .get_template("report.html")
        .render(k=k, title=title, body=markupsafe.Markup(kpis_fragment(k)))
    )
    return str(html).encode()


def to_xlsx(k: Kpis) -> bytes:
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, LineChart, Reference
    from openpyxl.styles import Font

    wb = Workbook()
    if wb.active is not None:
        wb.remove(wb.active)
    sheets = {}
    for t in tables_of(k):
        ws = wb.create_sheet(t.name[:31])
        sheets[t.name] = ws
        ws.append([t.title])
        ws["A1"].font = Font(bold=True, size=13)
        if t.notes:
            ws.append([t.notes])
        ws.append(list(t.columns))
        for cell in ws[ws.max_row]:
            cell.font = Font(bold=True)
        for row in t.rows:
            ws.append([_xlsx_value(v) for v in row])
            for col, cell in zip(t.columns, ws[ws.max_row], strict=True):
                if t.is_rate(col) or (t.name == "summary" and str(row[0]).endswith("rate")):
                    cell.number_format = "0.00%"
        for i, col in enumerate(t.columns, start=1):
            ws.column_dimensions[ws.cell(row=1, column=i).column_letter].width = max(
                12, len(col) + 2
            )
    _xlsx_bar(sheets["vintage"], BarChart, Reference, "Recovery rate by vintage", value_col=6)
    _xlsx_bar(sheets["lifecycle"], BarChart, Reference, "Cases by lifecycle", value_col=2)
    if k.vintage_curves:
        ws = wb.create_sheet("curves_chart")
        width = max(len(c.collected) for c in k.vintage_curves)
        ws.append(["months_after", *(f"{c.month} {c.currency}" for c in k.vintage_curves)])
        for i in range(width):
            points = [c.rates[i] if i < len(c.rates) else None for c in k.vintage_curves]
            ws.append([i, *(None if p is None else float(p) for p in points)])
        chart = LineChart()
        chart.title = "Recovery by placement month"
        chart.x_axis.title = "months after placement"
        chart.y_axis.number_format = "0%"
        data = Reference(
            ws, min_col=2, max_col=1 + len(k.vintage_curves), min_row=1, max_row=1 + width
        )
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=1 + width))
        ws.add_chart(chart, "H2")
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _xlsx_value(v: Cell) -> Any:
    return v  # openpyxl writes Decimal as a number and None as an empty cell


def _xlsx_bar(ws: Any, bar: Any, ref: Any, title: str, *, value_col: int) -> None:
    header = next(r for r in range(1, ws.max_row + 1) if ws.cell(row=r, column=2).value)
    if ws.max_row <= header:
        return
    chart = bar()
    chart.title = title
    chart.add_data(
        ref(ws, min_col=value_col, min_row=header, max_row=ws.max_row), titles_from_data=True
    )
    chart.set_categories(ref(ws, min_col=1, min_row=header + 1, max_row=ws.max_row))
    ws.add_chart(chart, f"{ws.cell(row=1, column=len(list(ws.columns)) + 2).column_letter}2")


_SVG_TITLE = re.compile(r"<title>.*?</title>", re.S)


def to_pdf(k: Kpis, *, title: str = "OneWindow: creditor report") -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=9)
    pdf.cell(
        0,
        6,
        _latin1(f"Month {k.month or '-'}; as of {k.as_of.isoformat(timespec='seconds')}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    svgs = charts_of(k)
    x0, y0 = pdf.get_x(), pdf.get_y()
    for i, name in enumerate(("vintage_curves", "vintage", "lifecycle", "status_by_country")):
        svg = _SVG_TITLE.sub("", svgs[name]).encode()
        pdf.image(io.BytesIO(svg), x=x0 + (i % 2) * 135, y=y0 + (i // 2) * 64, w=130)
    pdf.set_y(y0 + 2 * 64 + 4)
    for t in tables_of(k):
        pdf.set_font("helvetica", "B", 11)
        if pdf.get_y() > 170:
            pdf.add_page()
        pdf.cell(0, 8, _latin1(t.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=7)
        if not t.rows:
            pdf.cell(0, 5, "none", new_x="LMARGIN", new_y="NEXT")
            continue
        with pdf.table(
            headings_style=FontFace(emphasis="BOLD", fill_color=(226, 232, 240)),
            line_height=4,
            text_align="LEFT",
        ) as table:
            heading = table.row()
            for col in t.columns:
                heading.cell(_latin1(col.replace("_", " ")))
            for row in t.rows:
                r = table.row()
                for col, value in zip(t.columns, row, strict=True):
                    r.cell(_latin1(_text(value, is_rate=t.is_rate(col) or _summary_rate(t, row))))
        pdf.ln(3)
    return bytes(pdf.output())


def _summary_rate(t: Table, row: Sequence[Cell]) -> bool:
    return t.name == "summary" and str(row[0]).endswith(("rate", "discount"))


def _latin1(text: str) -> str:
    """The PDF core fonts speak Latin-1 only."""
    return text.encode("latin-1", "replace").decode("latin-1")


RENDERERS: dict[str, Callable[[Kpis], bytes]] = {
    "csv": to_csv,
    "xlsx": to_xlsx,
    "html": to_html,
    "pdf": to_pdf,
}


def render(k: Kpis, fmt: str) -> bytes:
    try:
        return RENDERERS[fmt](k)
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}") from None
