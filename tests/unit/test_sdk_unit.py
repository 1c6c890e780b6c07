"""The partner SDK without a broker: validation before sending, publishing, dedupe, surface."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic

import partner_sdk
from hub.contract import schema_for
from partner_sdk import (
    CaseAssigned,
    ConnectionFailed,
    DocumentContent,
    DownloadFailed,
    DownloadTimeout,
    ErrorReply,
    HubError,
    InvalidMessage,
    PartnerClient,
    PartnerSDKError,
    PublishFailed,
    RecentIds,
    SyncPartnerClient,
)
from partner_sdk import errors as sdk_errors
from partner_sdk.client import build, parse_hub_message
from partner_sdk.messages import CasePayment, DocumentAdded, model_for

URL = "amqp://acme-de:secret@127.0.0.1:5672/"


class FakeExchange:
    """Records what would be published; ``fail`` makes the broker refuse the confirm."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.published: list[tuple[aio_pika.Message, str]] = []
        self.fail = fail
        self.sent = asyncio.Event()

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append((message, routing_key))
        self.sent.set()


def client_with(exchange: FakeExchange, **kwargs: Any) -> PartnerClient:
    client = PartnerClient(URL, **kwargs)
    client._exchange = exchange  # type: ignore[assignment]
    return client


class FakeRaw:
    """An incoming AMQP message: records how it was settled."""

    def __init__(self, body: bytes, message_id: str | None, type: str | None) -> None:
        self.body = body
        self.message_id = message_id
        self.type = type
        self.settled: list[str] = []

    async def ack(self, multiple: bool = False) -> None:
        self.settled.append("ack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("requeue" if requeue else "reject")


def error_reply(mid: str = "r1") -> FakeRaw:
    body = ErrorReply(
        in_reply_to="m1",
        code="unknown_case",
        message="there is no case C1",
        occurred_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    ).to_json()
    return FakeRaw(body, mid, ErrorReply.TYPE)


# --- surface ---------------------------------------------------------------------------------


def test_public_surface_is_pinned() -> None:
    assert partner_sdk.__all__ == [
        "ActivityKind",
        "ActivityOutcome",
        "CaseAccepted",
        "CaseActivity",
        "CaseAssigned",
        "CaseChange",
        "CaseClosed",
        "CaseDeclined",
        "CaseDispute",
        "CaseLegalStep",
        "CasePayment",
        "CasePromise",
        "CaseRecalled",
        "CaseUpdated",
        "CloseCode",
        "ConnectionFailed",
        "Delivery",
        "DeliveryStream",
        "DocumentAdded",
        "DocumentContent",
        "DocumentKind",
        "DocumentRequested",
        "DownloadFailed",
        "DownloadTimeout",
        "DownloadedDocument",
        "ErrorDetail",
        "ErrorReply",
        "HubError",
        "HubMessage",
        "Installment",
        "InvalidMessage",
        "Message",
        "PartnerClient",
        "PartnerSDKError",
        "Phase",
        "PublishFailed",
        "RecentIds",
        "SettlementDecided",
        "SettlementProposed",
        "SyncDelivery",
        "SyncPartnerClient",
    ]
    for name in partner_sdk.__all__:
        assert getattr(partner_sdk, name) is not None


def test_exception_tree() -> None:
    for exc in (InvalidMessage, PublishFailed, ConnectionFailed, HubError, DownloadFailed):
        assert issubclass(exc, PartnerSDKError)
    assert issubclass(DownloadTimeout, DownloadFailed) and issubclass(DownloadTimeout, TimeoutError)
    assert sdk_errors.__all__ == [
        "ConnectionFailed",
        "DownloadFailed",
        "DownloadTimeout",
        "HubError",
        "InvalidMessage",
        "PartnerSDKError",
        "PublishFailed",
    ]


def test_partner_id_defaults_to_the_url_user() -> None:
    assert PartnerClient(URL).partner_id == "acme-de"
    assert PartnerClient(URL, "other").partner_id == "other"
    client = PartnerClient(URL, namespace="t1.")
    assert client.queue_name == "t1.partner.acme-de"
    assert client.exchange_name == "t1.partners.in"
    with pytest.raises(ConnectionFailed):
        PartnerClient("amqp://127.0.0.1/")
    with pytest.raises(ConnectionFailed):
        PartnerClient("http://acme-de:pw@127.0.0.1/")


# --- validation before sending -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("-5.00", "EUR"),  # negative
        ("12.345678", "EUR"),  # more than 4 decimals
        (12.5, "EUR"),  # a float: money is never a float
        (Decimal("NaN"), "EUR"),
        ("1e3", "EUR"),
        ("", "EUR"),
        ("10.00", "EURO"),
        ("10.00", "XXX"),  # not an ISO 4217 code of the contract
        ("10.00", "eur"),
    ],
)
async def test_invalid_amount_or_currency_raises_before_sending(amount: Any, currency: str) -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    with pytest.raises(InvalidMessage) as caught:
        await client.report_payment("C-1", amount, currency)
    assert caught.value.message_type == "case.payment"
    assert exchange.published == []


async def test_validation_needs_no_connection() -> None:
    client = PartnerClient(URL)  # never connected
    with pytest.raises(InvalidMessage):
        await client.report_payment("C-1", "-1", "EUR")
    with pytest.raises(InvalidMessage):
        await client.propose_settlement("C-1", "S-1", "100", "EURO")
    with pytest.raises(InvalidMessage):
        await client.report_activity("C-1", "fax", "sent")
    with pytest.raises(InvalidMessage):
        await client.close("C-1", "gave_up")
    with pytest.raises(InvalidMessage):
        await client.report_legal_step("C-1", "DE", "Mahnbescheid!", "legal")
    with pytest.raises(InvalidMessage):
        await client.report_promise("C-1", "100", "EUR", "31/12/2026")
    with pytest.raises(InvalidMessage):  # naive timestamps are refused
        await client.accept("C-1", occurred_at=dt.datetime(2026, 1, 1, 12, 0))
    with pytest.raises(InvalidMessage):
        await client.upload_document("C-1", "D-1", "letter", "a.exe", b"MZ", "application/x-exe")
    with pytest.raises(InvalidMessage):
        await client.accept("C-1", message_id="")
    # a valid report gets as far as sending, which needs the connection
    with pytest.raises(PublishFailed):
        await client.accept("C-1")


def test_build_writes_decimals_as_decimal_strings() -> None:
    fields = {
        "case_id": "C-1",
        "amount": Decimal("1250.50"),
        "currency": "EUR",
        "occurred_at": dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC),
    }
    assert build(CasePayment, fields).amount == "1250.50"
    assert build(CasePayment, {**fields, "amount": Decimal("1E+2")}).amount == "100"
    with pytest.raises(InvalidMessage):  # build() takes JSON values: amounts as strings
        build(CasePayment, {**fields, "amount": 300})


async def test_report_methods_take_int_amounts() -> None:
    exchange = FakeExchange()
    await client_with(exchange).report_payment("C-1", 300, "EUR")
    assert json.loads(exchange.published[0][0].body)["amount"] == "300"


# --- publishing --------------------------------------------------------------------------------


async def test_a_report_is_published_with_the_contract_properties() -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    when = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)
    mid = await client.report_payment("C-1", Decimal("99.90"), "EUR", "REF-1", occurred_at=when)
    assert len(mid) == 32
    [(message, key)] = exchange.published
    assert key == "acme-de.case.payment"
    assert message.type == "case.payment"
    assert message.message_id == mid
    assert message.user_id == "acme-de"
    assert message.correlation_id == "C-1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    body = json.loads(message.body)
    assert body == {
        "case_id": "C-1",
        "amount": "99.90",
        "currency": "EUR",
        "reference": "REF-1",
        "occurred_at": "2026-03-01T09:30:00Z",
    }


async def test_occurred_at_defaults_to_now_in_utc() -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    before = dt.datetime.now(dt.UTC)
    await client.accept("C-1", "A-1")
    [(message, _)] = exchange.published
    sent = dt.datetime.fromisoformat(json.loads(message.body)["occurred_at"])
    assert sent.utcoffset() == dt.timedelta(0)
    assert before <= sent <= dt.datetime.now(dt.UTC)


async def test_a_retry_reuses_the_message_id() -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    first = await client.report_activity("C-1", "call", "no_contact", message_id="m-42")
    again = await client.report_activity("C-1", "call", "no_contact", message_id="m-42")
    assert first == again == "m-42"
    assert [m.message_id for m, _ in exchange.published] == ["m-42", "m-42"]


async def test_an_unconfirmed_publish_raises_publish_failed_with_the_id() -> None:
    client = client_with(FakeExchange(fail=aio_pika.exceptions.DeliveryError(None, Basic.Nack(1))))
    with pytest.raises(PublishFailed) as caught:
        await client.close("C-1", "paid", message_id="m-7")
    assert caught.value.message_id == "m-7"
    assert caught.value.message_type == "case.closed"
    client = client_with(FakeExchange(fail=TimeoutError()))
    with pytest.raises(PublishFailed):
        await client.close("C-1", "paid")


async def test_upload_document_sends_size_and_sha256() -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    content = b"%PDF-1.4 letter"
    await client.upload_document("C-1", "D-1", "letter", "a.pdf", content, "application/pdf")
    [(message, key)] = exchange.published
    assert key == "acme-de.document.added"
    doc = DocumentAdded.model_validate_json(message.body)
    assert doc.size == len(content)
    assert doc.sha256 == hashlib.sha256(content).hexdigest()


async def test_report_promise_with_installments() -> None:
    exchange = FakeExchange()
    client = client_with(exchange)
    await client.report_promise(
        "C-1",
        "300.00",
        "EUR",
        dt.date(2026, 6, 30),
        [(dt.date(2026, 4, 30), Decimal("100")), ("2026-05-31", "100.00"), ("2026-06-30", 100)],
    )
    body = json.loads(exchange.published[0][0].body)
    assert body["installments"] == [
        {"due_date": "2026-04-30", "amount": "100"},
        {"due_date": "2026-05-31", "amount": "100.00"},
        {"due_date": "2026-06-30", "amount": "100"},
    ]


async def test_send_refuses_what_is_not_a_partner_report() -> None:
    client = client_with(FakeExchange())
    reply = parse_hub_message(ErrorReply.TYPE, error_reply().body)
    with pytest.raises(InvalidMessage):
        await client.send(reply)


# --- receiving: parsing and dedupe -------------------------------------------------------------


@pytest.mark.parametrize("message_type", ["case.assigned", "case.updated", "case.recalled"])
def test_hub_messages_parse_to_their_models(message_type: str) -> None:
    for example in schema_for(message_type)["examples"]:
        parsed = parse_hub_message(message_type, json.dumps(example).encode())
        assert type(parsed) is model_for(message_type)
        assert json.loads(parsed.to_json()) == example


def test_recent_ids_forget_the_least_recently_used() -> None:
    ids = RecentIds(3)
    for i in "abc":
        ids.add(i)
    assert "a" in ids  # a lookup refreshes "a"
    ids.add("d")  # evicts "b", the least recently used
    assert "b" not in ids
    assert all(i in ids for i in "acd")
    assert len(ids) == 3
    ids.discard("c")
    assert "c" not in ids and len(ids) == 2


def test_the_default_dedupe_window_is_ten_thousand() -> None:
    client = PartnerClient(URL)
    assert client._handled.maxsize == 10_000


async def test_a_repeated_message_id_is_acked_and_not_yielded_again() -> None:
    client = PartnerClient(URL)
    first = error_reply("r1")
    delivery = await client._receive(first)
    assert delivery is not None
    assert isinstance(delivery.message, ErrorReply)
    # a copy arriving while the first is being handled is settled with it
    copy = error_reply("r1")
    assert await client._receive(copy) is None
    assert copy.settled == []
    await delivery.ack()
    assert first.settled == ["ack"] and copy.settled == ["ack"]
    await delivery.ack()  # settling twice is harmless
    assert first.settled == ["ack"]
    # a redelivery after handling is acknowledged without being yielded
    later = error_reply("r1")
    assert await client._receive(later) is None
    assert later.settled == ["ack"]
    assert client._inbox.qsize() == 1  # only the first delivery was queued


async def test_a_requeued_delivery_comes_back() -> None:
    client = PartnerClient(URL)
    raw = error_reply("r2")
    delivery = await client._receive(raw)
    assert delivery is not None
    copy = error_reply("r2")
    assert await client._receive(copy) is None
    await delivery.reject(requeue=True)
    assert raw.settled == ["requeue"]
    assert copy.settled == ["requeue"]  # a copy goes back with it, not lost
    again = error_reply("r2")
    assert await client._receive(again) is not None
    assert again.settled == []


async def test_dedupe_forgets_beyond_its_window() -> None:
    client = PartnerClient(URL, dedupe_window=2)
    for mid in ("a", "b", "c"):
        delivery = await client._receive(error_reply(mid))
        assert delivery is not None
        await delivery.ack()
    assert await client._receive(error_reply("a")) is not None  # forgotten
    assert await client._receive(error_reply("c")) is None  # remembered


@pytest.mark.parametrize(
    ("body", "type"),
    [
        (b"{not json", ErrorReply.TYPE),
        (b'{"case_id": "C-1"}', CaseAssigned.TYPE),
        (b"{}", "case.unknown"),
        (b"{}", None),
        (error_reply().body, "case.activity"),  # a partner report is not a hub message
    ],
)
async def test_an_unparseable_message_is_dead_lettered(body: bytes, type: str | None) -> None:
    client = PartnerClient(URL)
    raw = FakeRaw(body, "bad-1", type)
    assert await client._receive(raw) is None
    assert raw.settled == ["reject"]  # without requeue: to the dead-letter queue
    assert client._inbox.qsize() == 0


async def test_an_error_reply_raises_hub_error_on_request() -> None:
    client = PartnerClient(URL)
    delivery = await client._receive(error_reply("r9"))
    assert delivery is not None
    with pytest.raises(HubError) as caught:
        delivery.raise_for_error()
    assert caught.value.code == "unknown_case"
    assert caught.value.reply.in_reply_to == "m1"


async def test_next_delivery_times_out_with_none() -> None:
    client = PartnerClient(URL)
    client._consumer_tag = "fake"  # as if consuming
    assert await client.next_delivery(timeout=0.01) is None
    queued = await client._receive(error_reply("r10"))
    got = [d async for d in client.deliveries(limit=5, idle_timeout=0.01)]
    assert got == [queued]


async def test_connecting_to_nothing_raises_connection_failed() -> None:
    client = PartnerClient("amqp://acme-de:pw@127.0.0.1:1/")
    with pytest.raises(ConnectionFailed):
        await client.connect()
    assert not client.connected


def test_sync_client_needs_a_connection() -> None:
    client = SyncPartnerClient(URL)
    with pytest.raises(ConnectionFailed):
        client.accept("C-1")
    with pytest.raises(ConnectionFailed):
        client.next_delivery(0.01)
    with pytest.raises(ConnectionFailed):
        SyncPartnerClient("amqp://acme-de:pw@127.0.0.1:1/").connect()


# --- downloads ---------------------------------------------------------------------------------

PDF = b"%PDF-1.7 Zahlungsvereinbarung"


def content_of(in_reply_to: str, data: bytes = PDF, **changes: Any) -> FakeRaw:
    fields: dict[str, Any] = {
        "in_reply_to": in_reply_to,
        "case_id": "C-1",
        "document_id": "D-1",
        "kind": "agreement",
        "filename": "plan.pdf",
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_base64": base64.b64encode(data).decode(),
        **changes,
    }
    body = DocumentContent.model_validate_json(json.dumps(fields)).to_json()
    return FakeRaw(body, f"doc:acme-de:{in_reply_to}", DocumentContent.TYPE)


def refusal_of(in_reply_to: str, code: str = "not_assignee") -> FakeRaw:
    body = ErrorReply(
        in_reply_to=in_reply_to,
        in_reply_to_type="document.requested",
        case_id="C-1",
        code=code,  # type: ignore[arg-type]
        message="partner acme-de is not assigned case C-1",
        occurred_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    ).to_json()
    return FakeRaw(body, f"err:acme-de:{in_reply_to}", ErrorReply.TYPE)


def consuming(exchange: FakeExchange, **kwargs: Any) -> PartnerClient:
    client = client_with(exchange, **kwargs)
    client._consumer_tag = "fake"  # as if consuming
    return client


async def download_answered(
    client: PartnerClient, exchange: FakeExchange, answer: Callable[[str], FakeRaw]
) -> tuple[Any, FakeRaw]:
    """Run a download; once its request is published, ``answer`` it."""
    task = asyncio.create_task(client.download_document("C-1", "D-1", timeout=5))
    await exchange.sent.wait()
    [(message, key)] = exchange.published
    assert key == "acme-de.document.requested"
    assert json.loads(message.body)["document_id"] == "D-1"
    raw = answer(str(message.message_id))
    assert await client._receive(raw) is None  # never a delivery
    try:
        return await task, raw
    except Exception as e:
        return e, raw


async def test_download_document_returns_the_checked_content() -> None:
    exchange = FakeExchange()
    client = consuming(exchange)
    document, raw = await download_answered(client, exchange, content_of)
    assert document.content == PDF and document.size == len(PDF)
    assert (document.case_id, document.document_id, document.filename) == ("C-1", "D-1", "plan.pdf")
    assert (document.kind, document.content_type) == ("agreement", "application/pdf")
    assert raw.settled == ["ack"]
    assert client._waiting == {} and client._inbox.qsize() == 0
    again = content_of("x")  # a copy of an answer already handled is acknowledged
    again.message_id = raw.message_id
    assert await client._receive(again) is None and again.settled == ["ack"]


async def test_a_refused_download_raises_hub_error() -> None:
    exchange = FakeExchange()
    client = consuming(exchange)
    error, raw = await download_answered(client, exchange, refusal_of)
    assert isinstance(error, HubError)
    assert error.code == "not_assignee"
    assert raw.settled == ["ack"] and client._inbox.qsize() == 0


async def test_damaged_content_raises_download_failed() -> None:
    exchange = FakeExchange()
    client = consuming(exchange)
    error, _ = await download_answered(client, exchange, lambda mid: content_of(mid, size=3))
    assert isinstance(error, DownloadFailed) and not isinstance(error, DownloadTimeout)
    assert "damaged" in str(error) and error.document_id == "D-1"


async def test_a_download_times_out_and_its_late_answer_is_dropped() -> None:
    exchange = FakeExchange()
    client = consuming(exchange)
    with pytest.raises(DownloadTimeout) as caught:
        await client.download_document("C-1", "D-1", timeout=0.05, message_id="req-1")
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.message_id == "req-1" and "safe to repeat" in str(caught.value)
    assert client._waiting == {}
    for late in (content_of("req-1"), refusal_of("req-2")):
        assert await client._receive(late) is None
        assert late.settled == ["ack"]
    assert client._inbox.qsize() == 0
    # an error reply to a report is still a delivery
    assert await client._receive(error_reply("r-report")) is not None


class FakeQueue:
    """``basic.get`` of the partner's queue: hands out what it holds, then None."""

    def __init__(self, *messages: FakeRaw) -> None:
        self.messages = list(messages)

    async def get(self, *, no_ack: bool = False, fail: bool = True) -> FakeRaw | None:
        assert no_ack is False and fail is False
        return self.messages.pop(0) if self.messages else None


async def test_a_download_gets_its_answer_past_a_full_prefetch_window() -> None:
    exchange = FakeExchange()
    client = consuming(exchange, prefetch=1)
    held = await client._receive(error_reply("held"))  # unsettled: the window is full
    assert held is not None
    ahead = error_reply("ahead")  # a delivery queued ahead of the answer
    queue = FakeQueue(ahead)
    client._queue = queue  # type: ignore[assignment]
    task = asyncio.create_task(client.download_document("C-1", "D-1", timeout=5))
    await exchange.sent.wait()
    queue.messages.append(content_of(str(exchange.published[0][0].message_id)))
    document = await task
    assert document.content == PDF
    assert client._inbox.qsize() == 2  # "held" and "ahead", both left to the caller
    assert ahead.settled == [] and queue.messages == []
