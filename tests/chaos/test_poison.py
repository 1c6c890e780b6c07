"""Poison messages: a message the hub cannot process is retried, then dead-lettered to
``hub.dead`` with its reason after the delivery limit, while everything around it goes
through; ``hubctl dead list`` shows it and ``hubctl dead replay`` puts it back once the
cause is mended.

The poison is made by wrapping the running consumers' handlers so that they raise for
chosen message ids (a bug that only some messages trigger). One poisoned claim, one
poisoned partner report. The report carries the partner's broker-validated ``user_id``:
the broker accepts its copy only from a user tagged ``impersonator``, which the test
creates for the replay.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from hub.service.ports import Incoming, OutMessage
from tests.chaos import report
from tests.chaos.support import queue_depth, take_all
from tests.conftest import PartnerFactory
from tests.support import Management, claim_body, eventually, publish_json

pytestmark = [pytest.mark.services, pytest.mark.chaos]

HUBCTL = Path(sys.executable).with_name("hubctl")


async def hubctl(settings: Settings, *args: str, amqp_url: str | None = None) -> tuple[int, str]:
    """Run ``hubctl`` with this test's settings; its exit code and output."""
    env = {
        **os.environ,
        "ONEWINDOW_AMQP_URL": amqp_url or settings.amqp_url,
        "ONEWINDOW_AMQP_MANAGEMENT_URL": settings.amqp_management_url,
        "ONEWINDOW_MONGO_URL": settings.mongo_url,
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_NAMESPACE": settings.namespace,
        "COLUMNS": "200",
    }
    proc = await asyncio.create_subprocess_exec(
        str(HUBCTL),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


def letters(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_poison_messages_dead_lettered_listed_and_replayed(
    hub: Hub, partner: PartnerFactory, management: Management
) -> None:
    s = hub.settings
    topo = hub.topology
    tag = uuid.uuid4().hex[:6]
    poison_claim, poison_report = f"poison-claim-{tag}", f"poison-report-{tag}"
    poisoned = {poison_claim, poison_report}
    attempts: dict[str, int] = {}

    def poison(handler: Any) -> Any:
        async def handle(batch: Sequence[Incoming]) -> list[OutMessage]:
            bad = [m.message_id for m in batch if m.message_id in poisoned]
            for mid in bad:
                attempts[mid or ""] = attempts.get(mid or "", 0) + 1
            if bad:
                raise RuntimeError(f"cannot process {bad}")
            result: list[OutMessage] = await handler(batch)
            return result

        return handle

    for consumer in hub.consumers:
        consumer.handler = poison(consumer.handler)
    pid = await partner(["DE"])

    connection = await aio_pika.connect(s.amqp_url)
    async with connection:
        channel = await connection.channel()
        # ten good claims around a poisoned one
        for n in range(11):
            body = claim_body(n, country="DE")
            body["invoice_number"] = f"INV-{tag}-{n}"
            mid = poison_claim if n == 5 else f"good-{tag}-{n}"
            await publish_json(
                channel, topo.claims_in, "claim.placed", body, type="claim.placed", message_id=mid
            )

        async def dead(n: int) -> bool:
            return await queue_depth(channel, topo.hub_dead) >= n

        await eventually(lambda: dead(1), within=60)
        receipts = await take_all(channel, topo.creditor_queue("flexspace"), expect=10)
        ids = sorted(json.loads(m.body)["claim_message_id"] for m in receipts)
        assert ids == sorted(f"good-{tag}-{n}" for n in range(11) if n != 5)
        assignments = await take_all(channel, topo.partner_queue(pid), expect=10)
        case = json.loads(assignments[0].body)

        # a poisoned partner report, published as the partner
        partner_url = s.amqp_url.replace("guest:guest", f"{pid}:pw-{pid}")
        as_partner = await aio_pika.connect(partner_url)
        async with as_partner:
            await publish_json(
                await as_partner.channel(),
                topo.partners_in,
                f"{pid}.case.accepted",
                {
                    "case_id": case["case_id"],
                    "assignment_id": case["assignment_id"],
                    "occurred_at": "2026-12-04T10:00:00Z",
                },
                type="case.accepted",
                message_id=poison_report,
                user_id=pid,
            )
        await eventually(lambda: dead(2), within=60)

        # hubctl dead list: both letters, with where they came from and why they died
        rc, output = await hubctl(s, "dead", "list", "--json")
        assert rc == 0, output
        listed = {d["message_id"]: d for d in letters(output)}
        assert set(listed) == poisoned, output
        claim_letter, report_letter = listed[poison_claim], listed[poison_report]
        assert claim_letter["reason"] == report_letter["reason"] == "delivery_limit"
        assert (claim_letter["exchange"], claim_letter["routing_key"]) == (
            topo.claims_in,
            "claim.placed",
        )
        assert claim_letter["queue"] == "hub.claims" and claim_letter["type"] == "claim.placed"
        assert (report_letter["exchange"], report_letter["routing_key"]) == (
            topo.partners_in,
            f"{pid}.case.accepted",
        )
        assert report_letter["queue"] == "hub.partner-updates"
        assert report_letter["user_id"] == pid
        assert claim_letter["died_at"] and claim_letter["count"] >= 1
        delivery_limit = s.delivery_limit
        assert attempts[poison_claim] >= delivery_limit, attempts
        rc, table = await hubctl(s, "dead", "list")
        assert rc == 0 and poison_claim in table and "delivery_limit" in table, table

        # the cause mended; replay the claim by its message id
        poisoned.clear()
        rc, output = await hubctl(s, "dead", "replay", poison_claim)
        assert rc == 0 and f"replayed {poison_claim}" in output, output
        got = await take_all(channel, topo.creditor_queue("flexspace"), expect=1)
        receipt = json.loads(got[0].body)
        assert (receipt["claim_message_id"], receipt["status"]) == (poison_claim, "accepted")

        rc, output = await hubctl(s, "dead", "replay", f"nothing-{tag}")
        assert rc == 1 and f"not in hub.dead: nothing-{tag}" in output, output

        # the report: a user without the impersonator tag cannot replay it (the copy keeps
        # the partner's user_id), a user with it can
        replayer, password = f"replayer-{tag}", uuid.uuid4().hex
        replayer_url = s.amqp_url.replace("guest:guest", f"{replayer}:{password}")
        ns = s.namespace.replace(".", r"\.")
        async with httpx.AsyncClient(auth=management.auth, timeout=10) as c:

            async def tag_replayer(tags: str) -> None:
                user = {"password": password, "tags": tags}
                (await c.put(f"{management.base}/users/{replayer}", json=user)).raise_for_status()

            await tag_replayer("")
            r = await c.put(
                f"{management.base}/permissions/%2F/{replayer}",
                json={
                    "configure": "^$",
                    "write": f"^{ns}partners\\.in$",
                    "read": f"^{ns}hub\\.dead$",
                },
            )
            r.raise_for_status()
            try:
                rc, output = await hubctl(s, "dead", "replay", "--all", amqp_url=replayer_url)
                assert rc == 1 and "impersonator" in output, output
                assert await queue_depth(channel, topo.hub_dead) == 1
                await tag_replayer("impersonator")
                rc, output = await hubctl(s, "dead", "replay", "--all", amqp_url=replayer_url)
            finally:
                management.delete_user(replayer)
        assert rc == 0 and f"replayed {poison_report}" in output, output

        async def accepted() -> bool:
            state = await hub.store.case(case["case_id"])
            return state is not None and state.lifecycle.value == "accepted"

        await eventually(accepted, within=30)
        assert await queue_depth(channel, topo.hub_dead) == 0
        rc, output = await hubctl(s, "dead", "list")
        assert rc == 0 and "hub.dead is empty" in output, output
    report.record(
        f"poison: 2 poisoned messages (a claim, a partner report) dead-lettered after "
        f"{attempts[poison_claim]} and {attempts[poison_report]} attempts "
        f"(delivery limit {delivery_limit}), reason delivery_limit; 10 good claims "
        f"through; replayed: claim accepted, report applied (impersonator user)"
    )
