"""The ``bench`` command, shared by ``hubctl bench`` and ``python -m bench``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import orjson
import typer
from rich.console import Console

from bench.options import PHASES, Options, default_workers
from bench.report import render
from bench.run import run


def bench(
    claims: int = typer.Option(20_000, "--claims", min=1, help="Claims of the intake batch."),
    updates: int | None = typer.Option(
        None, "--updates", min=1, help="Activity reports (default: assigned cases x factor)."
    ),
    updates_factor: float = typer.Option(
        1.0, "--updates-factor", min=0.01, help="Activities per assigned case by default."
    ),
    claims_per_case: int = typer.Option(
        1, "--claims-per-case", min=1, help="Claims against each debtor (one case)."
    ),
    workers: int = typer.Option(
        default_workers(),
        "--workers",
        min=1,
        help="Hub worker processes, and raw relay processes (default: one per CPU, at most 4).",
    ),
    relay_messages: int | None = typer.Option(
        None, "--relay-messages", min=1, help="Messages of the raw relay (default: --claims)."
    ),
    db_docs: int | None = typer.Option(
        None, "--db-docs", min=1, help="Documents of the raw write rate (default: <= 20,000)."
    ),
    latency_rate: float = typer.Option(
        200.0, "--latency-rate", min=1, help="Claims per second of the latency phase."
    ),
    latency_seconds: float = typer.Option(
        10.0, "--latency-seconds", min=0.1, help="Duration of the latency phase."
    ),
    latency_warmup: float = typer.Option(
        3.0,
        "--latency-warmup",
        min=0.0,
        help="Seconds at the same rate before the measured ones (not measured).",
    ),
    window: int = typer.Option(1000, "--window", min=1, help="Publisher confirms in flight."),
    hub_env: list[str] = typer.Option(
        [],
        "--hub-env",
        help="KEY=VALUE in the hub workers' environment, e.g. ONEWINDOW_BATCH_MAX=500.",
    ),
    phases: str = typer.Option(
        ",".join(PHASES), "--phases", help="Phases to run: limit,intake,updates,latency."
    ),
    timeout: float = typer.Option(900.0, "--timeout", help="Give up a phase after so long (s)."),
    profile: Path | None = typer.Option(
        None, "--profile", help="Record py-spy profiles of the hub workers into this directory."
    ),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="Keep the workers' logs here."),
    keep: bool = typer.Option(False, "--keep", help="Keep the run's queues, users and database."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Measure the hub against the broker's own limit, in one run on one broker and database.

    Settings (broker, database, management API) come from the ONEWINDOW_* environment."""
    chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
    unknown = set(chosen) - set(PHASES)
    if unknown:
        raise typer.BadParameter(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if ("updates" in chosen or "latency" in chosen) and "intake" not in chosen:
        raise typer.BadParameter("the updates and latency phases need the intake phase")
    env: dict[str, str] = {}
    for item in hub_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--hub-env wants KEY=VALUE, not {item!r}")
        env[key] = value
    options = Options(
        claims=claims,
        updates=updates,
        updates_factor=updates_factor,
        claims_per_case=claims_per_case,
        workers=workers,
        relay_messages=relay_messages,
        db_docs=db_docs,
        latency_rate=latency_rate,
        latency_seconds=latency_seconds,
        latency_warmup_s=latency_warmup,
        window=window,
        hub_env=env,
        phases=chosen,
        timeout_s=timeout,
        profile_dir=profile,
        keep=keep,
        log_dir=log_dir,
    )
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    result = asyncio.run(run(options, say=lambda text: err.print(f"[dim]{text}[/]")))
    if as_json:
        render(result, err)
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(result, Console(width=None if sys.stdout.isatty() else 120))
    if result.get("error"):
        raise typer.Exit(1)


def main() -> None:
    typer.run(bench)
