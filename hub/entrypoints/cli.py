"""``hubctl``: run the hub and work with it from a terminal.

Each command group lives in its own module and is registered here.
"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from hub.config import Settings

app = typer.Typer(
    name="hubctl",
    help="OneWindow hub: claims in, cases routed to partner law firms, updates back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


@app.command()
def run() -> None:
    """Run a hub worker: consume claims and partner updates until stopped (Ctrl-C)."""
    from hub.bootstrap import run_forever
    from hub.infra.observability import setup_logging

    settings = Settings()
    setup_logging(settings.log_level, json_logs=settings.log_json)
    console.print(
        f"[bold]hub worker[/] amqp={_safe(settings.amqp_url)} mongo={_safe(settings.mongo_url)}"
    )
    try:
        asyncio.run(run_forever(settings))
    except KeyboardInterrupt:
        console.print("stopped")


@app.command("topology")
def declare_topology() -> None:
    """Declare the exchanges and queues of the AMQP contract (idempotent)."""
    from hub.bootstrap import declare_topology as declare
    from hub.infra.rabbit import connect

    settings = Settings()

    async def main() -> None:
        connection = await connect(settings.amqp_url)
        try:
            topo = await declare(connection, settings)
        finally:
            await connection.close()
        for name in (*topo.exchanges, topo.hub_claims, topo.hub_updates, topo.hub_dead):
            console.print(f"declared {name}")

    asyncio.run(main())


def _safe(url: str) -> str:
    """A URL without its password, for printing."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _register() -> None:
    import importlib

    # cli_web after cli_cases: ``docs asyncapi|openapi`` join the ``docs`` group.
    for module in (
        "cli_partners",
        "cli_cases",
        "cli_claims",
        "cli_demo",
        "cli_web",
        "cli_dead",
        "cli_adapters",
        "cli_bench",
    ):
        try:
            mod = importlib.import_module(f"hub.entrypoints.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"hub.entrypoints.{module}":
                raise
            continue
        mod.register(app)


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
