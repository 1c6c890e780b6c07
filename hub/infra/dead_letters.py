"""Dead letters in ``hub.dead``: list them with their reason, replay one.

Listing peeks through the management API (``POST /api/queues/<vhost>/<q>/get`` with
``ackmode=ack_requeue_true``): the letters stay in the queue. Each carries RabbitMQ's
``x-death`` header: why it died (``rejected``, ``delivery_limit``, ``expired``...), in
which queue, when, and the exchange and routing keys it was first published with.

Replaying takes the letter out of ``hub.dead`` and publishes a copy to its original
exchange and routing key (from ``x-death``), with its properties, on a confirming
channel; the letter is acknowledged only once the broker confirmed the copy. Letters
passed over while looking for it are returned to the queue. A letter published by a
partner carries that partner's ``user_id``, which RabbitMQ lets only a user tagged
``impersonator`` republish: without that tag the copy is refused and the letter stays.

Peeking requeues: on a quorum queue each peek counts as a delivery. ``hub.dead`` has
no delivery limit on RabbitMQ 3.x; on 4.x quorum queues default to 20 deliveries, so
``hub.dead`` should be declared with ``x-delivery-limit: -1`` there.

DeadLetterError          a replay could not be done (letter not found, copy refused)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from hub.infra.topology import existing_queue

__all__ = ["DeadLetter", "DeadLetterError", "DeadLetters", "letter_id"]


class DeadLetterError(Exception):
    """A dead letter could not be replayed; nothing was lost (it stays in the queue)."""


def letter_id(message_id: str | None, body: bytes) -> str:
    """A stable id of a letter in the queue: its message id and a digest of its body."""
    digest = hashlib.sha256(body).hexdigest()[:12]
    return f"{(message_id or 'no-id')[:80]}~{digest}"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    message_id: str | None
    type: str | None
    user_id: str | None
    correlation_id: str | None
    reason: str
    queue: str
    exchange: str
    routing_key: str
    died_at: dt.datetime | None
    count: int
    body_excerpt: str
    headers: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "type": self.type,
            "user_id": self.user_id,
            "correlation_id": self.correlation_id,
            "reason": self.reason,
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "died_at": self.died_at.isoformat() if self.died_at else None,
            "count": self.count,
            "body_excerpt": self.body_excerpt,
        }


def _death(headers: Mapping[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death") or []
    if isinstance(deaths, Sequence) and deaths and isinstance(deaths[0], Mapping):
        return dict(deaths[0])
    return {}


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


def _letter(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None,
    type_: str | None,
    user_id: str | None,
    correlation_id: str | None,
    namespace: str,
) -> DeadLetter:
    death = _death(headers)
    keys = death.get("routing-keys") or []
    return DeadLetter(
        id=letter_id(message_id, body),
        message_id=message_id,
        type=type_,
        user_id=user_id,
        correlation_id=correlation_id,
        reason=str(death.get("reason", headers.get("x-first-death-reason", "unknown"))),
        queue=str(death.get("queue", "")).removeprefix(namespace),
        exchange=str(death.get("exchange", "")),
        routing_key=str(keys[0]) if keys else "",
        died_at=_time(death.get("time")),
        count=int(death.get("count", 1) or 1),
        body_excerpt=body[:500].decode("utf-8", "replace"),
        headers=dict(headers),
    )


class DeadLetters:
    """The letters of one dead-letter queue (``topology.hub_dead``)."""

    def __init__(
        self,
        management_url: str,
        queue: str,
        *,
        namespace: str = "",
        vhost: str = "/",
    ) -> None:
        parts = urllib.parse.urlsplit(management_url)
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        base = f"{parts.scheme or 'http'}://{netloc}{parts.path.rstrip('/')}/api"
        self.url = (
            f"{base}/queues/{urllib.parse.quote(vhost, safe='')}/"
            f"{urllib.parse.quote(queue, safe='')}/get"
        )
        self.auth = (
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
        )
        self.queue = queue
        self.namespace = namespace

    async def peek(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` letters from the head of the queue; they stay in it."""
        try:
            async with httpx.AsyncClient(auth=self.auth, timeout=15) as client:
                r = await client.post(
                    self.url,
                    json={"count": limit, "ackmode": "ack_requeue_true", "encoding": "base64"},
                )
                if r.status_code == 404:
                    return []
                r.raise_for_status()
                items = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise DeadLetterError(f"could not read {self.queue}: {e}") from e
        letters = []
        for item in items:
            props = item.get("properties") or {}
            body = base64.b64decode(item.get("payload", ""))
            letters.append(
                _letter(
                    body,
                    props.get("headers") or {},
                    message_id=props.get("message_id"),
                    type_=props.get("type"),
                    user_id=props.get("user_id"),
                    correlation_id=props.get("correlation_id"),
                    namespace=self.namespace,
                )
            )
        return letters

    async def replay(
        self, connection: AbstractRobustConnection, wanted: str, *, by: str, scan: int = 10_000
    ) -> DeadLetter:
        """Republish letter ``wanted`` to where it was first published; remove it."""
        channel = await connection.channel()
        held: list[AbstractIncomingMessage] = []
        try:
            queue = await existing_queue(channel, self.queue)
            found: AbstractIncomingMessage | None = None
            for _ in range(scan):
                msg = await queue.get(no_ack=False, fail=False)
                if msg is None:
                    break
                if letter_id(msg.message_id, msg.body) == wanted:
                    found = msg
                    break
                held.append(msg)
            if found is None:
                raise DeadLetterError(f"dead letter {wanted} is not in {self.queue}")
            letter = self._of(found)
            if not letter.exchange and not letter.queue:
                held.append(found)
                raise DeadLetterError(f"dead letter {wanted} has no x-death origin")
            try:
                await self._republish(connection, found, letter, by)
            except Exception as e:
                held.append(found)
                raise DeadLetterError(
                    f"the broker refused the copy of {wanted} "
                    f"(exchange {letter.exchange!r}, key {letter.routing_key!r}"
                    + (
                        f"; user_id {letter.user_id} needs the impersonator tag"
                        if letter.user_id
                        else ""
                    )
                    + f"): {e!r}"
                ) from e
            await found.ack()
            return letter
        finally:
            for msg in held:
                try:
                    await msg.nack(requeue=True)
                except Exception:  # the channel is gone: the broker requeues them itself
                    break
            await channel.close()

    def _of(self, msg: AbstractIncomingMessage) -> DeadLetter:
        return _letter(
            msg.body,
            dict(msg.headers or {}),
            message_id=msg.message_id,
            type_=msg.type,
            user_id=msg.user_id,
            correlation_id=msg.correlation_id,
            namespace=self.namespace,
        )

    async def _republish(
        self,
        connection: AbstractRobustConnection,
        msg: AbstractIncomingMessage,
        letter: DeadLetter,
        by: str,
    ) -> None:
        headers = {
            k: v
            for k, v in (msg.headers or {}).items()
            if k != "x-death" and not k.startswith(("x-first-death", "x-last-death"))
        }
        headers["x-onewindow-replayed-by"] = by[:100]
        headers["x-onewindow-replayed-at"] = dt.datetime.now(dt.UTC).isoformat()
        copy = aio_pika.Message(
            msg.body,
            headers=headers,
            content_type=msg.content_type,
            content_encoding=msg.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=msg.priority,
            correlation_id=msg.correlation_id,
            reply_to=msg.reply_to,
            message_id=msg.message_id,
            timestamp=msg.timestamp,
            type=msg.type,
            user_id=msg.user_id,
            app_id=msg.app_id,
        )
        # a channel of its own: a refused copy closes it, not the one holding the letters
        async with connection.channel(publisher_confirms=True, on_return_raises=True) as ch:
            if letter.exchange:
                exchange = await ch.get_exchange(letter.exchange, ensure=False)
                await exchange.publish(copy, routing_key=letter.routing_key, mandatory=True)
            else:  # published to the default exchange: straight to its queue
                await ch.default_exchange.publish(
                    copy, routing_key=self.namespace + letter.queue, mandatory=True
                )
