"""The webhook adapter: a partner with an HTTP API, connected to the hub as itself.

It holds the partner's own AMQP user (``PartnerClient``) and does two things:

- **out**: each message of the partner's queue (``case.assigned``, ``case.updated``,
  ``case.recalled``, ``settlement.decided``, ``error.reply``) becomes a signed POST to the
  partner's URL (``delivery``); one at a time, in queue order, so a recall never overtakes
  its assignment;
- **in**: the partner's callbacks arrive on ``POST /callbacks`` (``callbacks``) and go
  to the hub as the partner's reports, with the partner's message ids.

Ack policy of ``partner.<id>``: a message is acknowledged only after the partner
answered 2xx (or 409: it has it already); when the retries are exhausted or the partner
refuses it with a 4xx, it is rejected without requeue and goes to the hub's dead-letter
queue (``hub.dead``) for the coordinator; on shutdown a message in flight is left
unacknowledged and the broker delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from adapters.webhook.callbacks import MAX_BODY_BYTES, create_callback_app
from adapters.webhook.delivery import DeliveryFailed, WebhookSender
from adapters.webhook.server import EmbeddedServer
from adapters.webhook.signing import ReplayGuard
from partner_sdk.client import Delivery, PartnerClient

__all__ = ["WebhookAdapter"]

log = logging.getLogger(__name__)


class WebhookAdapter:
    """Run with ``async with WebhookAdapter(...)`` (or ``start()`` / ``stop()``).

    ``callback_host``/``callback_port`` is where ``POST /callbacks`` listens (port 0:
    any free port; see ``callback_url``). ``secret`` signs the deliveries and verifies
    the callbacks; ``also_accept`` are further secrets accepted on callbacks while the
    partner rotates its secret.
    """

    def __init__(
        self,
        client: PartnerClient,
        sender: WebhookSender,
        secret: bytes | str,
        *,
        callback_host: str = "127.0.0.1",
        callback_port: int = 0,
        also_accept: Sequence[bytes | str] = (),
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
        poll_s: float = 0.5,
    ) -> None:
        self.client = client
        self.sender = sender
        self.partner_id = client.partner_id
        self.guard = ReplayGuard()
        self.app = create_callback_app(
            client,
            [secret, *also_accept],
            partner_id=self.partner_id,
            guard=self.guard,
            clock=clock,
            max_body_bytes=max_body_bytes,
        )
        self.server = EmbeddedServer(self.app, callback_host, callback_port)
        self.poll_s = poll_s
        self.delivered = 0
        self.dead_lettered = 0
        self._pump: asyncio.Task[None] | None = None

    @property
    def callback_url(self) -> str:
        return f"{self.server.url}/callbacks"

    async def start(self) -> None:
        await self.client.connect()
        try:
            await self.server.start()
        except BaseException:
            await self.client.disconnect()
            raise
        self._pump = asyncio.create_task(self._run(), name=f"webhook-adapter:{self.partner_id}")
        log.info(
            "webhook adapter for %s: deliveries to %s, callbacks on %s",
            self.partner_id,
            self.sender.url,
            self.callback_url,
        )

    async def stop(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await self.server.stop()
        await self.sender.aclose()
        await self.client.disconnect()

    async def __aenter__(self) -> WebhookAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Until the delivery loop ends (it only ends by failing or being stopped)."""
        if self._pump is not None:
            await self._pump

    async def _run(self) -> None:
        while True:
            delivery = await self.client.next_delivery(timeout=self.poll_s)
            if delivery is not None:
                await self.forward(delivery)

    async def forward(self, delivery: Delivery) -> None:
        """POST one hub message to the partner; ack it, or dead-letter it."""
        body = delivery.message.to_json()
        mid = delivery.message_id or "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            result = await self.sender.deliver(delivery.type, mid, body)
        except DeliveryFailed as e:
            log.error(
                "partner %s: %s %s (case %s) dead-lettered: %s",
                self.partner_id,
                delivery.type,
                mid,
                delivery.case_id,
                e,
            )
            await delivery.reject()
            self.dead_lettered += 1
            return
        except Exception:
            # A bug or a setting (e.g. a malformed URL): keep the message, not the loop.
            log.exception(
                "partner %s: %s %s (case %s) dead-lettered after an unexpected error",
                self.partner_id,
                delivery.type,
                mid,
                delivery.case_id,
            )
            await delivery.reject()
            self.dead_lettered += 1
            return
        await delivery.ack()
        self.delivered += 1
        log.info(
            "partner %s: %s %s (case %s) delivered (HTTP %d, %d attempt(s))",
            self.partner_id,
            delivery.type,
            mid,
            delivery.case_id,
            result.status,
            result.attempts,
        )
