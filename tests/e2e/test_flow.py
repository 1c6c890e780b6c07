"""End to end through the running hub: a month's batch of claims in, receipts and one
reconciliation out, cases grouped and routed, one assignment per case; a partner works a
case to its close and its history reads right as of any moment; partner reports the
state machine or the assignment forbids are refused and change nothing.

Expected outcomes are computed here from the generator's ground truth (what each message
*is*), never with the hub's own functions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from hub.bootstrap import Hub
from hub.domain.model import as_of
from hub.service.coordinator import Coordinator
from tests.conftest import PartnerFactory
from tests.e2e.batchgen import PARTNER_PLAN, Batch, GenMessage, generate
from tests.support import claim_body, drain, eventually, publish_json

pytestmark = [pytest.mark.services, pytest.mark.e2e]

Doc = dict[str, Any]


# --- expectations from ground truth -------------------------------------------------------


def expected_statuses(batch: Batch) -> dict[str, str]:
    """Receipt status of every message, by a reference model of the intake rules: a
    business key is new, open (same content: duplicate; other: amended) or withdrawn."""
    open_claims: dict[str, dict[str, Any]] = {}
    withdrawn: set[str] = set()
    out: dict[str, str] = {}
    for msg in batch.messages:
        if msg.intent == "invalid":
            out[msg.message_id] = "rejected"
        elif msg.type == "claim.withdrawn":
            if msg.key in open_claims:
                del open_claims[msg.key]
                withdrawn.add(msg.key)
                out[msg.message_id] = "withdrawn"
            else:
                out[msg.message_id] = "duplicate" if msg.key in withdrawn else "rejected"
        else:
            assert msg.content is not None
            current = open_claims.get(msg.key)
            if current is not None:
                out[msg.message_id] = "duplicate" if current == msg.content else "amended"
            elif msg.type == "claim.amended":
                out[msg.message_id] = "rejected"
            else:
                out[msg.message_id] = "accepted"
            if out[msg.message_id] != "rejected":
                open_claims[msg.key] = msg.content
                withdrawn.discard(msg.key)
    return out


def expected_cases(batch: Batch, statuses: dict[str, str]) -> dict[tuple[str, str], Doc]:
    """(creditor entity, debtor registration id) -> country, currency, open claims."""
    cases: dict[tuple[str, str], Doc] = {}
    for msg in batch.messages:
        status = statuses[msg.message_id]
        group = (msg.entity, msg.debtor_reg)
        if status in ("accepted", "amended"):
            assert msg.content is not None
            case = cases.setdefault(
                group,
                {"country": msg.debtor_country, "currency": msg.content["currency"], "claims": {}},
            )
            case["claims"][msg.content["invoice_number"]] = msg.content
        elif status == "withdrawn":
            del cases[group]["claims"][msg.key.split("/", 1)[1]]
    return cases


def claim_total(claim: dict[str, Any]) -> Decimal:
    return Decimal(claim["principal"]) + Decimal(claim["interest"]) + Decimal(claim["fees"])


async def outbox_report(hub: Hub) -> Doc:
    db = hub.store.db
    return {
        "entries": await db.outbox.count_documents({}),
        "unsent": await db.outbox.count_documents({"sent_at": None}),
        "attempted_again": await db.outbox.count_documents({"attempts": {"$gt": 0}}),
        "relay_republished": hub.relay.republished if hub.relay else None,
    }


# --- AMQP helpers -------------------------------------------------------------------------


async def publish_batch(
    channel: AbstractChannel, exchange: str, messages: list[GenMessage]
) -> None:
    """Publish in order, each confirmed by the broker (the channel confirms)."""
    ex = await channel.get_exchange(exchange, ensure=False)
    for msg in messages:
        await ex.publish(
            aio_pika.Message(
                msg.body,
                message_id=msg.message_id,
                type=msg.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=msg.type,
        )


def body_of(msg: AbstractIncomingMessage) -> Doc:
    doc = json.loads(msg.body)
    assert isinstance(doc, dict)
    return doc


@asynccontextmanager
async def as_partner(hub: Hub, pid: str) -> AsyncIterator[AbstractChannel]:
    """A channel on a connection opened with the partner's own least-privilege user."""
    url = hub.settings.amqp_url.replace("guest:guest", f"{pid}:pw-{pid}")
    assert pid in url, "the test expects the default guest URL"
    connection = await aio_pika.connect(url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def report(
    channel: AbstractChannel,
    hub: Hub,
    pid: str,
    mtype: str,
    body: Doc,
    *,
    message_id: str | None = None,
) -> str:
    return await publish_json(
        channel,
        hub.topology.partners_in,
        f"{pid}.{mtype}",
        body,
        type=mtype,
        message_id=message_id,
        user_id=pid,
    )


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def case_doc(hub: Hub, case_id: str) -> Doc:
    doc = await hub.store.db.cases.find_one({"_id": case_id})
    assert doc is not None
    return doc


async def event_docs(hub: Hub, case_id: str) -> list[Doc]:
    return await hub.store.db.events.find({"case_id": case_id}).sort("seq", 1).to_list()


async def wait_version(hub: Hub, case_id: str, version: int, within: float = 20.0) -> None:
    async def reached() -> bool:
        state = await hub.store.case(case_id)
        return state is not None and state.version >= version

    await eventually(reached, within=within, interval=0.02)


# --- 1. the month's batch -----------------------------------------------------------------


async def test_month_batch_end_to_end(hub: Hub, partner: PartnerFactory) -> None:
    t0 = time.monotonic()
    batch = generate(1000, batch_id=f"B-{uuid.uuid4().hex[:8]}")
    size = batch.size
    statuses = expected_statuses(batch)
    # the generator's intents and the reference model agree on what each message is
    intent_status = {
        "original": "accepted",
        "resend": "duplicate",
        "amend": "amended",
        "invalid": "rejected",
        "withdraw": "withdrawn",
    }
    for msg in batch.messages:
        assert statuses[msg.message_id] == intent_status[msg.intent], msg
    want_counts = Counter(statuses.values())
    want_cases = expected_cases(batch, statuses)

    coverage: dict[str, set[str]] = {}
    for countries in PARTNER_PLAN:
        pid = await partner(countries)
        for c in countries:
            coverage.setdefault(c, set()).add(pid)
    partners = sorted({p for ps in coverage.values() for p in ps})
    used = {msg.debtor_country for msg in batch.messages if msg.intent == "original"}
    assert len(used) == 30 and len(used & coverage.keys()) == 25
    t_setup = time.monotonic()

    ns = hub.settings.namespace
    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()  # publisher confirms on
        await publish_batch(channel, f"{ns}claims.in", batch.messages)
        t_published = time.monotonic()

        # receipts: one per message, and one reconciliation of the batch
        def complete(got: list[AbstractIncomingMessage]) -> bool:
            kinds = Counter(m.type for m in got)
            return kinds["claim.receipt"] >= size and kinds["batch.reconciled"] >= 1

        got = await drain(channel, f"{ns}creditor.flexspace", until=complete, limit=110)
        t_receipts = time.monotonic()
        counts_by_type = Counter(m.type for m in got)
        copies = Counter(m.message_id for m in got)
        redelivered = {k: n for k, n in copies.items() if n > 1}
        assert counts_by_type["claim.receipt"] == size, (
            f"{counts_by_type['claim.receipt']} receipts of {size} "
            f"after {t_receipts - t_published:.1f} s; {len(copies)} distinct message ids, "
            f"{len(redelivered)} sent more than once, e.g. {list(redelivered.items())[:3]}; "
            f"outbox: {await outbox_report(hub)}"
        )

        receipts = [body_of(m) for m in got if m.type == "claim.receipt"]
        by_claim = Counter(r["claim_message_id"] for r in receipts)
        assert not [k for k, n in by_claim.items() if n > 1], "duplicate receipts"
        assert set(by_claim) == set(statuses), "receipts missing or for unknown messages"
        wrong = {
            r["claim_message_id"]: (r["status"], statuses[r["claim_message_id"]])
            for r in receipts
            if r["status"] != statuses[r["claim_message_id"]]
        }
        assert not wrong, f"{len(wrong)} receipts with the wrong status: {list(wrong.items())[:5]}"
        assert all(r["batch_id"] == batch.batch_id for r in receipts)
        for r in receipts:
            if r["status"] == "rejected":
                assert r["errors"] and r.get("case_id") is None, r
            else:
                assert r["case_id"] and not r["errors"], r
        # each invalid row is rejected for the rule it breaks, at the right place
        by_id = {m.message_id: m for m in batch.messages}
        where = {  # (JSON path, schema rule) of each kind of invalid row
            "bad_currency": ("$.currency", "enum"),
            "missing_debtor_country": ("$.debtor", "required"),
            "unknown_field": ("$", "additionalProperties"),
            "float_money": ("$.principal", "type"),
        }
        for r in receipts:
            kind = by_id[r["claim_message_id"]].invalid_kind
            if kind:
                assert [(e["path"], e["rule"]) for e in r["errors"]] == [where[kind]], (kind, r)

        reconciled = [body_of(m) for m in got if m.type == "batch.reconciled"]
        assert len(reconciled) == 1
        summary = reconciled[0]
        assert summary["batch_id"] == batch.batch_id
        assert summary["expected"] == summary["received"] == size
        for status in ("accepted", "duplicate", "amended", "rejected", "withdrawn"):
            assert summary[status] == want_counts[status], (status, summary)

        # nothing left unsent; then every partner queue holds its assignments
        async def outbox_empty() -> bool:
            return await hub.store.db.outbox.count_documents({"sent_at": None}) == 0

        await eventually(outbox_empty, within=20)
        assignments: dict[str, list[tuple[str, AbstractIncomingMessage]]] = {}
        updates: dict[str, list[tuple[str, AbstractIncomingMessage]]] = {}
        per_partner: dict[str, int] = {}
        for pid in partners:
            msgs = await drain(channel, f"{ns}partner.{pid}", idle=0.1)
            per_partner[pid] = len(msgs)
            for m in msgs:
                assert m.type in ("case.assigned", "case.updated"), (pid, m.type, m.body[:300])
                sent_as = assignments if m.type == "case.assigned" else updates
                sent_as.setdefault(body_of(m)["case_id"], []).append((pid, m))
        t_drained = time.monotonic()

    # cases: one per (creditor entity, debtor), with the right claims
    docs = await hub.store.db.cases.find({}).to_list()
    by_group: dict[tuple[str, str], list[Doc]] = {}
    for d in docs:
        by_group.setdefault((d["creditor_entity"], d["debtor"]["registration_id"]), []).append(d)
    assert not {g: len(v) for g, v in by_group.items() if len(v) > 1}, "two cases of one debtor"
    assert set(by_group) == set(want_cases)
    assert len(docs) == len(want_cases)

    lifecycles: Counter[str] = Counter()
    assigned_cases: dict[str, str] = {}
    for group, want in want_cases.items():
        d = by_group[group][0]
        lifecycles[d["lifecycle"]] += 1
        assert d["country"] == want["country"] and d["currency"] == want["currency"]
        open_claims = {k: v for k, v in d["claims"].items() if not v.get("withdrawn")}
        assert set(open_claims) == set(want["claims"]), group
        for number, claim in want["claims"].items():
            assert open_claims[number]["principal"] == claim["principal"], (group, number)
        assert Decimal(d["total"]) == sum(map(claim_total, want["claims"].values())), group
        if want["country"] in coverage:
            assert d["lifecycle"] == "assigned", (group, d["lifecycle"])
            assert d["partner_id"] in coverage[want["country"]], (group, d["partner_id"])
            assigned_cases[d["_id"]] = d["partner_id"]
        else:
            assert d["lifecycle"] == "unassigned", (group, d["lifecycle"])
            assert d.get("partner_id") is None

    # one case.assigned per assigned case, in its partner's queue; none for the rest
    assert set(assignments) == set(assigned_cases)
    for case_id, sent in assignments.items():
        assert len(sent) == 1, (case_id, [p for p, _ in sent])
        pid, m = sent[0]
        body = body_of(m)
        assert pid == assigned_cases[case_id] == body["partner_id"]
        assert m.correlation_id == case_id
    assert len({m.message_id for sent in assignments.values() for _, m in sent}) == len(
        assigned_cases
    )
    # a claim added, amended or withdrawn after its case was assigned: case.updated to the
    # assignee; whichever message came last (in commit order) holds the case's claims now
    case_docs = {d["_id"]: d for d in docs}
    assert set(updates) <= set(assigned_cases)
    for case_id, sent in updates.items():
        assignment_id = body_of(assignments[case_id][0][1])["assignment_id"]
        for pid, m in sent:
            body = body_of(m)
            assert pid == assigned_cases[case_id] == body["partner_id"], body
            assert body["assignment_id"] == assignment_id and (m.message_id or "").startswith(
                "upd:"
            )
    for case_id in assigned_cases:
        d = case_docs[case_id]
        now = {k: v["principal"] for k, v in d["claims"].items() if not v.get("withdrawn")}
        told = [body_of(m) for _, m in assignments[case_id] + updates.get(case_id, [])]
        assert any(
            {c["invoice_number"]: c["principal"] for c in b["claims"]} == now
            and Decimal(b["total"]) == Decimal(d["total"])
            for b in told
        ), (case_id, now, told)
    print(
        f"\nbatch {batch.batch_id}: {batch.size} messages ({dict(want_counts)}), "
        f"{len(docs)} cases ({dict(lifecycles)}), {len(assignments)} assignments, "
        f"{sum(map(len, updates.values()))} updates over "
        f"{len([p for p in partners if per_partner[p]])}/{len(partners)} partners; "
        f"setup {t_setup - t0:.1f} s, publish {t_published - t_setup:.1f} s, "
        f"all receipts +{t_receipts - t_published:.1f} s, "
        f"assignments drained +{t_drained - t_receipts:.1f} s"
    )

    # --- a partner works one case to its close ---------------------------------------------
    open_count = {d["_id"]: sum(not c.get("withdrawn") for c in d["claims"].values()) for d in docs}
    case_id = max(assigned_cases, key=lambda c: (open_count[c], c))
    pid = assigned_cases[case_id]
    assignment_id = body_of(assignments[case_id][0][1])["assignment_id"]
    state0 = await hub.store.case(case_id)
    assert state0 is not None
    total = state0.total
    part = (total * Decimal("0.4")).quantize(Decimal("0.01"))
    rest = total - part
    currency = state0.currency

    steps: list[tuple[str, Doc]] = [
        ("case.accepted", {"assignment_id": assignment_id}),
        ("case.activity", {"kind": "call", "outcome": "right_party_contact", "note": "CFO"}),
        ("case.promise", {"amount": str(total), "currency": currency, "due_date": "2027-01-15"}),
        ("case.payment", {"amount": str(part), "currency": currency, "reference": "PAY-1"}),
        ("case.payment", {"amount": str(rest), "currency": currency, "reference": "PAY-2"}),
        ("case.closed", {"close_code": "paid", "note": "paid in two instalments"}),
    ]
    moments: dict[str, dt.datetime] = {}
    latencies: list[float] = []
    version = state0.version
    async with as_partner(hub, pid) as pch:
        for n, (mtype, fields) in enumerate(steps, 1):
            started = time.monotonic()
            body = {"case_id": case_id, "occurred_at": iso(dt.datetime.now(dt.UTC)), **fields}
            await report(pch, hub, pid, mtype, body)
            version += 1
            await wait_version(hub, case_id, version)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
            moments[f"{n}:{mtype}"] = dt.datetime.now(dt.UTC)
            await asyncio.sleep(0.02)
        leftovers = await drain(pch, f"{ns}partner.{pid}", idle=0.5)
    assert leftovers == [], [(m.type, m.body[:300]) for m in leftovers]  # no error replies

    events = await hub.store.events(case_id)
    assert [e.kind.value for e in events[-6:]] == [
        "accepted",
        "activity",
        "promise",
        "payment",
        "payment",
        "closed",
    ]
    expectations = {
        "1:case.accepted": ("accepted", Decimal(0), Decimal(0)),
        "4:case.payment": ("in_progress", part, total),
        "6:case.closed": ("closed", total, total),
    }
    coordinator = Coordinator(hub.store, hub.partners)  # what `hubctl cases show` calls
    for moment, (lifecycle, collected, promised) in expectations.items():
        for axis in ("recorded", "occurred"):
            st = as_of(events, moments[moment], axis=axis)
            assert st is not None, (moment, axis)
            shown, _ = await coordinator.show(case_id, moments[moment], axis)
            assert shown == st, (moment, axis)
            got_state = (st.lifecycle.value, Decimal(st.collected), Decimal(st.promised))
            assert got_state == (lifecycle, collected, promised), (moment, axis)
    final = as_of(events, moments["6:case.closed"])
    assert final is not None and final.close_code == "paid" and final.partner_id == pid
    current = await hub.store.case(case_id)
    assert current is not None and current.lifecycle.value == "closed"
    assert Decimal(current.collected) == total
    print(
        f"partner {pid} worked case {case_id} (total {total} {currency}) in 6 reports; "
        f"report -> applied: {', '.join(f'{x:.2f}' for x in latencies)} s; "
        f"whole test {time.monotonic() - t0:.1f} s"
    )


# --- 2. refused reports ---------------------------------------------------------------------


async def _one_assigned_case(hub: Hub, partner: PartnerFactory) -> tuple[str, str, str, str]:
    """A DE case assigned to partner A; partner B (FR only) has no part in it."""
    a = await partner(["DE"], prefix="a")
    b = await partner(["FR"], prefix="b")
    ns = hub.settings.namespace
    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await publish_json(
            channel,
            f"{ns}claims.in",
            "claim.placed",
            claim_body(7, country="DE"),
            type="claim.placed",
        )
        got = await drain(
            channel, f"{ns}partner.{a}", until=lambda g: any(m.type == "case.assigned" for m in g)
        )
    assigned = [body_of(m) for m in got if m.type == "case.assigned"]
    assert len(assigned) == 1
    return a, b, assigned[0]["case_id"], assigned[0]["assignment_id"]


async def _error_reply(
    channel: AbstractChannel, queue: str, message_id: str, within: float = 20.0
) -> Doc:
    got = await drain(
        channel,
        queue,
        until=lambda g: any(body_of(m).get("in_reply_to") == message_id for m in g),
        limit=within,
    )
    replies = [m for m in got if m.type == "error.reply"]
    assert [body_of(m)["in_reply_to"] for m in replies] == [message_id], [
        (m.type, m.body[:300]) for m in got
    ]
    return body_of(replies[0])


async def _snapshot(hub: Hub, case_id: str) -> tuple[Doc, list[Doc]]:
    return await case_doc(hub, case_id), await event_docs(hub, case_id)


async def test_refused_reports_change_nothing(hub: Hub, partner: PartnerFactory) -> None:
    a, b, case_id, assignment_id = await _one_assigned_case(hub, partner)
    ns = hub.settings.namespace
    now = iso(dt.datetime.now(dt.UTC))
    before = await _snapshot(hub, case_id)

    # a partner that is not the assignee: refused in ITS queue, the case untouched
    async with as_partner(hub, b) as bch:
        mid = await report(
            bch,
            hub,
            b,
            "case.activity",
            {"case_id": case_id, "occurred_at": now, "kind": "call", "outcome": "no_contact"},
        )
        reply = await _error_reply(bch, f"{ns}partner.{b}", mid)
    assert reply["code"] == "not_assignee" and reply["case_id"] == case_id
    assert await _snapshot(hub, case_id) == before

    async with as_partner(hub, a) as ach:
        queue = f"{ns}partner.{a}"
        # closing an assigned case that was never accepted: illegal, nothing changes
        mid = await report(
            ach,
            hub,
            a,
            "case.closed",
            {"case_id": case_id, "occurred_at": now, "close_code": "paid"},
        )
        reply = await _error_reply(ach, queue, mid)
        assert reply["code"] == "illegal_transition", reply
        assert reply["in_reply_to_type"] == "case.closed"
        assert await _snapshot(hub, case_id) == before

        # accepted once...
        accept = {"case_id": case_id, "occurred_at": now, "assignment_id": assignment_id}
        accept_id = await report(ach, hub, a, "case.accepted", accept)
        await wait_version(hub, case_id, before[0]["version"] + 1)
        accepted = await _snapshot(hub, case_id)
        assert accepted[0]["lifecycle"] == "accepted"
        # ...the same message again, and another body under the same id: nothing at all
        await report(ach, hub, a, "case.accepted", accept, message_id=accept_id)
        await report(
            ach,
            hub,
            a,
            "case.closed",
            {"case_id": case_id, "occurred_at": now, "close_code": "paid"},
            message_id=accept_id,
        )
        # a report on a case that does not exist; its reply also tells that the
        # repeats before it (same queue, in order) were handled, silently
        mid = await report(
            ach,
            hub,
            a,
            "case.activity",
            {
                "case_id": "C-0000000000000000",
                "occurred_at": now,
                "kind": "email",
                "outcome": "sent",
            },
        )
        reply = await _error_reply(ach, queue, mid)
        assert reply["code"] == "unknown_case", reply
        assert await _snapshot(hub, case_id) == accepted

    rejections = await hub.store.db.rejections.find({"source": "partner"}).to_list()
    assert sorted(r["code"] for r in rejections) == [
        "illegal_transition",
        "not_assignee",
        "unknown_case",
    ]
    assert {r["sender"] for r in rejections if r["code"] == "not_assignee"} == {b}
