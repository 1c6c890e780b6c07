"""The AMQP topology of contract v1, declared in one place and used by every process.

Exchanges are durable topic exchanges. Queues are durable quorum queues that dead-letter
to ``hub.dlx`` after ``delivery_limit`` deliveries; ``hub.dead`` collects those letters.
Declaring is idempotent: every process declares what it uses at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue


@dataclass(frozen=True)
class Topology:
    """Names of every exchange and queue, optionally under a namespace prefix."""

    namespace: str = ""
    delivery_limit: int = 5

    def _n(self, name: str) -> str:
        return f"{self.namespace}{name}"

    # exchanges
    @property
    def claims_in(self) -> str:
        return self._n("claims.in")

    @property
    def claims_receipts(self) -> str:
        return self._n("claims.receipts")

    @property
    def partners_out(self) -> str:
        return self._n("partners.out")

    @property
    def partners_in(self) -> str:
        return self._n("partners.in")

    @property
    def dlx(self) -> str:
        return self._n("hub.dlx")

    # queues
    @property
    def hub_claims(self) -> str:
        return self._n("hub.claims")

    @property
    def hub_updates(self) -> str:
        return self._n("hub.partner-updates")

    @property
    def hub_dead(self) -> str:
        return self._n("hub.dead")

    def partner_queue(self, partner_id: str) -> str:
        return self._n(f"partner.{partner_id}")

    def creditor_queue(self, creditor_id: str) -> str:
        return self._n(f"creditor.{creditor_id}")

    @property
    def exchanges(self) -> tuple[str, ...]:
        return (self.claims_in, self.claims_receipts, self.partners_out, self.partners_in, self.dlx)

    def queue_arguments(self, *, dead_letter: bool = True) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if dead_letter:
            args["x-dead-letter-exchange"] = self.dlx
            args["x-delivery-limit"] = self.delivery_limit
        return args


async def _exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_queue(
    channel: AbstractChannel,
    topology: Topology,
    name: str,
    bindings: list[tuple[str, str]],
    *,
    dead_letter: bool = True,
) -> AbstractQueue:
    queue = await channel.declare_queue(
        name, durable=True, arguments=topology.queue_arguments(dead_letter=dead_letter)
    )
    for exchange, key in bindings:
        await queue.bind(exchange, routing_key=key)
    return queue


async def existing_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """A queue that must already exist (``ChannelNotFoundEntity`` if not).

    A passive declare, not ``get_queue(ensure=False)``: it registers the queue with a robust
    channel, so a consumer started on it is restored after a reconnect."""
    return await channel.declare_queue(name, passive=True)


async def declare_hub(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange and the hub's own queues."""
    for name in topology.exchanges:
        await _exchange(channel, name)
    await declare_queue(channel, topology, topology.hub_claims, [(topology.claims_in, "claim.*")])
    await declare_queue(channel, topology, topology.hub_updates, [(topology.partners_in, "#")])
    await declare_queue(
        channel, topology, topology.hub_dead, [(topology.dlx, "#")], dead_letter=False
    )


async def declare_partner(channel: AbstractChannel, topology: Topology, partner_id: str) -> None:
    """A partner's queue ``partner.<id>``, bound to ``partners.out`` by ``<id>.#``."""
    await _exchange(channel, topology.partners_out)
    await declare_queue(
        channel,
        topology,
        topology.partner_queue(partner_id),
        [(topology.partners_out, f"{partner_id}.#")],
    )


async def declare_creditor(channel: AbstractChannel, topology: Topology, creditor_id: str) -> None:
    """A creditor's queue ``creditor.<id>``, bound to ``claims.receipts`` by ``<id>.#``."""
    await _exchange(channel, topology.claims_receipts)
    await declare_queue(
        channel,
        topology,
        topology.creditor_queue(creditor_id),
        [(topology.claims_receipts, f"{creditor_id}.#")],
    )
