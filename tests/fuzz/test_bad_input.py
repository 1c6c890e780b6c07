"""Bad input through every entrypoint: at least 10,000 malformed messages over the real
broker (``hub.claims`` and ``hub.partner-updates``), and the same kinds of damage through
the service layer directly, as hypothesis properties.

Every message must get a clear answer: a claim a ``claim.receipt`` (``rejected`` with the
rule it breaks, or, for odd but legal text, ``accepted``), a partner report an
``error.reply`` (or, when legal, be applied to its case). Every refusal is recorded in
``rejections``, nothing is dead-lettered, and the consumers keep running: a valid
message sent after the flood goes through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections import Counter
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.bootstrap import Hub
from hub.service.intake import IntakeService
from hub.service.ports import Incoming
from hub.service.updates import UpdatesService
from tests.chaos import report
from tests.chaos.support import queue_depth, take_all
from tests.conftest import PartnerFactory
from tests.fuzz.strategies import KINDS, Bad, broken, by_kind, corpus_of_every_kind
from tests.support import claim_body, eventually, publish_json

#: Over the broker: claims and partner reports, 10,000 together.
N_CLAIMS = 6000
N_REPORTS = 4000

CLAIM_FREE_TEXT = [
    ("debtor", "name"),
    ("debtor", "address", "line1"),
    ("debtor", "address", "city"),
]
REPORT_FREE_TEXT = [("note",)]
#: aiormq gives every message it publishes a random message id when it has none, so a
#: message without one cannot be sent from here: that kind is covered by the service tests.
OVER_AMQP = tuple(k for k in KINDS if k != "no_message_id")


def claim_base() -> dict[str, Any]:
    return claim_body(1)


def vary_claim(doc: dict[str, Any], n: int) -> dict[str, Any]:
    return {**doc, "invoice_number": f"FZ-{n}"}


def report_base(case_id: str = "C-0000000000000000") -> dict[str, Any]:
    return {
        "case_id": case_id,
        "occurred_at": "2026-12-04T10:00:00Z",
        "kind": "call",
        "outcome": "no_contact",
        "note": "called",
    }


def vary_report(doc: dict[str, Any], n: int) -> dict[str, Any]:
    return {**doc, "note": f"call {n}"}


# --- the service layer, as properties -------------------------------------------------------

SERVICE_SETTINGS = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@SERVICE_SETTINGS
@given(
    st.sampled_from(KINDS).flatmap(lambda k: broken(k, claim_base(), CLAIM_FREE_TEXT, vary_claim))
)
def test_intake_parse_answers_every_bad_claim(bad: Bad) -> None:
    service = IntakeService(None, None)  # type: ignore[arg-type] # parse needs neither
    parsed = service.parse(
        Incoming(
            body=bad.body,
            message_id=None if bad.no_message_id else "m-1",
            type=bad.type or "claim.placed",
            routing_key="claim.placed",
            content_type=bad.content_type,
        )
    )
    if bad.must_reject or parsed.model is None:
        assert parsed.model is None and parsed.errors, bad.kind
        for error in parsed.errors:
            assert error.path.startswith("$") and error.rule and error.message


@SERVICE_SETTINGS
@given(
    st.sampled_from(KINDS).flatmap(
        lambda k: broken(k, report_base(), REPORT_FREE_TEXT, vary_report)
    )
)
def test_updates_parse_answers_every_bad_report(bad: Bad) -> None:
    service = UpdatesService(None, None, None)  # type: ignore[arg-type] # parse needs none
    parsed = service.parse(
        Incoming(
            body=bad.body,
            message_id=None if bad.no_message_id else "m-1",
            type=bad.type or "case.activity",
            routing_key="p1.case.activity",
            user_id="p1",
            content_type=bad.content_type,
        )
    )
    if bad.must_reject or parsed.model is None:
        assert parsed.model is None and parsed.code and parsed.reason, bad.kind


# --- over the broker -------------------------------------------------------------------------


async def publish_bad(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    items: list[tuple[str, Bad]],
    *,
    default_type: str,
    user_id: str | None = None,
) -> None:
    ex = await channel.get_exchange(exchange, ensure=False)

    async def one(mid: str, bad: Bad) -> None:
        await ex.publish(
            aio_pika.Message(
                bad.body,
                message_id=mid,
                type=default_type if bad.type is None else bad.type,
                content_type=bad.content_type,
                user_id=None if bad.no_user_id else user_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )

    for start in range(0, len(items), 300):
        await asyncio.gather(*(one(mid, bad) for mid, bad in items[start : start + 300]))


def consumers_alive(hub: Hub) -> int:
    """How many of the hub's consumer tasks have died (0 is the only good answer)."""
    dead = 0
    for consumer in hub.consumers:
        task = consumer._task
        if task is None or task.done():
            dead += 1
    return dead


@pytest.mark.services
@pytest.mark.slow
async def test_bad_claims_through_the_broker(hub: Hub) -> None:
    ns = hub.settings.namespace
    topo = hub.topology
    tag = uuid.uuid4().hex[:6]
    t0 = time.monotonic()
    items = corpus_of_every_kind(
        lambda k: broken(k, claim_base(), CLAIM_FREE_TEXT, vary_claim), N_CLAIMS, OVER_AMQP
    )
    t_drawn = time.monotonic()
    # each message its own invoice number, so that what is stored can be traced back
    sent = [
        (f"fz-{tag}-{i}", dataclasses.replace(bad, body=bad.body.replace(b'"FZ-', b'"FZ%d-' % i)))
        for i, bad in enumerate(items)
    ]
    expected = dict(sent)

    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        # every receipt, whatever creditor id a broken body names
        catch_all = await channel.declare_queue(f"{ns}fuzz.receipts", durable=True)
        await catch_all.bind(topo.claims_receipts, "#")
        await publish_bad(
            channel, topo.claims_in, "claim.placed", sent, default_type="claim.placed"
        )
        t_sent = time.monotonic()

        async def all_recorded() -> bool:
            return await hub.store.db.inbox.count_documents({}) >= len(expected)

        await eventually(all_recorded, within=600, interval=0.5)
        got = await take_all(channel, catch_all.name, expect=len(expected), limit=300)
        t_done = time.monotonic()
        dead_lettered = await queue_depth(channel, topo.hub_dead)

        # the consumer is still there: a valid claim after the flood is accepted
        good = claim_body(1)
        good["invoice_number"] = f"AFTER-{tag}"
        good_id = await publish_json(
            channel, topo.claims_in, "claim.placed", good, type="claim.placed"
        )
        after = await take_all(channel, catch_all.name, expect=1, limit=60)

    receipts: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for msg in got:
        doc = json.loads(msg.body)
        if msg.type != "claim.receipt":
            continue
        mid = doc["claim_message_id"]
        if mid in receipts and receipts[mid] != doc:
            problems.append(f"two different receipts for {mid}")
        receipts[mid] = doc
    statuses: Counter[str] = Counter()
    rejected_with_error = 0
    for mid, bad in expected.items():
        doc = receipts.get(mid)
        if doc is None:
            problems.append(f"no receipt for a {bad.kind} message {mid}")
            continue
        statuses[doc["status"]] += 1
        if doc["status"] == "rejected":
            if doc["errors"] and all(
                e["path"] and e["rule"] and e["message"] for e in doc["errors"]
            ):
                rejected_with_error += 1
            else:
                problems.append(f"a rejection without its reason: {doc}")
        elif bad.must_reject:
            problems.append(f"a {bad.kind} message was {doc['status']}: {bad.body[:200]!r}")
    recorded = await hub.store.db.rejections.count_documents(
        {"_id": {"$in": [f"claim:{m}" for m, d in receipts.items() if d["status"] == "rejected"]}}
    )
    # odd but legal text is stored as it was sent (claims whose business key no other
    # accepted message shares, so that the stored version is this one)
    keys: Counter[str] = Counter(
        f"{d['creditor_entity']}/{d['invoice_number']}"
        for d in receipts.values()
        if d["status"] != "rejected"
    )
    compared = 0
    for mid, doc in receipts.items():
        key = f"{doc.get('creditor_entity')}/{doc.get('invoice_number')}"
        if doc["status"] != "accepted" or keys[key] != 1:
            continue
        stored = await hub.store.db.claims.find_one({"_id": key})
        sent_doc = json.loads(expected[mid].body)
        for path in CLAIM_FREE_TEXT:
            want: Any = sent_doc
            got: Any = stored["body"] if stored else None
            for part in path:
                want, got = want[part], (got or {}).get(part)
            if got != want:
                problems.append(f"{key}: {'.'.join(path)} stored as {got!r}, sent {want!r}")
        compared += 1
    crashed = consumers_alive(hub)
    after_ok = [json.loads(m.body)["status"] for m in after if m.type == "claim.receipt"]
    report.record(
        f"bad-input entrypoint=hub.claims tried={len(expected)} answered={len(receipts)} "
        f"rejected_with_error={rejected_with_error} recorded={recorded} "
        f"accepted_odd_but_legal={len(receipts) - rejected_with_error} "
        f"stored_as_sent_checked={compared} "
        f"crashed_consumers={crashed} dead_lettered={dead_lettered} "
        f"valid_after_flood={after_ok[0] if after_ok else 'none'} "
        f"draw_s={t_drawn - t0:.0f} publish_s={t_sent - t_drawn:.0f} "
        f"all_answered_after_publish_s={t_done - t_sent:.0f} kinds={len(by_kind(items))}"
    )
    assert not problems, "\n".join(problems[:30])
    assert len(receipts) == len(expected)
    assert recorded == statuses["rejected"]
    assert crashed == 0 and dead_lettered == 0
    assert [json.loads(m.body)["claim_message_id"] for m in after] == [good_id]
    assert after_ok == ["accepted"]


@pytest.mark.services
@pytest.mark.slow
async def test_bad_reports_through_the_broker(hub: Hub, partner: PartnerFactory) -> None:
    topo = hub.topology
    db = hub.store.db
    tag = uuid.uuid4().hex[:6]
    pid = await partner(["DE"])
    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await publish_json(
            channel, topo.claims_in, "claim.placed", claim_body(1), type="claim.placed"
        )
        (assigned,) = await take_all(channel, topo.partner_queue(pid), expect=1)
        case = json.loads(assigned.body)

        t0 = time.monotonic()
        items = corpus_of_every_kind(
            lambda k: broken(k, report_base(case["case_id"]), REPORT_FREE_TEXT, vary_report),
            N_REPORTS,
            (*OVER_AMQP, "no_user_id"),
        )
        t_drawn = time.monotonic()
        sent = [(f"fz-{tag}-{i}", bad) for i, bad in enumerate(items)]
        expected = dict(sent)

        partner_url = hub.settings.amqp_url.replace("guest:guest", f"{pid}:pw-{pid}")
        as_partner = await aio_pika.connect(partner_url)
        async with as_partner:
            pch = await as_partner.channel()
            accept = {
                "case_id": case["case_id"],
                "assignment_id": case["assignment_id"],
                "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            await publish_json(
                pch,
                topo.partners_in,
                f"{pid}.case.accepted",
                accept,
                type="case.accepted",
                user_id=pid,
            )

            async def accepted() -> bool:
                state = await hub.store.case(case["case_id"])
                return state is not None and state.lifecycle.value == "accepted"

            await eventually(accepted, within=30)
            await publish_bad(
                pch,
                topo.partners_in,
                f"{pid}.case.activity",
                sent,
                default_type="case.activity",
                user_id=pid,
            )
            t_sent = time.monotonic()

            async def all_recorded() -> bool:
                n = await db.inbox.count_documents({"queue": "hub.partner-updates"})
                return n >= len(expected) + 1

            await eventually(all_recorded, within=600, interval=0.5)
            replies = await take_all(channel, topo.partner_queue(pid), idle=1.5, limit=300)
            t_done = time.monotonic()
            dead_lettered = await queue_depth(channel, topo.hub_dead)

            # still consuming: a valid report after the flood is applied
            good = report_base(case["case_id"]) | {"note": f"after the flood {tag}"}
            good_id = await publish_json(
                pch,
                topo.partners_in,
                f"{pid}.case.activity",
                good,
                type="case.activity",
                user_id=pid,
            )

            async def applied() -> bool:
                return await db.events.count_documents({"message_id": good_id}) == 1

            await eventually(applied, within=60)

    answers: dict[str, str] = {}
    problems: list[str] = []
    for msg in replies:
        doc = json.loads(msg.body)
        if msg.type == "error.reply":
            answers[doc["in_reply_to"]] = doc["code"]
    applied = {
        e["message_id"]: e["data"]
        async for e in db.events.find(
            {"message_id": {"$in": list(expected)}}, {"data": 1, "message_id": 1}
        )
    }
    applied_ids = set(applied)
    for mid, data in applied.items():  # odd but legal text is stored as it was sent
        sent_note = json.loads(expected[mid].body).get("note")
        if data.get("note") != sent_note:
            problems.append(f"{mid}: note stored as {data.get('note')!r}, sent {sent_note!r}")
    codes: Counter[str] = Counter()
    for mid, bad in expected.items():
        if mid in answers:
            codes[answers[mid]] += 1
            if mid in applied_ids:
                problems.append(f"{mid} both applied and refused")
        elif mid in applied_ids:
            if bad.must_reject:
                problems.append(f"a {bad.kind} report was applied: {bad.body[:200]!r}")
        else:
            problems.append(f"no answer to a {bad.kind} report {mid}")
    recorded = await db.rejections.count_documents(
        {"_id": {"$in": [f"partner:{pid}:{mid}" for mid in answers]}}
    )
    crashed = consumers_alive(hub)
    report.record(
        f"bad-input entrypoint=hub.partner-updates tried={len(expected)} "
        f"answered={len(answers) + len(applied_ids)} rejected_with_error={len(answers)} "
        f"recorded={recorded} applied_odd_but_legal={len(applied_ids)} "
        f"crashed_consumers={crashed} dead_lettered={dead_lettered} valid_after_flood=applied "
        f"codes={dict(codes)} draw_s={t_drawn - t0:.0f} publish_s={t_sent - t_drawn:.0f} "
        f"all_answered_after_publish_s={t_done - t_sent:.0f}"
    )
    assert not problems, "\n".join(problems[:30])
    assert recorded == len(answers)
    assert crashed == 0 and dead_lettered == 0
