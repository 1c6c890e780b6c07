"""Outbox entries the broker can never route must not hold back the ones it can.

An outgoing message whose routing key no queue is bound to is returned by the broker
(``mandatory``), so it is never confirmed and stays unsent in the outbox: a receipt for a
claim naming a creditor that has no queue, an error reply to a sender that is not a
partner, an assignment to a partner whose queue was removed. The relay takes the oldest
1,000 unsent entries on each pass; were 1,000 such entries retried at once forever, every
newer entry that needs the relay (after a crash or a broker outage) would wait forever.

The relay sets a failed entry aside for a growing pause (``retry_delay``) instead, so the
entries behind it go out; the set-aside ones stay in the outbox and on the dashboard.
"""

from __future__ import annotations

import datetime as dt
import json

import aio_pika
import pytest

from hub.bootstrap import Hub
from hub.infra.mongo import out_to_doc
from hub.service import outgoing
from hub.service.ports import OutMessage
from partner_sdk.messages import ReceiptStatus
from tests.chaos.support import take_all

pytestmark = [pytest.mark.services, pytest.mark.chaos]


async def test_unroutable_entries_do_not_hold_back_the_outbox(hub: Hub) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    stuck = [
        OutMessage(
            message_id=f"stuck-{i}",
            exchange=outgoing.RECEIPTS,
            routing_key="no-such-creditor.claim.receipt",
            type="claim.receipt",
            body=b"{}",
            created_at=long_ago + dt.timedelta(milliseconds=i),
        )
        for i in range(1000)
    ]
    good = outgoing.receipt(
        claim_message_id="left-behind",
        creditor_id="flexspace",
        status=ReceiptStatus.ACCEPTED,
        now=long_ago + dt.timedelta(seconds=5),
    )
    await hub.store.db.outbox.insert_many([out_to_doc(o) for o in [*stuck, good]])

    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        got = await take_all(
            channel, hub.topology.creditor_queue("flexspace"), expect=1, idle=0.5, limit=15
        )
    assert [json.loads(m.body)["claim_message_id"] for m in got] == ["left-behind"]
