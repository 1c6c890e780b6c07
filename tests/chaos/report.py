"""The figures of the fault-injection and bad-input runs: each scenario records one line,
and the session ends by printing them all (pytest's terminal summary, shown in CI without
``-s``) and writing them to ``var/chaos-report.txt``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORT_FILE = ROOT / "var" / "chaos-report.txt"

LINES: list[str] = []
_printed = [False]


def record(line: str) -> None:
    """Keep a scenario's line for the summary (and print it, for ``pytest -s``)."""
    LINES.append(line)
    print(f"\n{line}")


def terminal_summary(terminalreporter: Any) -> None:
    """Print the recorded lines once per session, whichever conftest calls first."""
    if not LINES or _printed[0]:
        return
    _printed[0] = True
    terminalreporter.write_sep("=", "fault injection and bad input: figures")
    for line in LINES:
        terminalreporter.write_line(line)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
        REPORT_FILE.write_text(f"# {stamp}\n" + "\n".join(LINES) + "\n", encoding="utf-8")
    except OSError as e:  # the figures are already on the terminal
        terminalreporter.write_line(f"(could not write {REPORT_FILE}: {e})")
    else:
        terminalreporter.write_line(f"(also written to {REPORT_FILE.relative_to(ROOT)})")
