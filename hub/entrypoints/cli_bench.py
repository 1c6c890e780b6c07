"""``hubctl bench``: measure the hub against the broker's own limit (see ``bench/``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from bench.cli import bench

    app.command("bench")(bench)
