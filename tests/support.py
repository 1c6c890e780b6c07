"""Helpers shared by the integration and end-to-end tests (real RabbitMQ and MongoDB)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aio_pika
import httpx

from hub.config import Settings

if TYPE_CHECKING:
    from hub.bootstrap import Hub
    from partner_sdk import Delivery, PartnerClient


def unique_settings(**overrides: Any) -> Settings:
    """Settings whose database and AMQP names are this test's own."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "mongo_db": f"test_{tag}",
        "namespace": f"t{tag}.",
        "batch_wait_ms": 5,
        "outbox_grace_s": 3.0,
        "outbox_orphan_s": 6.0,
        "outbox_poll_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def claim_body(
    n: int,
    *,
    country: str = "DE",
    entity: str = "FS-DE-001",
    debtor: int | None = None,
    currency: str = "EUR",
    principal: str = "1000.00",
    batch: tuple[str, int] | None = None,
) -> dict[str, Any]:
    d = n if debtor is None else debtor
    body: dict[str, Any] = {
        "creditor_id": "flexspace",
        "creditor_entity": entity,
        "invoice_number": f"INV-{n:06d}",
        "invoice_date": "2026-09-01",
        "due_date": "2026-10-01",
        "currency": currency,
        "principal": principal,
        "interest": "12.50",
        "fees": "40.00",
        "debtor": {
            "name": f"Debtor {d} Ltd",
            "kind": "company",
            "registration_id": f"REG-{country}-{d}",
            "country": country,
            "address": {"line1": f"{d} Main Street", "city": "City", "country": country},
            "email": f"ap{d}@example.com",
        },
    }
    if batch:
        body["batch_id"], body["batch_size"] = batch
    return body


def partner_url(settings: Settings, pid: str) -> str:
    """The broker URL of a test partner's own AMQP user (``PartnerFactory``'s password)."""
    broker = urllib.parse.urlsplit(settings.amqp_url)
    return f"amqp://{pid}:pw-{pid}@{broker.hostname}:{broker.port or 5672}/"


async def place(hub: Hub, n: int, *, country: str = "DE") -> None:
    """Place claim ``n`` (its own debtor, so its own case) as the creditor would."""
    async with hub.connection.channel() as ch:
        await publish_json(
            ch,
            hub.topology.claims_in,
            "claim.placed",
            claim_body(n, country=country, debtor=n),
            type="claim.placed",
        )


async def next_of(
    client: PartnerClient, wanted: Callable[[Delivery], bool], *, within: float = 30
) -> Delivery:
    """The next delivery that ``wanted`` accepts; others are acknowledged and skipped."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while (left := end - loop.time()) > 0:
        delivery = await client.next_delivery(timeout=left)
        if delivery is None:
            break
        if wanted(delivery):
            return delivery
        await delivery.ack()
    raise AssertionError(f"no wanted delivery within {within} s")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Management:
    """The RabbitMQ management API, for test users and clean-up."""

    def __init__(self, settings: Settings) -> None:
        url = urllib.parse.urlsplit(settings.amqp_management_url)
        self.base = f"{url.scheme}://{url.hostname}:{url.port or 15672}/api"
        self.auth = (url.username or "guest", url.password or "guest")

    def _client(self) -> httpx.Client:
        return httpx.Client(auth=self.auth, timeout=10)

    def add_partner_user(self, partner_id: str, password: str, namespace: str) -> None:
        """A partner's user with the least privilege of the contract."""
        ns = namespace.replace(".", r"\.")
        with self._client() as c:
            c.put(
                f"{self.base}/users/{partner_id}", json={"password": password, "tags": ""}
            ).raise_for_status()
            c.put(
                f"{self.base}/permissions/%2F/{partner_id}",
                json={
                    "configure": "^$",
                    "write": f"^{ns}partners\\.in$",
                    "read": f"^{ns}partner\\.{partner_id}$",
                },
            ).raise_for_status()
            c.put(
                f"{self.base}/topic-permissions/%2F/{partner_id}",
                json={
                    "exchange": f"{namespace}partners.in",
                    "write": f"^{partner_id}\\.",
                    "read": "^$",
                },
            ).raise_for_status()

    def delete_user(self, name: str) -> None:
        with self._client() as c:
            c.delete(f"{self.base}/users/{name}")

    def delete_namespace(self, namespace: str) -> None:
        """Delete the queues and exchanges of a test's namespace."""
        if not namespace:
            return
        with self._client() as c:
            for kind in ("queues", "exchanges"):
                items = c.get(f"{self.base}/{kind}/%2F").json()
                for item in items:
                    if item["name"].startswith(namespace):
                        name = urllib.parse.quote(item["name"], safe="")
                        c.delete(f"{self.base}/{kind}/%2F/{name}")


async def publish_json(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    body: dict[str, Any] | bytes,
    *,
    type: str,
    message_id: str | None = None,
    user_id: str | None = None,
) -> str:
    mid = message_id or uuid.uuid4().hex
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    ex = await channel.get_exchange(exchange, ensure=False)
    await ex.publish(
        aio_pika.Message(
            data,
            message_id=mid,
            type=type,
            user_id=user_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=routing_key,
    )
    return mid


async def drain(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    *,
    idle: float = 1.0,
    limit: float = 30.0,
    until: Callable[[list[aio_pika.abc.AbstractIncomingMessage]], bool] | None = None,
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take messages from ``queue`` until it stays empty for ``idle`` seconds (or ``until``)."""
    q = await channel.get_queue(queue, ensure=False)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    start = last = time.monotonic()
    while time.monotonic() - start < limit:
        msg = await q.get(fail=False, no_ack=True)
        if msg is not None:
            got.append(msg)
            last = time.monotonic()
            if until and until(got):
                break
            continue
        if until is None and time.monotonic() - last > idle:
            break
        if until is not None and until(got):
            break
        await asyncio.sleep(0.05)
    return got


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 30.0, interval: float = 0.1
) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within} s")
