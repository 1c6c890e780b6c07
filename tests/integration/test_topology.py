"""The AMQP topology of contract v1 on the real broker: declaring is idempotent, queues are
quorum queues that dead-letter, and ``partners.out`` routes to exactly one partner."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from hub.config import Settings
from hub.infra import topology
from hub.infra.topology import Topology

pytestmark = pytest.mark.services

PARTNERS = ("acme-de", "lex-fr")


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as ch:
        yield ch


def queue_info(settings: Settings, name: str) -> dict[str, Any]:
    url = urllib.parse.urlsplit(settings.amqp_management_url)
    base = f"{url.scheme}://{url.hostname}:{url.port or 15672}/api"
    quoted = urllib.parse.quote(name, safe="")
    with httpx.Client(auth=(url.username or "guest", url.password or "guest"), timeout=10) as c:
        response = c.get(f"{base}/queues/%2F/{quoted}")
        response.raise_for_status()
        info: dict[str, Any] = response.json()
        return info


def all_queues(topo: Topology) -> list[str]:
    return [
        topo.hub_claims,
        topo.hub_updates,
        topo.hub_dead,
        topo.creditor_queue("flexspace"),
        *(topo.partner_queue(p) for p in PARTNERS),
    ]


async def declare_everything(channel: AbstractChannel, topo: Topology) -> None:
    await topology.declare_hub(channel, topo)
    await topology.declare_creditor(channel, topo, "flexspace")
    for pid in PARTNERS:
        await topology.declare_partner(channel, topo, pid)


async def depth(channel: AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, durable=True, passive=True, arguments=None)
    count = declared.declaration_result.message_count
    assert count is not None
    return int(count)


async def test_declaring_twice_is_harmless(settings: Settings, channel: AbstractChannel) -> None:
    topo = Topology(settings.namespace, delivery_limit=settings.delivery_limit)
    await declare_everything(channel, topo)
    first = {name: queue_info(settings, name) for name in all_queues(topo)}
    await declare_everything(channel, topo)
    second = {name: queue_info(settings, name) for name in all_queues(topo)}

    for name in all_queues(topo):
        assert second[name]["arguments"] == first[name]["arguments"], name
        info = second[name]
        assert info["durable"] is True
        assert info["type"] == "quorum"
        assert info["arguments"]["x-queue-type"] == "quorum"
        if name == topo.hub_dead:
            assert "x-dead-letter-exchange" not in info["arguments"]
        else:
            assert info["arguments"]["x-dead-letter-exchange"] == topo.dlx
            assert info["arguments"]["x-delivery-limit"] == settings.delivery_limit


async def test_a_partner_message_reaches_only_that_partner(
    settings: Settings, channel: AbstractChannel
) -> None:
    topo = Topology(settings.namespace, delivery_limit=settings.delivery_limit)
    await declare_everything(channel, topo)
    exchange = await channel.get_exchange(topo.partners_out, ensure=True)
    body = b'{"case_id": "C-1"}'
    await exchange.publish(
        aio_pika.Message(body, message_id="asg:C-1-A1", type="case.assigned"),
        routing_key=f"{PARTNERS[0]}.case.assigned",
    )
    target = topo.partner_queue(PARTNERS[0])
    queue = await channel.get_queue(target, ensure=False)
    got = await queue.get(fail=False, no_ack=True, timeout=5)
    assert got is not None
    assert (got.body, got.message_id, got.type) == (body, "asg:C-1-A1", "case.assigned")
    for name in all_queues(topo):
        assert await depth(channel, name) == 0, f"{name} got a copy"


async def test_an_unbound_partner_key_is_returned(
    settings: Settings, channel: AbstractChannel
) -> None:
    """``partners.out`` has no catch-all binding: a message for a partner without a queue
    is returned to a mandatory publisher instead of vanishing."""
    topo = Topology(settings.namespace, delivery_limit=settings.delivery_limit)
    await declare_everything(channel, topo)
    exchange = await channel.get_exchange(topo.partners_out, ensure=True)
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await exchange.publish(
            aio_pika.Message(b"{}", type="case.assigned"),
            routing_key="nobody-xx.case.assigned",
            mandatory=True,
        )
    for name in all_queues(topo):
        assert await depth(channel, name) == 0
