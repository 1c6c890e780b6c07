"""AMQP helpers of the benchmark: pipelined publishing with confirms, queue depths, and
the broker's management API (versions, the broker's process id, clean-up)."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from collections.abc import Iterable
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractExchange


class PublishFailed(RuntimeError):
    """The broker refused (nacked or returned) a message the benchmark published."""


def message(
    body: bytes,
    *,
    message_id: str,
    type: str,
    user_id: str | None = None,
    correlation_id: str | None = None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        message_id=message_id,
        type=type,
        user_id=user_id,
        correlation_id=correlation_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=dt.datetime.now(dt.UTC),
    )


async def publish_stream(
    exchange: AbstractExchange,
    items: Iterable[tuple[str, aio_pika.Message]],
    *,
    window: int,
) -> int:
    """Publish ``(routing key, message)`` pairs on a confirming channel with up to
    ``window`` confirms outstanding; ``items`` is consumed lazily. Returns the count."""
    slots = asyncio.Semaphore(window)
    errors: list[BaseException] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(key: str, msg: aio_pika.Message) -> None:
        try:
            await exchange.publish(msg, routing_key=key, mandatory=True)
        except Exception as e:
            errors.append(e)
        finally:
            slots.release()

    sent = 0
    for key, msg in items:
        await slots.acquire()
        if errors:
            break
        task = asyncio.create_task(one(key, msg))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
    if pending:
        await asyncio.gather(*pending)
    if errors:
        raise PublishFailed(f"{len(errors)} publish(es) failed, first: {errors[0]!r}")
    return sent


async def depth(channel: AbstractChannel, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: exact, no statistics delay)."""
    q = await channel.declare_queue(queue, passive=True)
    result = q.declaration_result
    return int(result.message_count or 0)


async def consumers(channel: AbstractChannel, queue: str) -> int:
    q = await channel.declare_queue(queue, passive=True)
    return int(q.declaration_result.consumer_count or 0)


class Management:
    """The RabbitMQ management API: versions, the broker's pid, and the run's clean-up."""

    def __init__(self, url: str, vhost: str = "/") -> None:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        self.base = f"{parts.scheme or 'http'}://{parts.hostname or '127.0.0.1'}{port}/api"
        self.auth = (
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
        )
        self.vhost = urllib.parse.quote(vhost, safe="")

    async def _get(self, path: str) -> Any:
        async with httpx.AsyncClient(auth=self.auth, timeout=15) as c:
            r = await c.get(self.base + path)
            r.raise_for_status()
            return r.json()

    async def overview(self) -> dict[str, Any]:
        data = await self._get("/overview")
        return dict(data)

    async def broker_pid(self) -> int | None:
        """The broker's OS process id, when it runs on this machine."""
        overview = await self.overview()
        nodes = await self._get("/nodes")
        for node in nodes:
            if node.get("name") == overview.get("node") and node.get("os_pid"):
                return int(node["os_pid"])
        return None

    async def delete_namespace(self, namespace: str) -> int:
        """Delete every queue and exchange whose name starts with ``namespace``."""
        if not namespace:
            return 0
        deleted = 0
        async with httpx.AsyncClient(auth=self.auth, timeout=30) as c:
            for kind in ("queues", "exchanges"):
                r = await c.get(f"{self.base}/{kind}/{self.vhost}?columns=name")
                r.raise_for_status()
                for item in r.json():
                    name = str(item["name"])
                    if name.startswith(namespace):
                        quoted = urllib.parse.quote(name, safe="")
                        await c.delete(f"{self.base}/{kind}/{self.vhost}/{quoted}")
                        deleted += 1
        return deleted
