"""``BatchConsumer`` with transient replies (a document's content), on fakes: a reply is
published after the commit but never through the outbox, and a batch is acknowledged
only once its replies are confirmed; otherwise it goes back to the queue."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hub.infra.rabbit import BatchConsumer, InFlight
from hub.service.ports import Incoming, OutMessage


class FakeMessage:
    """An incoming delivery: records how it was settled."""

    channel = object()

    def __init__(self, tag: int) -> None:
        self.delivery_tag = tag
        self.body = b"{}"
        self.message_id = f"m{tag}"
        self.type = "document.requested"
        self.routing_key = "acme-de.document.requested"
        self.user_id = "acme-de"
        self.content_type = "application/json"
        self.headers: dict[str, Any] = {}
        self.settled: list[str] = []

    async def ack(self, multiple: bool = False) -> None:
        self.settled.append("ack-multiple" if multiple else "ack")

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self.settled.append("requeue" if requeue else "nack")


class FakePublisher:
    """Confirms every message but those whose id is in ``refuse``."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.refuse = set(refuse)
        self.published: list[OutMessage] = []

    async def publish(self, messages: Sequence[OutMessage]) -> list[str]:
        self.published.extend(messages)
        return [o.message_id for o in messages if o.message_id not in self.refuse]


def out(message_id: str, **changes: Any) -> OutMessage:
    message = OutMessage(message_id, "partners.out", "acme-de.error.reply", "t", b"stored")
    return dataclasses.replace(message, **changes)


async def read_body() -> bytes:
    return b"read at publish time"


async def run_batch(publisher: FakePublisher, outbox: list[OutMessage]) -> list[FakeMessage]:
    """One committed batch of two messages through the consumer, settled."""
    marked: list[str] = []

    async def handler(batch: Sequence[Incoming]) -> list[OutMessage]:
        return outbox

    async def mark_sent(ids: Sequence[str]) -> None:
        marked.extend(ids)

    consumer = BatchConsumer(
        None,  # type: ignore[arg-type] # never started
        "q",
        handler,
        publisher,  # type: ignore[arg-type]
        mark_sent,
        batch_max=10,
        batch_wait_ms=1,
        in_flight=InFlight(),
    )
    batch = [FakeMessage(1), FakeMessage(2)]
    await consumer._process(batch)  # type: ignore[arg-type]
    settle = consumer._settle.get_nowait()
    await settle()
    assert marked == [o.message_id for o in outbox if not o.transient]
    return batch


async def test_a_reply_is_read_and_published_after_the_outbox_then_the_batch_acked() -> None:
    publisher = FakePublisher()
    reply = out("doc:acme-de:m1", body=b"", transient=True, load=read_body)
    batch = await run_batch(publisher, [out("err:acme-de:m2"), reply])
    assert [o.message_id for o in publisher.published] == ["err:acme-de:m2", "doc:acme-de:m1"]
    assert publisher.published[1].body == b"read at publish time"
    assert publisher.published[1].load is None
    assert batch[1].settled == ["ack-multiple"] and batch[0].settled == []


async def test_a_reply_not_confirmed_sends_the_batch_back_to_the_queue() -> None:
    publisher = FakePublisher(refuse=["doc:acme-de:m1"])
    reply = out("doc:acme-de:m1", transient=True)
    batch = await run_batch(publisher, [out("err:acme-de:m2"), reply])
    assert [m.settled for m in batch] == [["requeue"], ["requeue"]]


async def test_a_reply_whose_body_cannot_be_read_sends_the_batch_back() -> None:
    async def broken() -> bytes:
        raise ConnectionError("database gone")

    publisher = FakePublisher()
    batch = await run_batch(publisher, [out("doc:acme-de:m1", transient=True, load=broken)])
    assert publisher.published == []
    assert [m.settled for m in batch] == [["requeue"], ["requeue"]]
