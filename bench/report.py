"""The result as a Rich table (and, with ``--json``, as one JSON object)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _target(result: dict[str, Any], key: str) -> str:
    t = result.get("targets", {}).get(key)
    if not t:
        return ""
    met = t.get("met")
    mark = "[green]met[/]" if met else "[red]missed[/]" if met is False else "[dim]n/a[/]"
    return f"{t['target']}  {mark}"


def render(result: dict[str, Any], console: Console) -> None:
    v = result.get("versions", {})
    db = v.get("database", {})
    title = (
        f"hubctl bench {result.get('run', '')}: RabbitMQ {v.get('rabbitmq', '?')}, "
        f"{db.get('name', '?')} {db.get('server', '')} {db.get('version', '?')}, "
        f"Python {v.get('python', '?')}, hub {v.get('hub', '?')}, "
        f"{result.get('workers', 1)} worker(s)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    lat = result.get("latency_ms") or {}
    rows: list[tuple[str, str, str]] = [
        (
            "raw relay, a message at a time (limit)",
            _fmt(result.get("limit_relay_per_s"), "msg/s"),
            "",
        ),
        (
            f"raw relay, {_fmt(result.get('limit_relay_pipelined_prefetch'))} in flight",
            _fmt(result.get("limit_relay_pipelined_per_s"), "msg/s"),
            "",
        ),
        ("raw bulk writes (limit)", _fmt(result.get("limit_db_writes_per_s"), "doc/s"), ""),
        (
            f"intake ({_fmt(result.get('claims'))} claims)",
            _fmt(result.get("intake_claims_per_s"), "claims/s"),
            "",
        ),
        ("intake / relay", _fmt(result.get("ratio_intake"), "x"), _target(result, "ratio_intake")),
        ("intake / pipelined relay", _fmt(result.get("ratio_intake_pipelined"), "x"), ""),
        ("intake wall time", _fmt(result.get("intake_seconds"), "s"), ""),
        (
            "100k claims (scaled)",
            _fmt(result.get("intake_100k_seconds"), "s"),
            _target(result, "intake_100k_seconds"),
        ),
        ("case.accepted", _fmt(result.get("accepts_per_s"), "msg/s"), ""),
        (
            f"updates ({_fmt(result.get('updates'))} activities)",
            _fmt(result.get("updates_per_s"), "msg/s"),
            "",
        ),
        (
            "updates / relay",
            _fmt(result.get("ratio_updates"), "x"),
            _target(result, "ratio_updates"),
        ),
        ("updates / pipelined relay", _fmt(result.get("ratio_updates_pipelined"), "x"), ""),
        (
            f"latency p50 / p95 (at {_fmt(lat.get('offered_per_s'))}/s)",
            f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} ms",
            "",
        ),
        ("latency p99", _fmt(lat.get("p99"), "ms"), _target(result, "latency_p99_ms")),
        (
            "peak RSS, one hub worker",
            _fmt(result.get("peak_rss_mb"), "MB"),
            _target(result, "peak_rss_mb"),
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)

    phases = result.get("phases") or {}
    if phases:
        usage = Table(title="where the CPU went (CPU seconds / wall seconds)", title_justify="left")
        parties = sorted({k for p in phases.values() for k in p.get("cpu_s", {})})
        usage.add_column("phase")
        usage.add_column("wall s", justify="right")
        for party in parties:
            usage.add_column(party, justify="right")
        usage.add_column("CPU wait")
        usage.add_column("load 1 min")
        for name, p in phases.items():
            share = p.get("cpu_share", {})
            usage.add_row(
                name,
                _fmt(p.get("wall_s")),
                *[_fmt(share.get(party)) for party in parties],
                "-" if p.get("cpu_pressure") is None else f"{p['cpu_pressure']:.0%}",
                f"{p['loadavg_before'][0]:.2f}>{p['loadavg_after'][0]:.2f}",
            )
        console.print(usage)
    if result.get("error"):
        console.print(f"[red]error:[/] {result['error']}")
