"""A hub worker SIGKILLed five times at random moments during a 10,000-claim batch, and
restarted each time: no claim lost, no duplicate case, receipt or assignment.

The worker is a separate process (``hubctl run``) with this test's namespace and
database. The kill moments are drawn from a seeded generator (the seed is printed, and
``ONEWINDOW_CHAOS_SEED`` replays a run): a point in the batch, then a random extra delay.

A kill during a commit leaves an open transaction behind; the database aborts it only
after ``transactionLifetimeLimitSeconds`` (60 s), and until then the redelivered messages
it had written wait. The test counts those stalls (a recovery slower than 20 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from hub.bootstrap import Hub
from tests.chaos import report
from tests.chaos.support import (
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

pytestmark = [pytest.mark.services, pytest.mark.chaos, pytest.mark.slow]

TOTAL = int(os.environ.get("ONEWINDOW_CHAOS_CLAIMS", "10000"))
KILLS = 5
INVALID = 20


def kill_points(rng: random.Random, total: int, kills: int) -> list[tuple[int, float]]:
    """``kills`` inbox counts spread over 5%..85% of the batch, each with an extra delay."""
    span = (0.85 - 0.05) / kills
    return [
        (int(total * (0.05 + span * (k + rng.uniform(0.1, 0.9)))), rng.uniform(0.0, 0.4))
        for k in range(kills)
    ]


async def test_worker_sigkilled_five_times_mid_batch(idle_hub: Hub, worker: Any) -> None:
    hub = idle_hub
    db = hub.store.db
    seed = int(os.environ.get("ONEWINDOW_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))
    rng = random.Random(seed)
    batch = scenario_batch("K", TOTAL, seed=seed, invalid=INVALID)
    coverage = await add_partners(hub, partner_plan())

    t0 = time.monotonic()
    await publish_batch(hub.settings.amqp_url, hub, batch)
    t_published = time.monotonic()

    w, alive = scenario_worker(worker)

    kills: list[int] = []
    recoveries: list[float] = []
    w.start()
    for at, delay in kill_points(rng, TOTAL, KILLS):
        await wait_inbox(db, at, within=300, alive=alive)
        await asyncio.sleep(delay)
        w.kill()
        n = await inbox_count(db)
        assert n is not None and n < TOTAL, f"the worker finished ({n}) before kill {len(kills)}"
        kills.append(n)
        restarted = time.monotonic()
        w.start()
        await wait_inbox(db, n + 1, within=300, alive=alive)
        recoveries.append(time.monotonic() - restarted)
    await wait_done(db, TOTAL, within=600, alive=alive)
    t_done = time.monotonic()
    await asyncio.sleep(1.0)  # the last confirmed publishes reach their queues
    w.kill()

    creditor, assigned, dead = await collect(
        hub.settings.amqp_url, hub.topology, partners_of(coverage), TOTAL + 1
    )
    census = await take_census(
        "worker-sigkill-x5",
        db,
        batch,
        creditor,
        assigned,
        coverage,
        kills_at=",".join(map(str, kills)),
        recovery_s=",".join(f"{r:.0f}" for r in recoveries),
        stalls=sum(r > 20 for r in recoveries),
        dead_lettered=len(dead),
        seed=seed,
        seconds=f"{t_done - t_published:.0f}",
        publish_s=f"{t_published - t0:.1f}",
    )
    report.record(census.line())
    assert dead == [], [(m.type, m.message_id) for m in dead[:5]]
    census.check()
