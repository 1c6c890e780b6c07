"""Intake (``IntakeService``) on the in-memory ports: every claim gets exactly one receipt,
claims become cases, cases are placed, batches are counted and reconciled."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from hub.domain.model import EventKind, Lifecycle, case_id_for
from hub.domain.routing import PartnerProfile
from hub.service import outgoing
from hub.service.intake import IntakeService
from hub.service.memory import FakeClock, InMemoryPartnerDirectory, InMemoryStore
from hub.service.ports import Incoming, OutMessage
from partner_sdk import messages as m
from partner_sdk.messages import ReceiptStatus
from tests.support import claim_body

PID = "acme-de"
CREDITOR = "flexspace"
T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(clock: FakeClock) -> InMemoryStore:
    return InMemoryStore(clock=clock)


@pytest.fixture
def partners() -> InMemoryPartnerDirectory:
    return InMemoryPartnerDirectory([PartnerProfile(PID, frozenset({"DE", "AT"}))])


@pytest.fixture
def intake(
    store: InMemoryStore, partners: InMemoryPartnerDirectory, clock: FakeClock
) -> IntakeService:
    return IntakeService(store, partners, clock=clock, default_creditor=CREDITOR)


_ids = iter(range(1, 1_000_000))


def incoming(
    body: Mapping[str, Any] | bytes,
    *,
    mid: str | None = "",
    type: str = "claim.placed",
    content_type: str | None = "application/json",
) -> Incoming:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Incoming(
        body=data,
        message_id=f"mid-{next(_ids)}" if mid == "" else mid,
        type=type,
        routing_key=type,
        content_type=content_type,
    )


def withdrawal(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "creditor_id": CREDITOR,
        "creditor_entity": "FS-DE-001",
        "invoice_number": f"INV-{n:06d}",
        "reason": "paid directly",
        **extra,
    }


def receipts(outbox: list[OutMessage]) -> list[m.ClaimReceipt]:
    found = []
    for o in outbox:
        if o.type == m.ClaimReceipt.TYPE:
            assert o.exchange == outgoing.RECEIPTS
            assert o.routing_key.endswith(".claim.receipt")
            receipt = m.ClaimReceipt.model_validate_json(o.body)
            assert o.message_id == f"rcpt:{receipt.claim_message_id}"
            assert o.routing_key == f"{receipt.creditor_id}.claim.receipt"
            found.append(receipt)
    return found


def only(outbox: list[OutMessage], type: str) -> list[OutMessage]:
    return [o for o in outbox if o.type == type]


async def one_receipt(intake: IntakeService, msg: Incoming) -> m.ClaimReceipt:
    [receipt] = receipts(await intake.handle([msg]))
    assert receipt.claim_message_id == msg.message_id
    return receipt


def case_of(n: int = 1, entity: str = "FS-DE-001") -> str:
    body = claim_body(n, entity=entity)
    return case_id_for(
        entity, m.Debtor.model_validate_json(json.dumps(body["debtor"])).model_dump()
    )


# --- receipts --------------------------------------------------------------------------------


async def test_a_new_claim_is_accepted_and_its_case_assigned(
    intake: IntakeService, store: InMemoryStore, partners: InMemoryPartnerDirectory
) -> None:
    msg = incoming(claim_body(1))
    outbox = await intake.handle([msg])
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.ACCEPTED
    assert receipt.case_id == case_of(1)
    assert (receipt.creditor_id, receipt.creditor_entity) == (CREDITOR, "FS-DE-001")
    assert receipt.invoice_number == "INV-000001"
    assert receipt.errors == []
    assert receipt.received_at == T0

    [assignment] = only(outbox, m.CaseAssigned.TYPE)
    assert assignment.routing_key == f"{PID}.case.assigned"
    assert assignment.exchange == outgoing.PARTNERS_OUT
    assert assignment.correlation_id == receipt.case_id
    body = m.CaseAssigned.model_validate_json(assignment.body)
    assert body.partner_id == PID
    assert [c.invoice_number for c in body.claims] == ["INV-000001"]
    assert body.total == "1052.50"
    assert body.accept_by == T0 + dt.timedelta(hours=48)

    state = store.cases[receipt.case_id]
    assert state.lifecycle is Lifecycle.ASSIGNED
    assert state.partner_id == PID
    assert state.placed_at == T0
    assert partners.open_cases() == {PID: 1}
    assert store.inbox[msg.message_id or ""]["status"] == "accepted"
    assert {o.message_id for o in outbox} == set(store.outbox)
    events = await store.events(receipt.case_id)
    assert [e.kind for e in events] == [EventKind.CLAIM_ADDED, EventKind.ASSIGNED]
    assert all(e.recorded_at == T0 for e in events)


async def test_a_claim_sent_again_is_a_duplicate(
    intake: IntakeService, store: InMemoryStore
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    again = incoming(claim_body(1, batch=("B-OTHER", 1)))  # the batch is not the claim
    outbox = await intake.handle([again])
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.DUPLICATE
    assert receipt.case_id == first.case_id
    assert only(outbox, m.CaseAssigned.TYPE) == []
    assert len(await store.events(first.case_id or "")) == 2


@pytest.mark.parametrize("type", ["claim.placed", "claim.amended"])
async def test_a_changed_claim_is_amended(
    intake: IntakeService, store: InMemoryStore, type: str
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    changed = await one_receipt(intake, incoming(claim_body(1, principal="400.00"), type=type))
    assert changed.status is ReceiptStatus.AMENDED
    assert changed.case_id == first.case_id
    state = store.cases[first.case_id or ""]
    assert state.claims["INV-000001"]["principal"] == "400.00"
    assert str(state.total) == "452.50"
    assert (await store.events(state.case_id))[-1].kind is EventKind.CLAIM_AMENDED
    assert store.claims["FS-DE-001/INV-000001"]["body"]["principal"] == "400.00"


async def test_amending_an_unknown_claim_is_rejected(intake: IntakeService) -> None:
    receipt = await one_receipt(intake, incoming(claim_body(1), type="claim.amended"))
    assert receipt.status is ReceiptStatus.REJECTED
    assert (receipt.errors[0].path, receipt.errors[0].rule) == ("$.invoice_number", "exists")


async def test_an_amendment_may_not_change_the_debtor(
    intake: IntakeService, store: InMemoryStore
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    for type in ("claim.amended", "claim.placed"):
        receipt = await one_receipt(intake, incoming(claim_body(1, debtor=77), type=type))
        assert receipt.status is ReceiptStatus.REJECTED
        assert receipt.case_id is None
        assert (receipt.errors[0].path, receipt.errors[0].rule) == ("$.debtor", "immutable")
    assert set(store.cases) == {first.case_id}
    assert store.claims["FS-DE-001/INV-000001"]["case_id"] == first.case_id


async def test_an_amendment_may_not_change_the_case_currency(
    intake: IntakeService, store: InMemoryStore
) -> None:
    await one_receipt(intake, incoming(claim_body(1)))
    await one_receipt(intake, incoming(claim_body(2, debtor=1)))
    receipt = await one_receipt(intake, incoming(claim_body(2, debtor=1, currency="USD")))
    assert receipt.status is ReceiptStatus.REJECTED
    assert (receipt.errors[0].path, receipt.errors[0].rule) == ("$.currency", "caseCurrency")


async def test_withdrawing_the_only_claim_recalls_and_closes_the_case(
    intake: IntakeService, store: InMemoryStore, partners: InMemoryPartnerDirectory
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    case_id = first.case_id or ""
    assignment_id = store.cases[case_id].assignment_id
    outbox = await intake.handle([incoming(withdrawal(1), type="claim.withdrawn")])
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.WITHDRAWN
    assert receipt.case_id == case_id
    [recall] = only(outbox, m.CaseRecalled.TYPE)
    assert recall.routing_key == f"{PID}.case.recalled"
    assert recall.message_id == f"rcl:{assignment_id}"
    assert m.CaseRecalled.model_validate_json(recall.body).assignment_id == assignment_id
    state = store.cases[case_id]
    assert (state.lifecycle, state.close_code) == (Lifecycle.CLOSED, "withdrawn")
    assert partners.open_cases() == {PID: 0}
    assert store.claims["FS-DE-001/INV-000001"]["status"] == "withdrawn"

    again = await one_receipt(intake, incoming(withdrawal(1), type="claim.withdrawn"))
    assert again.status is ReceiptStatus.DUPLICATE


async def test_withdrawing_an_unknown_claim_is_rejected(intake: IntakeService) -> None:
    receipt = await one_receipt(intake, incoming(withdrawal(9), type="claim.withdrawn"))
    assert receipt.status is ReceiptStatus.REJECTED
    assert (receipt.errors[0].path, receipt.errors[0].rule) == ("$.invoice_number", "exists")


async def test_a_withdrawn_claim_placed_again_reopens_its_case(
    intake: IntakeService, store: InMemoryStore
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    await intake.handle([incoming(withdrawal(1), type="claim.withdrawn")])
    outbox = await intake.handle([incoming(claim_body(1))])
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.ACCEPTED
    assert receipt.case_id == first.case_id
    state = store.cases[first.case_id or ""]
    assert state.lifecycle is Lifecycle.ASSIGNED
    assert state.assignment_id == f"{state.case_id}-A2"
    assert [o.message_id for o in only(outbox, m.CaseAssigned.TYPE)] == [f"asg:{state.case_id}-A2"]


# --- case.updated: the partner holding a case learns of its changed claims -------------------


def updates(outbox: list[OutMessage]) -> list[tuple[OutMessage, m.CaseUpdated]]:
    found = []
    for o in only(outbox, m.CaseUpdated.TYPE):
        body = m.CaseUpdated.model_validate_json(o.body)
        assert (o.exchange, o.routing_key) == (outgoing.PARTNERS_OUT, f"{PID}.case.updated")
        assert o.correlation_id == body.case_id
        found.append((o, body))
    return found


async def test_a_claim_added_to_an_assigned_case_updates_its_partner(
    intake: IntakeService, store: InMemoryStore
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1)))
    case_id = first.case_id or ""
    msg = incoming(claim_body(2, debtor=1, principal="500.00"))
    outbox = await intake.handle([msg])
    [receipt] = receipts(outbox)
    assert (receipt.status, receipt.case_id) == (ReceiptStatus.ACCEPTED, case_id)
    [(out, body)] = updates(outbox)
    assert out.message_id == f"upd:{msg.message_id}"
    state = store.cases[case_id]
    assert state.lifecycle is Lifecycle.ASSIGNED
    assert (body.case_id, body.partner_id) == (case_id, PID)
    assert body.assignment_id == state.assignment_id
    assert (body.change, body.invoice_number) == (m.CaseChange.CLAIM_ADDED, "INV-000002")
    assert [c.invoice_number for c in body.claims] == ["INV-000001", "INV-000002"]
    assert (body.total, body.currency) == ("1605.00", "EUR")
    assert body.updated_at == T0
    assert only(outbox, m.CaseAssigned.TYPE) == []
    # the same content again is a duplicate: the partner hears nothing
    outbox = await intake.handle([incoming(claim_body(2, debtor=1, principal="500.00"))])
    assert receipts(outbox)[0].status is ReceiptStatus.DUPLICATE
    assert updates(outbox) == []


async def test_an_amended_claim_of_an_assigned_case_updates_its_partner(
    intake: IntakeService, store: InMemoryStore
) -> None:
    await one_receipt(intake, incoming(claim_body(1)))
    outbox = await intake.handle([incoming(claim_body(1, principal="400.00"))])
    [(_, body)] = updates(outbox)
    assert (body.change, body.invoice_number) == (m.CaseChange.CLAIM_AMENDED, "INV-000001")
    assert [(c.invoice_number, c.principal) for c in body.claims] == [("INV-000001", "400.00")]
    assert body.total == "452.50"


async def test_withdrawing_one_of_two_claims_updates_the_partner_the_last_recalls(
    intake: IntakeService, store: InMemoryStore
) -> None:
    await intake.handle([incoming(claim_body(1)), incoming(claim_body(2, debtor=1))])
    outbox = await intake.handle([incoming(withdrawal(1), type="claim.withdrawn")])
    [(_, body)] = updates(outbox)
    assert (body.change, body.invoice_number) == (m.CaseChange.CLAIM_WITHDRAWN, "INV-000001")
    assert [c.invoice_number for c in body.claims] == ["INV-000002"]
    assert body.total == "1052.50"
    assert only(outbox, m.CaseRecalled.TYPE) == []

    outbox = await intake.handle([incoming(withdrawal(2), type="claim.withdrawn")])
    assert updates(outbox) == []
    [recall] = only(outbox, m.CaseRecalled.TYPE)
    assert m.CaseRecalled.model_validate_json(recall.body).case_id == body.case_id


async def test_a_case_with_no_partner_updates_nobody(
    intake: IntakeService, store: InMemoryStore
) -> None:
    first = await one_receipt(intake, incoming(claim_body(1, country="FR")))
    assert store.cases[first.case_id or ""].lifecycle is Lifecycle.UNASSIGNED
    for msg in (
        incoming(claim_body(2, debtor=1, country="FR")),
        incoming(claim_body(2, debtor=1, country="FR", principal="9.00")),
        incoming(withdrawal(2), type="claim.withdrawn"),
    ):
        outbox = await intake.handle([msg])
        assert receipts(outbox)[0].case_id == first.case_id
        assert [o.type for o in outbox] == [m.ClaimReceipt.TYPE]


async def test_a_claim_message_redelivered_after_a_lost_commit_gives_the_same_update(
    intake: IntakeService, store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await one_receipt(intake, incoming(claim_body(1)))
    msg = incoming(claim_body(2, debtor=1))
    with monkeypatch.context() as patch:  # the worker dies before its commit lands
        patch.setattr(store, "_apply", lambda changes: None)
        [(lost, _)] = updates(await intake.handle([msg]))
    assert store.outbox.keys().isdisjoint({lost.message_id})
    [(again, _)] = updates(await intake.handle([msg]))
    assert (again.message_id, again.body) == (lost.message_id, lost.body)
    assert updates(await intake.handle([msg])) == []  # seen: nothing new


# --- rejections ------------------------------------------------------------------------------


async def test_a_claim_without_debtor_country_is_rejected(
    intake: IntakeService, store: InMemoryStore
) -> None:
    body = claim_body(1)
    del body["debtor"]["country"]
    msg = incoming(body)
    outbox = await intake.handle([msg])
    assert [o.type for o in outbox] == [m.ClaimReceipt.TYPE]
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.REJECTED
    assert receipt.case_id is None
    assert receipt.creditor_id == CREDITOR
    assert receipt.invoice_number == "INV-000001"
    assert (receipt.errors[0].path, receipt.errors[0].rule) == ("$.debtor", "required")
    assert "country" in receipt.errors[0].message
    assert store.cases == {}
    assert store.claims == {}
    [rejection] = store.rejections.values()
    assert rejection["message_id"] == msg.message_id
    assert rejection["errors"][0]["path"] == "$.debtor"
    assert store.inbox[msg.message_id or ""]["status"] == "rejected"


@pytest.mark.parametrize(
    ("msg", "path", "rule"),
    [
        (incoming(b"{not json", mid="x1"), "$", "json"),
        (incoming(b"[1, 2]", mid="x2"), "$", "type"),
        (incoming(claim_body(1), mid="x3", content_type="text/plain"), "$", "contentType"),
        (incoming(claim_body(1), mid="x4", type="claim.deleted"), "$", "messageType"),
        (incoming(b" " * (64 * 1024 + 1), mid="x5"), "$", "maxBodyBytes"),
        (incoming({**claim_body(1), "principal": 12.5}, mid="x6"), "$.principal", "type"),
        (incoming({**claim_body(1), "currency": "EUX"}, mid="x7"), "$.currency", "enum"),
        (incoming({**claim_body(1), "colour": "red"}, mid="x8"), "$", "additionalProperties"),
    ],
    ids=["json", "array", "content-type", "type", "size", "float", "currency", "extra"],
)
async def test_invalid_messages_are_rejected_with_a_reason(
    intake: IntakeService, store: InMemoryStore, msg: Incoming, path: str, rule: str
) -> None:
    receipt = await one_receipt(intake, msg)
    assert receipt.status is ReceiptStatus.REJECTED
    assert (receipt.errors[0].path, receipt.errors[0].rule) == (path, rule)
    assert receipt.creditor_id == CREDITOR
    assert store.cases == {}
    assert len(store.rejections) == 1


async def test_a_rejected_claim_is_addressed_from_what_can_be_read(
    intake: IntakeService,
) -> None:
    body = {**claim_body(1), "creditor_id": "other-creditor", "principal": "-1"}
    receipt = await one_receipt(intake, incoming(body))
    assert receipt.status is ReceiptStatus.REJECTED
    assert receipt.creditor_id == "other-creditor"
    assert receipt.invoice_number == "INV-000001"


# --- exactly one receipt --------------------------------------------------------------------


async def test_one_receipt_per_message_id_within_a_batch(
    intake: IntakeService, store: InMemoryStore
) -> None:
    outbox = await intake.handle(
        [incoming(claim_body(1), mid="same"), incoming(claim_body(1), mid="same")]
    )
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.ACCEPTED
    assert len(only(outbox, m.CaseAssigned.TYPE)) == 1


async def test_a_message_id_seen_in_an_earlier_batch_produces_nothing(
    intake: IntakeService, store: InMemoryStore
) -> None:
    await intake.handle([incoming(claim_body(1), mid="same")])
    before = (dict(store.cases), dict(store.event_log), set(store.outbox), dict(store.inbox))
    # even with another body: the id was processed, its receipt is already in the outbox
    assert await intake.handle([incoming(claim_body(2), mid="same")]) == []
    assert (dict(store.cases), dict(store.event_log), set(store.outbox), dict(store.inbox)) == (
        before
    )
    bad = incoming(b"{", mid="bad")
    assert len(await intake.handle([bad])) == 1
    assert await intake.handle([bad]) == []


async def test_without_a_message_id_the_body_identifies_the_message(
    intake: IntakeService,
) -> None:
    outbox = await intake.handle([incoming(claim_body(1), mid=None)])
    [receipt] = receipts(outbox)
    assert receipt.claim_message_id.startswith("sha256:")
    assert await intake.handle([incoming(claim_body(1), mid=None)]) == []


# --- cases ---------------------------------------------------------------------------------


async def test_claims_against_one_debtor_of_one_entity_form_one_case(
    intake: IntakeService, store: InMemoryStore
) -> None:
    outbox = await intake.handle(
        [incoming(claim_body(1, debtor=5)), incoming(claim_body(2, debtor=5))]
    )
    a, b = receipts(outbox)
    assert a.case_id == b.case_id
    [assignment] = only(outbox, m.CaseAssigned.TYPE)
    body = m.CaseAssigned.model_validate_json(assignment.body)
    assert sorted(c.invoice_number for c in body.claims) == ["INV-000001", "INV-000002"]
    assert body.total == "2105.00"

    later = await one_receipt(intake, incoming(claim_body(3, debtor=5)))
    assert later.case_id == a.case_id
    assert len(store.cases[a.case_id or ""].claims) == 3

    other_entity = await one_receipt(intake, incoming(claim_body(4, debtor=5, entity="FS-AT-1")))
    other_debtor = await one_receipt(intake, incoming(claim_body(5, debtor=6)))
    assert len({a.case_id, other_entity.case_id, other_debtor.case_id}) == 3
    assert len(store.cases) == 3


async def test_two_intake_workers_on_one_debtor_lose_nothing(
    store: InMemoryStore, partners: InMemoryPartnerDirectory, clock: FakeClock
) -> None:
    workers = [IntakeService(store, partners, clock=clock) for _ in range(2)]
    results = await asyncio.gather(
        *(
            w.handle([incoming(claim_body(n, debtor=1)) for n in range(k * 10, k * 10 + 10)])
            for k, w in enumerate(workers)
        )
    )
    statuses = [r.status for out in results for r in receipts(out)]
    assert statuses == [ReceiptStatus.ACCEPTED] * 20
    [state] = store.cases.values()
    assert len(state.claims) == 20
    assert state.version == len(await store.events(state.case_id))
    assert len([o for out in results for o in only(out, m.CaseAssigned.TYPE)]) == 1
    assert store.conflicts >= 1, "the workers did not overlap"


async def test_no_partner_for_the_country_leaves_the_case_unassigned(
    intake: IntakeService, store: InMemoryStore
) -> None:
    outbox = await intake.handle([incoming(claim_body(1, country="JP"))])
    [receipt] = receipts(outbox)
    assert receipt.status is ReceiptStatus.ACCEPTED
    assert only(outbox, m.CaseAssigned.TYPE) == []
    state = store.cases[receipt.case_id or ""]
    assert state.lifecycle is Lifecycle.UNASSIGNED
    [_, unassigned] = await store.events(state.case_id)
    assert "JP" in unassigned.data["reason"]


async def test_capacity_counts_this_batch_too(store: InMemoryStore, clock: FakeClock) -> None:
    partners = InMemoryPartnerDirectory(
        [PartnerProfile(PID, frozenset({"DE"}), max_open_cases=3)], open_cases={PID: 1}
    )
    intake = IntakeService(store, partners, clock=clock)
    outbox = await intake.handle([incoming(claim_body(n)) for n in range(1, 6)])
    assert len(only(outbox, m.CaseAssigned.TYPE)) == 2
    lifecycles = sorted(s.lifecycle.value for s in store.cases.values())
    assert lifecycles == ["assigned", "assigned", "unassigned", "unassigned", "unassigned"]
    assert partners.open_cases() == {PID: 3}


# --- batches -------------------------------------------------------------------------------


def reconciliation(creditor: str, batch: str) -> Callable[[Mapping[str, int]], OutMessage]:
    def build(totals: Mapping[str, int]) -> OutMessage:
        return outgoing.batch_reconciled(
            m.BatchReconciled(
                creditor_id=creditor,
                batch_id=batch,
                expected=totals["expected"],
                received=totals["received"],
                accepted=totals["accepted"],
                duplicate=totals["duplicate"],
                amended=totals["amended"],
                withdrawn=totals["withdrawn"],
                rejected=totals["rejected"],
                completed_at=T0,
            )
        )

    return build


async def test_a_batch_is_counted_and_reconciled_once(
    intake: IntakeService, store: InMemoryStore, clock: FakeClock
) -> None:
    await one_receipt(intake, incoming(claim_body(1)))  # placed before, outside the batch
    await one_receipt(intake, incoming(claim_body(2)))
    batch = ("B-2026-10", 5)
    bad = claim_body(5, batch=batch)
    del bad["debtor"]["country"]
    first = [
        incoming(claim_body(1, batch=batch)),  # duplicate
        incoming(claim_body(2, principal="1.00", batch=batch)),  # amended
        incoming(claim_body(3, batch=batch)),  # accepted
    ]
    await intake.handle(first)
    assert await store.open_batches() == [(CREDITOR, "B-2026-10")]
    build = reconciliation(CREDITOR, "B-2026-10")
    assert await store.reconcile(CREDITOR, "B-2026-10", build) is None

    clock.advance(60)
    rest = [
        incoming(bad),  # rejected
        incoming(withdrawal(3, batch_id=batch[0], batch_size=5), type="claim.withdrawn"),
    ]
    statuses = [r.status.value for r in receipts(await intake.handle(rest))]
    assert statuses == ["rejected", "withdrawn"]
    summary = await store.reconcile(CREDITOR, "B-2026-10", build)
    assert summary is not None
    body = m.BatchReconciled.model_validate_json(summary.body)
    assert body.model_dump(include={"expected", "received"}) == {"expected": 5, "received": 5}
    assert (body.accepted, body.duplicate, body.amended, body.withdrawn, body.rejected) == (
        1,
        1,
        1,
        1,
        1,
    )
    assert await store.reconcile(CREDITOR, "B-2026-10", build) is None
    assert await store.open_batches() == []
    # a message id seen before is not counted twice
    await intake.handle([first[0]])
    assert store.batch_counts[(CREDITOR, "B-2026-10")]["received"] == 5


async def test_an_unreadable_row_still_counts_in_its_batch(
    intake: IntakeService, store: InMemoryStore
) -> None:
    """The importer sends a row it cannot map as raw bytes with its batch in the headers."""
    raw = Incoming(
        body=b"INV-9,not,a,claim",
        message_id="row-9",
        type="claim.placed",
        routing_key="claim.placed",
        content_type="application/json",
        headers={"creditor_id": CREDITOR, "batch_id": "B-RAW", "batch_size": 1},
    )
    [receipt] = await intake.handle([raw])
    body = m.ClaimReceipt.model_validate_json(receipt.body)
    assert body.status is ReceiptStatus.REJECTED
    assert body.batch_id == "B-RAW"
    assert store.batch_counts[(CREDITOR, "B-RAW")]["rejected"] == 1
    assert store.batch_counts[(CREDITOR, "B-RAW")]["expected"] == 1
