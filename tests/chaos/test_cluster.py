"""A three-node RabbitMQ cluster on loopback (``ow-c1``, ``ow-c2``, ``ow-c3``, each with
its own ports): the hub's quorum queues carry a batch through the loss of one node.

Every queue of the test is declared through ``ow-c2``, so ``ow-c2`` leads them all (quorum
queues place their leader on the declaring node); the batch is published through
``ow-c3`` and the hub worker is connected to ``ow-c1``. In the middle of the batch
``ow-c2`` is killed (SIGKILL): each queue elects a new leader among the two survivors (a
majority of three), the worker's connection is not touched, and the batch completes with
nothing lost and nothing done twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from hub.bootstrap import Hub, declare_topology
from hub.config import Settings
from tests.chaos import report
from tests.chaos.support import (
    RabbitNode,
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


@pytest.fixture(scope="module")
async def cluster(services: None) -> AsyncIterator[list[RabbitNode]]:
    nodes = [RabbitNode(f"ow-c{n}") for n in (1, 2, 3)]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        for node in nodes[1:]:
            await node.join(nodes[0])
        yield nodes
    finally:
        for node in reversed(nodes):
            await node.remove()


@pytest.fixture
async def settings(cluster: list[RabbitNode]) -> AsyncIterator[Settings]:
    """The hub on ``ow-c1``, its topology declared (and so led) by ``ow-c2``."""
    c1, c2, _ = cluster
    s = unique_settings(amqp_url=c1.url())
    connection = await aio_pika.connect(c2.url())
    async with connection:
        await declare_topology(connection, s)  # type: ignore[arg-type]
    yield s


async def test_quorum_queues_survive_the_loss_of_a_node(
    idle_hub: Hub, worker: Any, cluster: list[RabbitNode]
) -> None:
    c1, c2, c3 = cluster
    hub = idle_hub
    db = hub.store.db
    ns = hub.settings.namespace
    batch = scenario_batch("Q", TOTAL, seed=13)
    via_c2 = await aio_pika.connect(c2.url())
    async with via_c2:
        coverage = await add_partners(hub, partner_plan(), channel=await via_c2.channel())
    leaders = await c1.quorum_leaders(ns)
    assert leaders and set(leaders.values()) == {c2.node}, leaders
    await publish_batch(c3.url(), hub, batch)

    w, alive = scenario_worker(worker)

    t0 = time.monotonic()
    w.start()
    n = await wait_inbox(db, TOTAL // 3, within=300, alive=alive)
    await c2.kill()
    t_kill = time.monotonic()

    async def elected() -> dict[str, str]:
        while True:
            now = await c1.quorum_leaders(ns)
            if now and c2.node not in now.values():
                return now
            await asyncio.sleep(0.5)

    after = await asyncio.wait_for(elected(), 120)
    t_elected = time.monotonic()
    await wait_done(db, TOTAL, within=600, alive=alive)
    t_done = time.monotonic()
    await asyncio.sleep(1.0)
    w.kill()

    creditor, assigned, dead = await collect(
        c3.url(), hub.topology, partners_of(coverage), TOTAL + 1
    )
    census = await take_census(
        "cluster-node-loss",
        db,
        batch,
        creditor,
        assigned,
        coverage,
        killed=f"{c2.name}@{n}",
        queues=len(after),
        new_leaders="+".join(sorted({v.split("@")[0] for v in after.values()})),
        election_s=f"{t_elected - t_kill:.0f}",
        worker_processes=len(w.procs),
        dead_lettered=len(dead),
        seconds=f"{t_done - t0:.0f}",
    )
    report.record(census.line())
    assert len(w.procs) == 1
    assert dead == [], [(m.type, m.message_id) for m in dead[:5]]
    census.check()
