"""The asynchronous partner client: receive the hub's messages, send reports.

A partner connects with its own AMQP user (``amqp://<partner_id>:<password>@host/`` or
``amqps://``). The hub delivers ``case.assigned``, ``case.updated``, ``case.recalled``,
``settlement.decided`` and ``error.reply`` to the queue ``partner.<partner_id>``; the
partner publishes its reports to the exchange ``partners.in`` with the routing key
``<partner_id>.<type>`` and ``user_id`` set to its user, which the broker checks.

Downloads: ``download_document`` publishes a ``document.requested`` and waits for the
answer in the same queue, a ``document.content`` or an ``error.reply`` whose
``in_reply_to`` is the request's message id. Answers to downloads go to the waiting call,
never to ``deliveries()``, and are acknowledged at once (a late one is logged and
dropped: a download is safe to repeat). While a download waits with ``prefetch``
deliveries held unsettled, the client takes the messages ahead of the answer past the
prefetch window (``basic.get``), so holding deliveries cannot block a download.

Delivery policy (queue ``partner.<partner_id>``):

- a delivery is acknowledged only when the caller calls ``Delivery.ack()``;
  ``Delivery.reject(requeue=True)`` gives it back, ``reject()`` dead-letters it;
- the hub delivers at least once: a message id already handled (acknowledged or
  rejected without requeue) among the last 10,000 is acknowledged without being yielded
  again, and a copy that arrives while the first is still being handled is settled
  together with it;
- a message that cannot be parsed (unknown ``type``, body not matching the contract)
  is logged and rejected without requeue, so it goes to the hub's dead-letter queue.

Sending: every report is validated against the contract before anything is sent
(``InvalidMessage``), published persistent on a channel with publisher confirms, and
the call returns once the broker has confirmed it (``PublishFailed`` otherwise). Each
report has a ``message_id`` (a new uuid4 unless given); the hub applies a message id at
most once, so retrying a failed call with the same ``message_id`` is safe.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import logging
import typing
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from partner_sdk import messages as m
from partner_sdk.errors import (
    ConnectionFailed,
    DownloadFailed,
    DownloadTimeout,
    HubError,
    InvalidMessage,
    PublishFailed,
)

__all__ = [
    "DEDUPE_WINDOW",
    "HUB_MESSAGE_TYPES",
    "REPORT_TYPES",
    "Delivery",
    "DeliveryStream",
    "DownloadedDocument",
    "HubMessage",
    "PartnerClient",
    "RecentIds",
    "build",
    "parse_hub_message",
]

log = logging.getLogger("partner_sdk")

#: How many handled message ids the client remembers to drop repeated deliveries.
DEDUPE_WINDOW: Final = 10_000

HubMessage = m.CaseAssigned | m.CaseUpdated | m.CaseRecalled | m.SettlementDecided | m.ErrorReply

#: The messages the hub delivers to a partner (``deliveries()``), by AMQP ``type``; the
#: answers to downloads (``document.content``) go to ``download_document`` instead.
HUB_MESSAGE_TYPES: Final[Mapping[str, type[m.Message]]] = {
    t.TYPE: t for t in typing.get_args(HubMessage)
}

#: The reports a partner sends to the hub, by AMQP ``type``.
REPORT_TYPES: Final[Mapping[str, type[m.Message]]] = {
    t.TYPE: t
    for t in (
        m.CaseAccepted,
        m.CaseDeclined,
        m.CaseActivity,
        m.CasePromise,
        m.CasePayment,
        m.SettlementProposed,
        m.CaseDispute,
        m.CaseLegalStep,
        m.CaseClosed,
        m.DocumentAdded,
    )
}

#: Errors of the broker connection, translated to the SDK's own at this boundary.
_AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,  # includes TimeoutError
    RuntimeError,  # includes aiormq's ChannelInvalidStateError
)

MessageT = TypeVar("MessageT", bound=m.Message)
Amount = Decimal | str | int
Day = dt.date | str
_Answer = m.DocumentContent | m.ErrorReply


@dataclasses.dataclass(frozen=True)
class DownloadedDocument:
    """A document of a case, as ``download_document`` returns it: its content matches the
    size and sha256 it was uploaded with."""

    case_id: str
    document_id: str
    kind: m.DocumentKind
    filename: str
    content_type: str
    sha256: str
    content: bytes = dataclasses.field(repr=False)

    @property
    def size(self) -> int:
        return len(self.content)


class RecentIds:
    """The last ``maxsize`` ids seen, least recently used first out."""

    def __init__(self, maxsize: int = DEDUPE_WINDOW) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str) or item not in self._ids:
            return False
        self._ids.move_to_end(item)
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str) -> None:
        self._ids[item] = None
        self._ids.move_to_end(item)
        while len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)

    def discard(self, item: str) -> None:
        self._ids.pop(item, None)


class _Raw(Protocol):
    """What the client needs of an incoming AMQP message (aio-pika's, or a test double)."""

    @property
    def body(self) -> bytes: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def reject(self, requeue: bool = False) -> None: ...


class Delivery:
    """One message from the hub. Settle it with ``ack()`` (or ``reject()``) once handled.

    ``message`` is the parsed hub message; an ``ErrorReply`` is the hub's refusal of one
    of your reports (``raise_for_error()`` turns it into a ``HubError``).
    """

    def __init__(self, client: PartnerClient, raw: _Raw, message: HubMessage) -> None:
        self._client = client
        self._raw = raw
        self._copies: list[_Raw] = []
        self.message: HubMessage = message
        self.message_id: str = raw.message_id or ""
        self.settled = False

    @property
    def type(self) -> str:
        return self.message.TYPE

    @property
    def case_id(self) -> str | None:
        return self.message.case_id

    def __repr__(self) -> str:
        return f"<Delivery {self.type} {self.message_id} case={self.case_id}>"

    def raise_for_error(self) -> None:
        """Raise ``HubError`` if this delivery is an ``error.reply``."""
        if isinstance(self.message, m.ErrorReply):
            raise HubError(self.message)

    async def ack(self) -> None:
        """Acknowledge: the message is handled and will not be delivered again."""
        await self._settle("ack", requeue=False)

    async def reject(self, *, requeue: bool = False) -> None:
        """Give the message back (``requeue=True``) or dead-letter it (the default)."""
        await self._settle("reject", requeue=requeue)

    async def _settle(self, how: str, *, requeue: bool) -> None:
        if self.settled:
            return
        self.settled = True
        # A failure here means the channel was lost: the broker delivers the message
        # again, and the client drops that copy as already handled (unless requeued).
        await _quietly(self._raw, how, requeue=requeue)
        # Copies of the same message id (a hub retry, or the redelivery after a lost
        # channel) follow the first: back to the queue with it, or acknowledged. One
        # requeued copy then comes back as a new delivery and the others join it.
        for copy in self._copies:
            await _quietly(copy, "reject" if requeue else "ack", requeue=requeue)
        # Only an acknowledged id counts as handled: a dead-lettered one that the
        # coordinator replays must reach the partner again.
        self._client._settled(self, handled=how == "ack")


async def _quietly(raw: _Raw, how: str, *, requeue: bool) -> None:
    try:
        if how == "ack":
            await raw.ack()
        else:
            await raw.reject(requeue=requeue)
    except _AMQP_ERRORS as e:
        log.warning("could not %s message %s (%s): %s", how, raw.message_id, raw.type, _text(e))


class _RobustConnection(aio_pika.RobustConnection):
    """Closes itself when the first connect fails: aio-pika would otherwise schedule the
    close from ``__del__``, which warns when that runs off the loop's thread."""

    async def connect(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (override)
        try:
            await super().connect(timeout)
        except BaseException:
            await self.close()
            raise


class DeliveryStream:
    """Async iterator of deliveries; ends after ``limit`` of them or ``idle_timeout`` s
    without one (both optional: by default it runs until the client disconnects)."""

    def __init__(
        self, client: PartnerClient, *, limit: int | None, idle_timeout: float | None
    ) -> None:
        self._client = client
        self._left = limit
        self._idle = idle_timeout

    def __aiter__(self) -> DeliveryStream:
        return self

    async def __anext__(self) -> Delivery:
        if self._left is not None and self._left <= 0:
            raise StopAsyncIteration
        delivery = await self._client.next_delivery(self._idle)
        if delivery is None:
            raise StopAsyncIteration
        if self._left is not None:
            self._left -= 1
        return delivery


class PartnerClient:
    """A partner's connection to the OneWindow hub. Use it as an async context manager::

        async with PartnerClient("amqps://acme-de:secret@hub.example/") as client:
            async for delivery in client.deliveries():
                ...
                await delivery.ack()

    ``partner_id`` defaults to the URL's user name (the broker only accepts reports whose
    ``user_id`` is the connection's user). ``namespace`` prefixes every exchange and queue
    name (test and tenant set-ups; empty in production). ``prefetch`` bounds the
    deliveries held unacknowledged at once. ``publish_timeout`` bounds the wait for the
    broker's confirm of each report.
    """

    def __init__(
        self,
        url: str,
        partner_id: str | None = None,
        *,
        namespace: str = "",
        prefetch: int = 16,
        publish_timeout: float = 30.0,
        dedupe_window: int = DEDUPE_WINDOW,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ConnectionFailed(f"URL scheme must be amqp or amqps, not {parts.scheme!r}")
        user = urllib.parse.unquote(parts.username) if parts.username else None
        pid = partner_id or user
        if not pid:
            raise ConnectionFailed("no partner_id given and the URL has no user name")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.url = url
        self.partner_id: str = pid
        self.namespace = namespace
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.exchange_name = f"{namespace}partners.in"
        self.queue_name = f"{namespace}partner.{pid}"
        self._handled = RecentIds(dedupe_window)
        self._in_flight: dict[str, Delivery] = {}
        #: downloads waiting for their answer, by the request's message id
        self._waiting: dict[str, asyncio.Future[_Answer]] = {}
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._consume_lock = asyncio.Lock()

    # --- connection ---------------------------------------------------------------------

    async def __aenter__(self) -> PartnerClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connect(self) -> None:
        """Connect (reconnecting by itself afterwards) and check the partner's queue."""
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self.url,
                client_properties={"connection_name": f"onewindow-partner-sdk:{self.partner_id}"},
                connection_class=_RobustConnection,
            )
        except _AMQP_ERRORS as e:
            raise ConnectionFailed(
                f"partner {self.partner_id} could not connect to the hub's broker: {_text(e)}"
            ) from e
        try:
            publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await publish.get_exchange(self.exchange_name, ensure=False)
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=self.prefetch)
            # Passive: the hub declares the queue, the partner's user may only read it.
            self._queue = await consume.declare_queue(self.queue_name, passive=True)
        except _AMQP_ERRORS as e:
            await connection.close()
            raise ConnectionFailed(
                f"partner {self.partner_id} could not open queue {self.queue_name}: {_text(e)} "
                "(is the partner registered, and the namespace right?)"
            ) from e
        self._connection = connection
        self._publish_channel = publish

    async def disconnect(self) -> None:
        """Close the connection. Unacknowledged deliveries go back to the queue."""
        connection, self._connection = self._connection, None
        self._exchange = self._queue = self._publish_channel = None
        self._consumer_tag = None
        if connection is not None and not connection.is_closed:
            await connection.close()

    # --- receiving ------------------------------------------------------------------------

    def deliveries(
        self, *, limit: int | None = None, idle_timeout: float | None = None
    ) -> DeliveryStream:
        """``async for delivery in client.deliveries():`` the hub's messages, in order."""
        return DeliveryStream(self, limit=limit, idle_timeout=idle_timeout)

    # A timeout that ends in None, not an exception, is the point of this method.
    async def next_delivery(self, timeout: float | None = None) -> Delivery | None:  # noqa: ASYNC109
        """The next delivery, or ``None`` if none arrives within ``timeout`` seconds."""
        await self._consume()
        try:
            return await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return None

    async def _consume(self) -> None:
        async with self._consume_lock:
            if self._consumer_tag is not None:
                return
            if self._queue is None:
                raise ConnectionFailed("the client is not connected: use `async with` or connect()")
            self._consumer_tag = await self._queue.consume(self._on_message)

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        await self._receive(raw)

    async def _receive(self, raw: _Raw) -> Delivery | None:
        """Parse, dedupe and queue one incoming message; the delivery queued, if any."""
        mid = raw.message_id or ""
        if mid and mid in self._handled:
            log.info("partner %s: message %s (%s) already handled", self.partner_id, mid, raw.type)
            await _quietly(raw, "ack", requeue=False)
            return None
        first = self._in_flight.get(mid) if mid else None
        if first is not None:
            first._copies.append(raw)
            return None
        try:
            if raw.type == m.DocumentContent.TYPE:
                await self._answer(raw, _parse(m.DocumentContent, raw.body))
                return None
            message = parse_hub_message(raw.type, raw.body)
        except InvalidMessage as e:
            log.error(
                "partner %s: message %s dead-lettered, it cannot be parsed: %s",
                self.partner_id,
                mid,
                e,
            )
            await _quietly(raw, "reject", requeue=False)
            return None
        if isinstance(message, m.ErrorReply) and (
            message.in_reply_to in self._waiting
            or message.in_reply_to_type == m.DocumentRequested.TYPE
        ):
            await self._answer(raw, message)
            return None
        delivery = Delivery(self, raw, message)
        if mid:
            self._in_flight[mid] = delivery
        self._inbox.put_nowait(delivery)
        return delivery

    async def _answer(self, raw: _Raw, answer: _Answer) -> None:
        """Hand the answer to a download to the call waiting for it, and acknowledge it."""
        waiting = self._waiting.get(answer.in_reply_to)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
        else:
            log.warning(
                "partner %s: %s %s answers download %s, which no call waits for any more",
                self.partner_id,
                answer.TYPE,
                raw.message_id,
                answer.in_reply_to,
            )
        await _quietly(raw, "ack", requeue=False)
        if raw.message_id:
            self._handled.add(raw.message_id)

    async def _await_answer(self, future: asyncio.Future[_Answer], deadline: float) -> _Answer:
        """The answer, by the event loop's time ``deadline`` (``TimeoutError`` otherwise).
        When the prefetch window is full of unsettled deliveries the broker sends nothing
        more: the messages ahead of the answer are then taken with ``basic.get``."""
        loop = asyncio.get_running_loop()
        while not future.done():
            while not future.done() and len(self._in_flight) >= self.prefetch:
                if not await self._pull():
                    break
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            await asyncio.wait({future}, timeout=min(left, 0.5))
        return future.result()

    async def _pull(self) -> bool:
        """Take one message past the prefetch window; False if there was none."""
        if self._queue is None:
            return False
        try:
            raw = await self._queue.get(no_ack=False, fail=False)
        except _AMQP_ERRORS as e:
            log.warning("partner %s: could not get a message: %s", self.partner_id, _text(e))
            return False
        if raw is None:
            return False
        await self._receive(raw)
        return True

    def _settled(self, delivery: Delivery, *, handled: bool) -> None:
        if not delivery.message_id:
            return
        self._in_flight.pop(delivery.message_id, None)
        if handled:
            self._handled.add(delivery.message_id)

    # --- sending --------------------------------------------------------------------------

    async def send(self, report: m.Message, *, message_id: str | None = None) -> str:
        """Publish a report model built by the caller; returns its message id.

        Waits for the broker's confirm; raises ``PublishFailed`` without one, and then a
        retry with the same ``message_id`` is safe (the hub applies it once).
        """
        if REPORT_TYPES.get(report.TYPE) is not type(report):
            raise InvalidMessage(report.TYPE or type(report).__name__, "not a partner report")
        return await self._publish(report, _message_id(report.TYPE, message_id))

    async def _publish(self, report: m.Message, mid: str) -> str:
        if self._exchange is None:
            raise PublishFailed(
                "the client is not connected", message_id=mid, message_type=report.TYPE
            )
        message = aio_pika.Message(
            report.to_json(),
            content_type="application/json",
            type=report.TYPE,
            message_id=mid,
            correlation_id=getattr(report, "case_id", None),
            user_id=self.partner_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=dt.datetime.now(dt.UTC),
            app_id="onewindow-partner-sdk",
        )
        try:
            await self._exchange.publish(
                message,
                routing_key=f"{self.partner_id}.{report.TYPE}",
                mandatory=True,
                timeout=self.publish_timeout,
            )
        except _AMQP_ERRORS as e:
            raise PublishFailed(
                f"{report.TYPE} {mid} of partner {self.partner_id} was not confirmed: {_text(e)}; "
                "retry with the same message_id",
                message_id=mid,
                message_type=report.TYPE,
            ) from e
        log.debug("partner %s sent %s %s", self.partner_id, report.TYPE, mid)
        return mid

    async def _report(
        self,
        model: type[m.Message],
        fields: dict[str, Any],
        *,
        occurred_at: dt.datetime | None,
        message_id: str | None,
    ) -> str:
        fields["occurred_at"] = occurred_at or _now()
        report = build(model, fields)
        return await self.send(report, message_id=message_id)

    async def accept(
        self,
        case_id: str,
        assignment_id: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Accept an assigned case (``case.accepted``). Returns the message id; a retry
        with the same ``message_id`` is safe."""
        return await self._report(
            m.CaseAccepted,
            {"case_id": case_id, "assignment_id": assignment_id},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def decline(
        self,
        case_id: str,
        reason: str,
        *,
        assignment_id: str | None = None,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Decline an assigned case (``case.declined``); the hub places it elsewhere.
        Returns the message id; a retry with the same ``message_id`` is safe."""
        return await self._report(
            m.CaseDeclined,
            {"case_id": case_id, "reason": reason, "assignment_id": assignment_id},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def report_activity(
        self,
        case_id: str,
        kind: m.ActivityKind | str,
        outcome: m.ActivityOutcome | str,
        note: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Report a call, e-mail, letter, meeting... (``case.activity``). Returns the
        message id; a retry with the same ``message_id`` is safe."""
        return await self._report(
            m.CaseActivity,
            {"case_id": case_id, "kind": kind, "outcome": outcome, "note": note},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def report_promise(
        self,
        case_id: str,
        amount: Amount,
        currency: str,
        due_date: Day,
        installments: Iterable[m.Installment | tuple[Day, Amount]] = (),
        note: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Report a promise to pay, optionally a payment plan of ``(due_date, amount)``
        installments (``case.promise``). Returns the message id; a retry with the same
        ``message_id`` is safe."""
        plan = [
            i.model_dump(mode="json")
            if isinstance(i, m.Installment)
            else {"due_date": i[0], "amount": _money(i[1])}
            for i in installments
        ]
        return await self._report(
            m.CasePromise,
            {
                "case_id": case_id,
                "amount": _money(amount),
                "currency": currency,
                "due_date": due_date,
                "installments": plan,
                "note": note,
            },
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def report_payment(
        self,
        case_id: str,
        amount: Amount,
        currency: str,
        reference: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Report a payment received (``case.payment``). Returns the message id; a retry
        with the same ``message_id`` is safe."""
        return await self._report(
            m.CasePayment,
            {
                "case_id": case_id,
                "amount": _money(amount),
                "currency": currency,
                "reference": reference,
            },
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def propose_settlement(
        self,
        case_id: str,
        settlement_id: str,
        amount: Amount,
        currency: str,
        terms: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Propose a settlement (``settlement.proposed``); the answer comes as a
        ``SettlementDecided`` delivery. Returns the message id; a retry with the same
        ``message_id`` is safe."""
        return await self._report(
            m.SettlementProposed,
            {
                "case_id": case_id,
                "settlement_id": settlement_id,
                "amount": _money(amount),
                "currency": currency,
                "terms": terms,
            },
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def report_dispute(
        self,
        case_id: str,
        status: str,
        reason: str,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Report a dispute ``opened`` (the case goes on hold) or ``resolved``
        (``case.dispute``). Returns the message id; a retry with the same ``message_id``
        is safe."""
        return await self._report(
            m.CaseDispute,
            {"case_id": case_id, "status": status, "reason": reason},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def report_legal_step(
        self,
        case_id: str,
        country: str,
        step: str,
        phase: m.Phase | str,
        note: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Report a country-specific legal or enforcement step (``case.legal_step``);
        ``step`` is a code of the hub's country catalog (e.g. ``mahnbescheid`` in DE).
        Returns the message id; a retry with the same ``message_id`` is safe."""
        return await self._report(
            m.CaseLegalStep,
            {"case_id": case_id, "country": country, "step": step, "phase": phase, "note": note},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def close(
        self,
        case_id: str,
        close_code: m.CloseCode | str,
        note: str | None = None,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Close a case (``case.closed``) with a close code (paid, settled, ...). This
        reports on the case; it does not close the connection (``disconnect()`` does).
        Returns the message id; a retry with the same ``message_id`` is safe."""
        return await self._report(
            m.CaseClosed,
            {"case_id": case_id, "close_code": close_code, "note": note},
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def upload_document(
        self,
        case_id: str,
        document_id: str,
        kind: m.DocumentKind | str,
        filename: str,
        content: bytes,
        content_type: str,
        *,
        occurred_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> str:
        """Upload a document of a case (``document.added``, at most 20 MiB); the hub
        checks size and sha256 and stores it. Returns the message id; a retry with the
        same ``message_id`` is safe."""
        if not isinstance(content, bytes | bytearray | memoryview):
            raise InvalidMessage(m.DocumentAdded.TYPE, "content must be bytes")
        data = bytes(content)
        return await self._report(
            m.DocumentAdded,
            {
                "case_id": case_id,
                "document_id": document_id,
                "kind": kind,
                "filename": filename,
                "content_type": content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "content_base64": base64.b64encode(data).decode("ascii"),
            },
            occurred_at=occurred_at,
            message_id=message_id,
        )

    async def download_document(
        self,
        case_id: str,
        document_id: str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 (its expiry is a DownloadTimeout naming the download)
        message_id: str | None = None,
    ) -> DownloadedDocument:
        """Download a document of a case assigned to you (``document.requested``), checked
        against its size and sha256. Raises ``HubError`` if the hub refuses
        (``unknown_case``, ``not_assignee``, ``unknown_document``), ``DownloadTimeout``
        without an answer within ``timeout`` seconds, ``DownloadFailed`` if the content
        does not match. A download changes nothing: retrying it is safe."""
        request = build(
            m.DocumentRequested,
            {"case_id": case_id, "document_id": document_id, "occurred_at": _now()},
        )
        mid = _message_id(request.TYPE, message_id)
        if mid in self._waiting:
            raise InvalidMessage(request.TYPE, f"a download {mid} is waiting already")
        await self._consume()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future: asyncio.Future[_Answer] = loop.create_future()
        self._waiting[mid] = future
        try:
            await self._publish(request, mid)
            answer = await self._await_answer(future, deadline)
        except TimeoutError:
            raise DownloadTimeout(
                f"no answer from the hub to download {mid} of document {document_id} of case "
                f"{case_id} within {timeout} s; retry (a download is safe to repeat)",
                message_id=mid,
                case_id=case_id,
                document_id=document_id,
            ) from None
        finally:
            del self._waiting[mid]
        if isinstance(answer, m.ErrorReply):
            raise HubError(answer)
        return _downloaded(answer, mid)


# --- parsing and building -------------------------------------------------------------------


def _downloaded(answer: m.DocumentContent, message_id: str) -> DownloadedDocument:
    """The document of a ``document.content``; ``DownloadFailed`` if it is not what the
    hub says it is."""
    try:
        content = base64.b64decode(answer.content_base64, validate=True)
    except ValueError:  # binascii.Error is one
        content = b""
    digest = hashlib.sha256(content).hexdigest()
    if len(content) != answer.size or digest != answer.sha256:
        raise DownloadFailed(
            f"document {answer.document_id} of case {answer.case_id} came back damaged: "
            f"{len(content)} bytes of sha256 {digest}, not {answer.size} of {answer.sha256}",
            message_id=message_id,
            case_id=answer.case_id,
            document_id=answer.document_id,
        )
    return DownloadedDocument(
        case_id=answer.case_id,
        document_id=answer.document_id,
        kind=answer.kind,
        filename=answer.filename,
        content_type=answer.content_type,
        sha256=answer.sha256,
        content=content,
    )


def _parse(model: type[MessageT], body: bytes) -> MessageT:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise InvalidMessage(model.TYPE, _summary(e), _errors(e)) from e


def parse_hub_message(message_type: str | None, body: bytes) -> HubMessage:
    """The hub message of AMQP ``type`` ``message_type``; ``InvalidMessage`` if it is not one."""
    model = HUB_MESSAGE_TYPES.get(message_type or "")
    if model is None:
        raise InvalidMessage(
            str(message_type),
            "not a message the hub sends to partners; expected one of "
            + ", ".join(sorted(HUB_MESSAGE_TYPES)),
        )
    parsed = _parse(model, body)
    assert isinstance(parsed, HubMessage)
    return parsed


def build(model: type[MessageT], fields: Mapping[str, Any]) -> MessageT:
    """Validate ``fields`` as the JSON the hub will receive; ``InvalidMessage`` if invalid.

    Validating the JSON form (not Python objects) checks exactly what the hub checks:
    amounts must be decimal strings (a ``Decimal`` or ``int`` is written as one, a
    ``float`` is refused), dates ``YYYY-MM-DD``, timestamps aware.
    """
    try:
        text = json.dumps({k: v for k, v in fields.items() if v is not None}, default=_json)
    except (TypeError, ValueError) as e:
        raise InvalidMessage(model.TYPE, str(e)) from e
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise InvalidMessage(model.TYPE, _summary(e), _errors(e)) from e


def _json(value: object) -> object:
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone: use UTC")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} {value!r} cannot be sent")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _text(e: BaseException) -> str:
    """An exception as text; some of aiormq's fail to format themselves."""
    try:
        return repr(e)
    except Exception:
        return type(e).__name__


def _money(value: object) -> object:
    """A Decimal or int as a plain decimal string; anything else as is (validated later)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _message_id(message_type: str, message_id: str | None) -> str:
    if message_id is None:
        return uuid.uuid4().hex
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 200:
        raise InvalidMessage(message_type, "message_id must be a string of 1 to 200 characters")
    return message_id


def _errors(e: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": err["loc"], "msg": err["msg"], "type": err["type"]}
        for err in e.errors(include_url=False)
    ]


def _summary(e: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
        for err in e.errors(include_url=False)[:5]
    ]
    more = e.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
