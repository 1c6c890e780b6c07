"""Composition root: builds the hub from settings. Nothing connects at import."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pymongo import AsyncMongoClient

from hub.config import Settings
from hub.infra import mongo, rabbit, topology
from hub.infra.topology import Topology
from hub.service import outgoing
from hub.service.intake import IntakeService
from hub.service.ports import OutMessage
from hub.service.updates import LegalSteps, UpdatesService
from partner_sdk import messages as m

log = logging.getLogger(__name__)


@dataclass
class Hub:
    """A running hub worker: consumers of ``hub.claims`` and ``hub.partner-updates``,
    the outbox relay, and the connections they share."""

    settings: Settings
    topology: Topology
    client: AsyncMongoClient[dict[str, Any]]
    store: mongo.MongoStore
    partners: mongo.MongoPartnerDirectory
    documents: mongo.GridFSDocuments
    connection: AbstractRobustConnection
    publisher: rabbit.RabbitPublisher
    consumers: list[rabbit.BatchConsumer] = field(default_factory=list)
    relay: rabbit.OutboxRelay | None = None
    channels: list[AbstractChannel] = field(default_factory=list)
    lease: asyncio.Task[None] | None = None

    async def reconcile_batches(self) -> list[OutMessage]:
        out: list[OutMessage] = []
        for creditor, batch in await self.store.open_batches():
            msg = await self.store.reconcile(creditor, batch, _reconciliation(creditor, batch))
            if msg is not None:
                out.append(msg)
        return out

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay:
            await self.relay.stop()
        if self.lease:
            self.lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lease
            with contextlib.suppress(Exception):  # a stopped worker leaves no lease behind
                await self.store.db.workers.delete_one({"_id": self.store.worker_id})
        await self.connection.close()
        await self.client.close()


def _reconciliation(creditor: str, batch: str) -> Any:
    def build(totals: Mapping[str, int]) -> OutMessage:
        return outgoing.batch_reconciled(
            m.BatchReconciled(
                creditor_id=creditor,
                batch_id=batch,
                expected=totals["expected"],
                received=totals.get("received", 0),
                accepted=totals.get("accepted", 0),
                duplicate=totals.get("duplicate", 0),
                amended=totals.get("amended", 0),
                withdrawn=totals.get("withdrawn", 0),
                rejected=totals.get("rejected", 0),
                completed_at=dt.datetime.now(dt.UTC),
            )
        )

    return build


def legal_steps_from_catalog() -> LegalSteps:
    """The legal steps of each country, from the country catalog (data files)."""
    from hub.domain.catalog import load_catalog

    return load_catalog().legal_steps


async def open_store(
    settings: Settings,
) -> tuple[AsyncMongoClient[dict[str, Any]], mongo.MongoStore]:
    client = mongo.connect(settings.mongo_url)
    store = mongo.MongoStore(client, settings.mongo_db)
    await mongo.ensure_indexes(store.db)
    return client, store


async def declare_topology(connection: AbstractRobustConnection, settings: Settings) -> Topology:
    topo = Topology(settings.namespace, settings.delivery_limit)
    async with connection.channel() as ch:
        await topology.declare_hub(ch, topo)
        await topology.declare_creditor(ch, topo, settings.creditor_id)
    return topo


async def start_hub(settings: Settings | None = None, *, consume: bool = True) -> Hub:
    """Connect, declare, index, and (with ``consume``) start consuming."""
    settings = settings or Settings()
    client, store = await open_store(settings)
    try:
        connection = await rabbit.connect(settings.amqp_url)
    except BaseException:
        await client.close()
        raise
    topo = await declare_topology(connection, settings)
    pub_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    publisher = rabbit.RabbitPublisher(pub_channel, topo)
    partners = mongo.MongoPartnerDirectory(store.db)
    documents = mongo.GridFSDocuments(store.db)
    hub = Hub(
        settings,
        topo,
        client,
        store,
        partners,
        documents,
        connection,
        publisher,
        channels=[pub_channel],
    )
    if not consume:
        return hub
    in_flight = rabbit.InFlight()
    intake = IntakeService(
        store,
        partners,
        default_creditor=settings.creditor_id,
        max_body_bytes=settings.max_claim_bytes,
    )
    updates = UpdatesService(
        store,
        partners,
        documents,
        legal_steps=legal_steps_from_catalog(),
        max_body_bytes=settings.max_update_bytes,
    )
    for queue, handler, name in (
        (topo.hub_claims, intake.handle, "claims"),
        (topo.hub_updates, updates.handle, "updates"),
    ):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.prefetch)
        consumer = rabbit.BatchConsumer(
            channel,
            queue,
            handler,
            publisher,
            store.mark_sent,
            batch_max=settings.batch_max,
            batch_wait_ms=settings.batch_wait_ms,
            linger_min=settings.batch_linger_min,
            name=name,
            in_flight=in_flight,
        )
        await consumer.start()
        hub.consumers.append(consumer)
        hub.channels.append(channel)
    hub.relay = rabbit.OutboxRelay(
        store,
        publisher,
        grace_s=settings.outbox_grace_s,
        poll_s=settings.outbox_poll_s,
        reconcile=hub.reconcile_batches,
        orphan_s=settings.outbox_orphan_s,
        in_flight=in_flight,
    )
    hub.relay.start()
    hub.lease = asyncio.create_task(_keep_lease(store, settings), name="lease")
    log.info(
        "hub worker %s consuming %s and %s", store.worker_id, topo.hub_claims, topo.hub_updates
    )
    return hub


async def _keep_lease(store: mongo.MongoStore, settings: Settings) -> None:
    """Note this worker alive; end what workers that went silent left open."""
    while True:
        try:
            await store.heartbeat(settings.worker_stale_s)
        except Exception as e:  # the database may be away; the next beat tries again
            log.warning("worker heartbeat: %r", e)
        await asyncio.sleep(settings.worker_heartbeat_s)


async def run_forever(settings: Settings | None = None) -> None:
    """The worker of ``hubctl run``: traced batches, and Prometheus metrics on
    ``metrics_port`` (0: none)."""
    from hub.infra import observability

    settings = settings or Settings()
    observability.setup_tracing()
    hub = await start_hub(settings)
    metrics = observability.instrument_hub(hub)
    if settings.metrics_port:
        observability.start_metrics_server(metrics.registry, settings.metrics_port)
    try:
        await asyncio.Event().wait()
    finally:
        await hub.close()
