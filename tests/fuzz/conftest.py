"""The bad-input tests print their figures at the end of the session, with the
fault-injection scenarios' (``tests/chaos/report.py``)."""

from __future__ import annotations

from typing import Any

from tests.chaos import report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report.terminal_summary(terminalreporter)
