"""``hubctl dashboard``, ``hubctl report`` and ``hubctl docs asyncapi|openapi``.

- ``dashboard`` serves the coordinator's web dashboard (FastAPI on uvicorn).
- ``report --month YYYY-MM --format xlsx|csv|html|pdf -o FILE`` writes the creditor's
  report of a month: the hub's knowledge at the end of that month (or now).
- ``docs asyncapi`` prints the AsyncAPI document of the AMQP contract; ``docs openapi``
  the OpenAPI document of the dashboard's HTTP API. They join the ``docs`` group of
  ``cli_cases`` (case documents) when it is registered, else form their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.config import Settings

__all__ = ["register"]

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _console() -> Console:
    return Console(highlight=False)


def dashboard(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
) -> None:
    """Serve the coordinator's dashboard: flows, exceptions, cases, KPIs, /metrics."""
    import uvicorn

    from hub.entrypoints.web import DashboardSettings, create_app
    from hub.infra.observability import setup_logging

    settings = DashboardSettings()
    setup_logging(settings.log_level, json_logs=True)
    if not settings.dashboard_password and not settings.dashboard_dev:
        _console().print(
            "[red]set ONEWINDOW_DASHBOARD_PASSWORD (or ONEWINDOW_DASHBOARD_DEV=1 for "
            "anonymous access from localhost)[/]"
        )
        raise typer.Exit(2)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


def report(
    month: Annotated[str | None, typer.Option(help="YYYY-MM; default: the running month.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="xlsx, csv, html or pdf.")] = "xlsx",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (- for stdout).")
    ] = None,
) -> None:
    """Write the creditor's report of a month with its KPIs and charts."""
    from hub.infra import mongo
    from hub.service import report as rep

    if fmt not in rep.FORMATS:
        _console().print(f"[red]--format must be one of {', '.join(rep.FORMATS)}[/]")
        raise typer.Exit(2)
    now = dt.datetime.now(dt.UTC)
    month = month or now.strftime("%Y-%m")
    if not _MONTH.match(month):
        _console().print(f"[red]--month must be YYYY-MM, not {month!r}[/]")
        raise typer.Exit(2)
    settings = Settings()

    async def main() -> bytes:
        client = mongo.connect(settings.mongo_url)
        try:
            kpis = await rep.build(client[settings.mongo_db], month, now=now)
        finally:
            await client.close()
        summarize(kpis)
        return rep.render(kpis, fmt)

    data = asyncio.run(main())
    target = output or Path(f"report-{month}.{fmt}")
    if str(target) == "-":
        typer.echo(data.decode() if fmt in ("csv", "html") else data, nl=False)
        return
    target.write_bytes(data)
    _console().print(f"wrote {target} ({len(data)} bytes)")


def summarize(kpis: object) -> None:
    from hub.service.kpi import Kpis

    assert isinstance(kpis, Kpis)
    table = Table(title=f"report {kpis.month} as of {kpis.as_of.isoformat(timespec='seconds')}")
    for col in ("currency", "cases", "placed", "collected", "recovery"):
        table.add_column(col)
    for r in kpis.totals:
        shown = "-" if r.rate is None else f"{r.rate * 100:.2f}%"
        table.add_row(r.currency, str(r.cases), str(r.placed), str(r.collected), shown)
    _console().print(table)


def docs_asyncapi(
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """The AsyncAPI 3.0 document of the AMQP contract (JSON)."""
    from hub.entrypoints.asyncapi import asyncapi_document

    text = json.dumps(asyncapi_document(), indent=2)
    _write(text, output)


def docs_openapi(
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """The OpenAPI document of the dashboard's HTTP API (JSON)."""
    from hub.entrypoints.web import DashboardSettings, create_app

    app = create_app(DashboardSettings(dashboard_dev=True), connect=False)
    _write(json.dumps(app.openapi(), indent=2), output)


def _write(text: str, output: Path | None) -> None:
    if output is None or str(output) == "-":
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        _console().print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
    app.command("report")(report)
    docs = next((g.typer_instance for g in app.registered_groups if g.name == "docs"), None)
    if docs is None:
        docs = typer.Typer(help="Documents: the API contracts.", no_args_is_help=True)
        app.add_typer(docs, name="docs")
    docs.command("asyncapi")(docs_asyncapi)
    docs.command("openapi")(docs_openapi)
