"""The MongoDB-compatible server killed (SIGKILL) and started again on the same storage in
the middle of a batch, twice. The hub writes with ``w=majority, j=true``, so a batch it
acknowledged to the broker survives; whatever was in flight is redelivered. The worker
reconnects by itself and finishes with nothing lost and nothing done twice.

The server is a process of this test's own (``secantusd-rs`` when it is built, else
``secantusd-py``) on a free port with its storage in the test's temporary directory; the
machine's main database is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from tests.chaos import report
from tests.chaos.support import (
    DbServer,
    add_partners,
    collect,
    partner_plan,
    partners_of,
    publish_batch,
    scenario_batch,
    scenario_worker,
    take_census,
    wait_done,
    wait_inbox,
)
from tests.support import unique_settings

pytestmark = [pytest.mark.services, pytest.mark.chaos, pytest.mark.slow]

TOTAL = 2000


@pytest.fixture
async def db_server(services: None, tmp_path: Path) -> AsyncIterator[DbServer]:
    server = DbServer(tmp_path / "storage", tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(db_server: DbServer) -> Iterator[Settings]:
    """This test's settings, with the test's own database server."""
    yield unique_settings(mongo_url=db_server.url)


async def test_database_killed_mid_batch(idle_hub: Hub, worker: Any, db_server: DbServer) -> None:
    hub = idle_hub
    db = hub.store.db
    batch = scenario_batch("D", TOTAL, seed=12)
    coverage = await add_partners(hub, partner_plan())
    await publish_batch(hub.settings.amqp_url, hub, batch)

    w, alive = scenario_worker(worker)

    t0 = time.monotonic()
    w.start()
    outages: list[str] = []
    for fraction in (0.25, 0.6):
        n = await wait_inbox(db, int(TOTAL * fraction), within=300, alive=alive)
        db_server.kill()
        down = time.monotonic()
        await asyncio.sleep(2)
        alive()
        boot = await db_server.start()
        outages.append(f"kill@{n}:{time.monotonic() - down:.0f}s(boot {boot:.1f}s)")

    await wait_done(db, TOTAL, within=600, alive=alive)
    t_done = time.monotonic()
    await asyncio.sleep(1.0)
    logs = "".join(log.read_text(errors="replace") for log in w.logs)
    w.kill()

    creditor, assigned, dead = await collect(
        hub.settings.amqp_url, hub.topology, partners_of(coverage), TOTAL + 1
    )
    census = await take_census(
        "database-restart",
        db,
        batch,
        creditor,
        assigned,
        coverage,
        server=db_server.kind,
        outages=",".join(outages),
        worker_processes=len(w.procs),
        retried_batches=logs.count("store or broker unavailable"),
        dead_lettered=len(dead),
        seconds=f"{t_done - t0:.0f}",
    )
    report.record(census.line())
    assert len(w.procs) == 1, "the worker was restarted: it should have reconnected by itself"
    assert dead == [], [(m.type, m.message_id) for m in dead[:5]]
    census.check()
