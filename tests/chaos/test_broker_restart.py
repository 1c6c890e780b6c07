"""RabbitMQ restarted in the middle of a batch, twice: once cleanly (``stop_app`` /
``start_app``, every connection closed by the broker) and once killed with SIGKILL and
started again on its data. The hub worker reconnects by itself and finishes the batch
with nothing lost and nothing done twice.

The broker is a node of this test's own (``ow-chaos@localhost`` on port 5682, started by
``scripts/rabbit-node``), never the machine's main node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from tests.chaos import report
from tests.chaos.support import (
    RabbitNode,
    add_partners,
    collect,
    inbox_count,
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
def settings(services: None, chaos_node: RabbitNode) -> Iterator[Settings]:
    """This test's settings, on the test's own RabbitMQ node (removed with the module)."""
    yield unique_settings(amqp_url=chaos_node.url())


async def test_broker_restarted_mid_batch(
    idle_hub: Hub, worker: Any, chaos_node: RabbitNode
) -> None:
    hub = idle_hub
    db = hub.store.db
    batch = scenario_batch("R", TOTAL, seed=11)
    coverage = await add_partners(hub, partner_plan())
    await publish_batch(hub.settings.amqp_url, hub, batch)
    # the test's own hub connection would only log reconnection attempts meanwhile
    await hub.connection.close()

    w, alive = scenario_worker(worker)

    t0 = time.monotonic()
    w.start()
    outages: list[str] = []

    # 1. a clean stop of the broker application: the broker closes every connection
    n = await wait_inbox(db, TOTAL // 4, within=300, alive=alive)
    await chaos_node.ctl("stop_app")
    down = time.monotonic()
    await asyncio.sleep(3)
    alive()
    await chaos_node.ctl("start_app")
    await chaos_node.ctl("await_startup", "--timeout", "60")
    outages.append(f"stop_app@{n}:{time.monotonic() - down:.0f}s")

    # 2. once the worker is back at work, the broker killed (SIGKILL) and started again
    resumed_from = await inbox_count(db) or 0
    n = await wait_inbox(db, resumed_from + 100, within=300, alive=alive)
    assert n < TOTAL, "the batch was done before the second outage"
    await chaos_node.kill()
    down = time.monotonic()
    await asyncio.sleep(2)
    alive()
    await chaos_node.restart()
    outages.append(f"kill@{n}:{time.monotonic() - down:.0f}s")

    await wait_done(db, TOTAL, within=600, alive=alive)
    t_done = time.monotonic()
    await asyncio.sleep(1.0)
    retries = sum(log.read_text(errors="replace").count("Connection attempt to") for log in w.logs)
    w.kill()

    creditor, assigned, dead = await collect(
        hub.settings.amqp_url, hub.topology, partners_of(coverage), TOTAL + 1
    )
    census = await take_census(
        "broker-restart",
        db,
        batch,
        creditor,
        assigned,
        coverage,
        outages=",".join(outages),
        worker_processes=len(w.procs),
        failed_reconnects=retries,
        dead_lettered=len(dead),
        seconds=f"{t_done - t0:.0f}",
        inbox_end=await inbox_count(db),
    )
    report.record(census.line())
    assert len(w.procs) == 1, "the worker was restarted: it should have reconnected by itself"
    assert dead == [], [(m.type, m.message_id) for m in dead[:5]]
    census.check()
