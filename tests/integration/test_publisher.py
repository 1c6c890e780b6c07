"""``RabbitPublisher`` on the real broker: a chunk of messages goes out in one write, each
is confirmed or not on its own, and the channel stays usable for ordinary publishes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractRobustConnection

from hub.config import Settings
from hub.infra import topology
from hub.infra.rabbit import RabbitPublisher
from hub.infra.topology import Topology
from hub.service.ports import OutMessage

pytestmark = pytest.mark.services


def out(i: int, partner: str) -> OutMessage:
    return OutMessage(
        message_id=f"m-{i}",
        exchange="partners.out",
        routing_key=f"{partner}.case.assigned",
        type="case.assigned",
        body=json.dumps({"n": i}).encode(),
        correlation_id=f"case-{i}",
        created_at=dt.datetime.now(dt.UTC),
    )


async def test_a_chunked_publish_confirms_each_message_on_its_own(
    settings: Settings, connection: AbstractRobustConnection
) -> None:
    topo = Topology(namespace=settings.namespace)
    setup = await connection.channel()
    await topology.declare_hub(setup, topo)
    await topology.declare_partner(setup, topo, "acme")
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    publisher = RabbitPublisher(channel, topo)

    # 1,200 messages (three chunks), every fifth for a partner without a queue: returned
    messages = [out(i, "nobody" if i % 5 == 0 else "acme") for i in range(1200)]
    confirmed = await publisher.publish(messages)

    routable = [o.message_id for o in messages if not o.routing_key.startswith("nobody")]
    assert confirmed == routable
    raw = await channel.get_underlay_channel()
    assert isinstance(raw, aiormq.Channel)
    await asyncio.sleep(0)  # the done-callbacks run
    assert raw.message_id_delivery_tag == {}
    assert not raw.confirmations

    # Delivery tags stay in step with the broker: an ordinary publish is confirmed.
    exchange = await channel.get_exchange(f"{topo.namespace}partners.out")
    await exchange.publish(
        aio_pika.Message(b"{}", message_id="after"), routing_key="acme.case.assigned"
    )
    queue = await setup.declare_queue(topo.partner_queue("acme"), passive=True)
    ids: list[str | None] = []
    while (msg := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(msg.message_id)
    assert ids == [*routable, "after"]
    assert await publisher.publish([out(7, "acme")]) == ["m-7"]
