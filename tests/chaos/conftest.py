"""Fixtures of the fault-injection tests (marker ``chaos``).

Faults are injected only into processes the tests start themselves: hub workers
(``hubctl run``), RabbitMQ nodes of their own (``scripts/rabbit-node``: ``ow-chaos``,
``ow-c1..3``, ``ow-tls``, named after the test process, on free ports) and a SecantusDB
process of their own. The machine's main RabbitMQ node and database, which other tests
share, are never restarted.

The hub-worker fixtures (``idle_hub``, ``idle_partner``, ``worker``) are in
``tests/conftest.py``, shared with the end-to-end suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import report
from tests.chaos.support import TEST_CA, RabbitNode, run


@pytest.fixture(scope="session")
async def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA with server and client certificates (``scripts/test-ca``)."""
    directory = tmp_path_factory.mktemp("tls")
    await run(TEST_CA, "--dir", directory)
    return directory


@pytest.fixture(scope="module")
async def chaos_node(services: None) -> AsyncIterator[RabbitNode]:
    """The separate RabbitMQ node that the broker-restart scenario restarts."""
    node = RabbitNode("ow-chaos")
    await node.start()
    try:
        yield node
    finally:
        await node.remove()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report.terminal_summary(terminalreporter)
