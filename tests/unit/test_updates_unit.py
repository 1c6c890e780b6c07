"""Partner updates (``UpdatesService``) on the in-memory ports: who may report, what is
applied, what is refused with an ``error.reply``, and that a refusal changes nothing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from hub.domain.model import EventKind, Lifecycle, fold
from hub.domain.routing import PartnerProfile
from hub.service import outgoing
from hub.service.intake import IntakeService
from hub.service.memory import (
    FakeClock,
    InMemoryDocuments,
    InMemoryPartnerDirectory,
    InMemoryStore,
)
from hub.service.ports import Incoming, OutMessage
from hub.service.updates import UpdatesService
from partner_sdk import messages as m
from tests.support import claim_body

PID = "acme-de"
OTHER = "other-fr"
T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)
OCCURRED = "2026-10-01T08:30:00+02:00"


@dataclass
class World:
    clock: FakeClock
    store: InMemoryStore
    partners: InMemoryPartnerDirectory
    documents: InMemoryDocuments
    intake: IntakeService
    updates: UpdatesService
    case_id: str
    assignment_id: str


def make_world(*profiles: PartnerProfile) -> World:
    clock = FakeClock(T0)
    store = InMemoryStore(clock=clock)
    partners = InMemoryPartnerDirectory(
        profiles
        or [PartnerProfile(PID, frozenset({"DE"})), PartnerProfile(OTHER, frozenset({"FR"}))]
    )
    documents = InMemoryDocuments(clock)
    intake = IntakeService(store, partners, clock=clock)
    updates = UpdatesService(store, partners, documents, clock=clock)
    return World(clock, store, partners, documents, intake, updates, "", "")


async def with_case(world: World) -> World:
    body = json.dumps(claim_body(1)).encode()
    outbox = await world.intake.handle(
        [Incoming(body, "claim-1", "claim.placed", "claim.placed", content_type="application/json")]
    )
    [assignment] = [o for o in outbox if o.type == m.CaseAssigned.TYPE]
    assigned = m.CaseAssigned.model_validate_json(assignment.body)
    world.case_id, world.assignment_id = assigned.case_id, assigned.assignment_id
    world.clock.advance(3600)
    return world


@pytest.fixture
async def world() -> World:
    return await with_case(make_world())


_ids = iter(range(1, 1_000_000))


def report(
    world: World,
    type: str,
    fields: Mapping[str, Any] | None = None,
    *,
    sender: str | None = PID,
    prefix: str | None = None,
    mid: str | None = None,
    case_id: str | None = None,
) -> Incoming:
    body = {"case_id": case_id or world.case_id, "occurred_at": OCCURRED, **(fields or {})}
    return Incoming(
        body=json.dumps(body).encode(),
        message_id=mid or f"upd-{next(_ids)}",
        type=type,
        routing_key=f"{prefix or sender}.{type}",
        user_id=sender,
        content_type="application/json",
    )


def inbox_key(msg: Incoming) -> str:
    """The inbox keys a partner's message by its sender and message id."""
    sender = msg.user_id or msg.routing_key.partition(".")[0] or "-"
    return f"partner:{sender}:{msg.message_id}"


def replies(outbox: list[OutMessage]) -> list[tuple[str, m.ErrorReply]]:
    found = []
    for o in outbox:
        if o.type == m.ErrorReply.TYPE:
            reply = m.ErrorReply.model_validate_json(o.body)
            assert o.exchange == outgoing.PARTNERS_OUT
            assert o.message_id == f"err:{o.routing_key.split('.')[0]}:{reply.in_reply_to}"
            found.append((o.routing_key, reply))
    return found


async def refused(world: World, msg: Incoming) -> tuple[str, m.ErrorReply]:
    """Handle ``msg``, expect one error reply and no change to any case."""
    cases_before = dict(world.store.cases)
    events_before = dict(world.store.event_log)
    outbox = await world.updates.handle([msg])
    [(key, reply)] = replies(outbox)
    assert len(outbox) == 1
    assert reply.in_reply_to == msg.message_id
    assert reply.occurred_at == world.clock()
    assert world.store.cases == cases_before
    assert world.store.event_log == events_before
    assert world.store.inbox[inbox_key(msg)]["status"] == "refused"
    rejection = world.store.rejections[inbox_key(msg)]
    assert rejection["code"] == reply.code
    return key, reply


async def applied(world: World, msg: Incoming) -> list[OutMessage]:
    outbox = await world.updates.handle([msg])
    assert replies(outbox) == []
    assert world.store.inbox[inbox_key(msg)]["status"] == "applied"
    return outbox


def state(world: World) -> Any:
    return world.store.cases[world.case_id]


ACTIVITY = {"kind": "call", "outcome": "right_party_contact", "note": "promised to pay"}


# --- authorisation ---------------------------------------------------------------------------


async def test_the_assignee_accepts(world: World) -> None:
    msg = report(world, "case.accepted", {"assignment_id": world.assignment_id})
    assert await applied(world, msg) == []
    s = state(world)
    assert s.lifecycle is Lifecycle.ACCEPTED
    assert s.accepted_at == dt.datetime(2026, 10, 1, 6, 30, tzinfo=dt.UTC)
    last = (await world.store.events(world.case_id))[-1]
    assert (last.kind, last.actor, last.message_id) == (EventKind.ACCEPTED, PID, msg.message_id)
    assert last.recorded_at == T0 + dt.timedelta(hours=1)
    assert last.occurred_at == dt.datetime(2026, 10, 1, 6, 30, tzinfo=dt.UTC)


async def test_a_foreign_partner_is_refused(world: World) -> None:
    key, reply = await refused(world, report(world, "case.accepted", sender=OTHER))
    assert key == f"{OTHER}.error.reply"
    assert reply.code == "not_assignee"
    assert reply.case_id == world.case_id
    assert reply.in_reply_to_type == "case.accepted"
    assert state(world).lifecycle is Lifecycle.ASSIGNED


async def test_the_routing_key_must_start_with_the_user_id(world: World) -> None:
    msg = report(world, "case.accepted", sender=OTHER, prefix=PID)
    key, reply = await refused(world, msg)
    assert key == f"{OTHER}.error.reply"
    assert reply.code == "not_assignee"
    assert PID in reply.message and OTHER in reply.message


async def test_a_message_without_user_id_is_refused(world: World) -> None:
    key, reply = await refused(world, report(world, "case.accepted", sender=None, prefix=PID))
    assert key == f"{PID}.error.reply"
    assert reply.code == "invalid_message"
    assert "user_id" in reply.message


async def test_an_unknown_case(world: World) -> None:
    key, reply = await refused(world, report(world, "case.accepted", case_id="C-NOSUCHCASE"))
    assert key == f"{PID}.error.reply"
    assert reply.code == "unknown_case"
    assert reply.case_id == "C-NOSUCHCASE"


async def test_an_illegal_transition(world: World) -> None:
    _, reply = await refused(world, report(world, "case.activity", ACTIVITY))
    assert reply.code == "illegal_transition"
    assert "assigned" in reply.message


async def test_a_report_for_another_assignment(world: World) -> None:
    msg = report(world, "case.accepted", {"assignment_id": "C-OLD-A9"})
    _, reply = await refused(world, msg)
    assert reply.code == "illegal_transition"


async def test_an_invalid_body_is_refused_with_its_errors(world: World) -> None:
    await applied(world, report(world, "case.accepted"))
    msg = report(world, "case.payment", {"amount": 12.5, "currency": "EUR"})
    _, reply = await refused(world, msg)
    assert reply.code == "invalid_message"
    assert (reply.errors[0].path, reply.errors[0].rule) == ("$.amount", "type")


async def test_an_unknown_type_is_refused(world: World) -> None:
    _, reply = await refused(world, report(world, "case.assigned"))
    assert reply.code == "unknown_type"


async def test_a_replayed_message_id_changes_nothing(world: World) -> None:
    accept = report(world, "case.accepted", mid="once")
    await applied(world, accept)
    version = state(world).version
    assert await world.updates.handle([accept]) == []
    assert await world.updates.handle([accept, accept]) == []
    assert state(world).version == version

    wrong = report(world, "case.accepted", sender=OTHER, mid="refused-once")
    assert len(await world.updates.handle([wrong, wrong])) == 1
    assert await world.updates.handle([wrong]) == []


# --- work on the case ------------------------------------------------------------------------


async def test_a_case_worked_to_closure(world: World) -> None:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("case.accepted", {}),
        ("case.activity", ACTIVITY),
        ("case.promise", {"amount": "500.00", "currency": "EUR", "due_date": "2026-11-01"}),
        ("case.payment", {"amount": "500.00", "currency": "EUR"}),
        ("case.dispute", {"status": "opened", "reason": "invoice contested"}),
        ("case.dispute", {"status": "resolved", "reason": "credit note"}),
        ("case.legal_step", {"country": "DE", "step": "mahnbescheid", "phase": "legal"}),
        ("case.payment", {"amount": "552.50", "currency": "EUR"}),
        ("case.closed", {"close_code": "paid"}),
    ]
    for type, fields in steps:
        world.clock.advance(60)
        await applied(world, report(world, type, fields))
    s = state(world)
    assert (s.lifecycle, s.close_code, s.phase.value) == (Lifecycle.CLOSED, "paid", "legal")
    assert s.collected == "1052.50"
    assert s.promised == "500.00"
    events = await world.store.events(world.case_id)
    assert fold(events) == s
    assert world.partners.open_cases() == {PID: 0}


async def test_decline_reassigns_to_another_partner(world: World) -> None:
    second = "second-de"
    await world.partners.upsert(PartnerProfile(second, frozenset({"DE"})))
    outbox = await applied(world, report(world, "case.declined", {"reason": "conflict"}))
    [assignment] = outbox
    assert assignment.routing_key == f"{second}.case.assigned"
    body = m.CaseAssigned.model_validate_json(assignment.body)
    assert body.assignment_id == f"{world.case_id}-A2"
    s = state(world)
    assert (s.lifecycle, s.partner_id, s.declined_by) == (Lifecycle.ASSIGNED, second, (PID,))
    assert world.partners.open_cases() == {PID: 0, second: 1}


async def test_decline_by_the_only_partner_leaves_the_case_unassigned(world: World) -> None:
    assert await applied(world, report(world, "case.declined", {"reason": "too small"})) == []
    s = state(world)
    assert (s.lifecycle, s.partner_id, s.declined_by) == (Lifecycle.UNASSIGNED, None, (PID,))
    assert world.partners.open_cases() == {PID: 0}


async def test_a_foreign_partner_cannot_decline_for_the_assignee(world: World) -> None:
    _, reply = await refused(world, report(world, "case.declined", {"reason": "x"}, sender=OTHER))
    assert reply.code == "not_assignee"


# --- documents ---------------------------------------------------------------------------------


def document(data: bytes, **changes: Any) -> dict[str, Any]:
    fields = {
        "document_id": "D-1",
        "kind": "letter",
        "filename": "letter-before-action.pdf",
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_base64": base64.b64encode(data).decode(),
    }
    fields.update(changes)
    return fields


async def test_a_document_is_stored_with_its_case(world: World) -> None:
    await applied(world, report(world, "case.accepted"))
    data = b"%PDF-1.7 Mahnung"
    msg = report(world, "document.added", document(data))
    await applied(world, msg)
    file_id = f"{world.case_id}/D-1"
    stored = await world.documents.get(file_id)
    assert stored is not None
    info, content = stored
    assert content == data
    assert info["filename"] == "letter-before-action.pdf"
    assert info["metadata"] == {
        "case_id": world.case_id,
        "document_id": "D-1",
        "kind": "letter",
        "content_type": "application/pdf",
        "uploader": PID,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "partner_id": PID,
    }
    assert [d["_id"] for d in await world.documents.list_for_case(world.case_id)] == [file_id]
    last = (await world.store.events(world.case_id))[-1]
    assert last.kind is EventKind.DOCUMENT_ADDED
    assert "content_base64" not in last.data
    assert last.data["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "changes",
    [
        {"sha256": "0" * 64},
        {"size": 3},
        {"content_base64": "!!not base64!!"},
    ],
    ids=["sha256", "size", "base64"],
)
async def test_a_document_that_does_not_match_its_description(
    world: World, changes: dict[str, Any]
) -> None:
    await applied(world, report(world, "case.accepted"))
    _, reply = await refused(world, report(world, "document.added", document(b"%PDF", **changes)))
    assert reply.code == "invalid_document"
    assert world.documents.files == {}


async def test_a_foreign_partner_cannot_add_a_document(world: World) -> None:
    await applied(world, report(world, "case.accepted"))
    msg = report(world, "document.added", document(b"%PDF spam"), sender=OTHER)
    _, reply = await refused(world, msg)
    assert reply.code == "not_assignee"
    assert world.documents.files == {}


# --- downloads ---------------------------------------------------------------------------------


async def uploaded(world: World, data: bytes = b"%PDF-1.7 Mahnung") -> bytes:
    await applied(world, report(world, "case.accepted"))
    await applied(world, report(world, "document.added", document(data)))
    return data


def request(world: World, document_id: str = "D-1", **kwargs: Any) -> Incoming:
    return report(world, "document.requested", {"document_id": document_id}, **kwargs)


async def served(world: World, msg: Incoming) -> m.DocumentContent:
    """Handle ``msg``, expect its one answer: a transient ``document.content``."""
    before = dict(world.store.cases)
    outbox = await world.updates.handle([msg])
    [reply] = outbox
    assert reply.transient and reply.body == b""
    assert reply.message_id == f"doc:{msg.user_id}:{msg.message_id}"
    assert (reply.exchange, reply.routing_key) == (
        outgoing.PARTNERS_OUT,
        f"{msg.user_id}.document.content",
    )
    assert reply.message_id not in world.store.outbox
    assert world.store.cases == before  # a read changes no case
    assert inbox_key(msg) not in world.store.inbox  # so a redelivery is answered again
    content = m.DocumentContent.model_validate_json((await reply.loaded()).body)
    assert content.in_reply_to == msg.message_id
    return content


async def test_the_assignee_downloads_a_document(world: World) -> None:
    data = await uploaded(world)
    msg = request(world)
    content = await served(world, msg)
    assert base64.b64decode(content.content_base64) == data
    assert (content.case_id, content.document_id, content.kind) == (world.case_id, "D-1", "letter")
    assert (content.filename, content.content_type) == (
        "letter-before-action.pdf",
        "application/pdf",
    )
    assert (content.size, content.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    [record] = await world.store.downloads(world.case_id)
    assert record == {
        "_id": inbox_key(msg),
        "message_id": msg.message_id,
        "partner_id": PID,
        "case_id": world.case_id,
        "document_id": "D-1",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "requested_at": dt.datetime(2026, 10, 1, 6, 30, tzinfo=dt.UTC),
        "served_at": world.clock(),
        "answers": 1,
    }
    assert world.store.rejections == {}


async def test_a_redelivered_request_is_answered_again_and_recorded_once(world: World) -> None:
    await uploaded(world)
    msg = request(world)
    first = await served(world, msg)
    world.clock.advance(5)
    assert await served(world, msg) == first
    [record] = await world.store.downloads(world.case_id)
    assert record["answers"] == 2
    assert record["served_at"] == world.clock() - dt.timedelta(seconds=5)


async def test_a_document_uploaded_earlier_in_the_batch_is_served(world: World) -> None:
    await applied(world, report(world, "case.accepted"))
    upload = report(world, "document.added", document(b"%PDF same batch"))
    outbox = await world.updates.handle([upload, request(world)])
    [reply] = outbox
    content = m.DocumentContent.model_validate_json((await reply.loaded()).body)
    assert base64.b64decode(content.content_base64) == b"%PDF same batch"


async def test_another_partner_cannot_download_and_learns_nothing(world: World) -> None:
    await uploaded(world)
    for document_id in ("D-1", "D-NONE"):  # the same answer whether the document exists
        key, reply = await refused(world, request(world, document_id, sender=OTHER))
        assert key == f"{OTHER}.error.reply"
        assert (reply.code, reply.case_id) == ("not_assignee", world.case_id)
        assert reply.in_reply_to_type == "document.requested"
    assert await world.store.downloads(world.case_id) == []
    assert {r["code"] for r in world.store.rejections.values()} == {"not_assignee"}


@pytest.mark.parametrize(
    ("document_id", "case_id", "code"),
    [("D-2", None, "unknown_document"), ("D-1", "C-NOSUCHCASE", "unknown_case")],
)
async def test_an_unknown_document_or_case_is_refused(
    world: World, document_id: str, case_id: str | None, code: str
) -> None:
    await uploaded(world)
    msg = request(world, document_id, case_id=case_id)
    _, reply = await refused(world, msg)
    assert reply.code == code
    assert world.store.rejections[inbox_key(msg)]["type"] == "document.requested"
    assert await world.store.downloads(world.case_id) == []


async def test_a_partner_that_declined_the_case_cannot_download(world: World) -> None:
    await applied(world, report(world, "case.declined", {"reason": "conflict"}))
    _, reply = await refused(world, request(world))
    assert reply.code == "not_assignee"


# --- batches -----------------------------------------------------------------------------------


async def test_a_batch_mixes_applied_and_refused_reports(world: World) -> None:
    batch = [
        report(world, "case.activity", ACTIVITY),  # refused: not accepted yet
        report(world, "case.accepted"),
        report(world, "case.activity", ACTIVITY),  # applied: accepted by now
        report(world, "case.accepted", sender=OTHER),
    ]
    outbox = await world.updates.handle(batch)
    assert [(key, r.in_reply_to, r.code) for key, r in replies(outbox)] == [
        (f"{PID}.error.reply", batch[0].message_id, "illegal_transition"),
        (f"{OTHER}.error.reply", batch[3].message_id, "not_assignee"),
    ]
    s = state(world)
    assert s.lifecycle is Lifecycle.IN_PROGRESS
    kinds = [e.kind for e in await world.store.events(world.case_id)]
    assert kinds[-2:] == [EventKind.ACCEPTED, EventKind.ACTIVITY]


async def test_reassignments_in_one_batch_respect_capacity() -> None:
    world = make_world(PartnerProfile(PID, frozenset({"DE"})))
    bodies = [json.dumps(claim_body(n, debtor=n)).encode() for n in (1, 2)]
    outbox = await world.intake.handle(
        [
            Incoming(b, f"c{i}", "claim.placed", "claim.placed", content_type="application/json")
            for i, b in enumerate(bodies)
        ]
    )
    cases = [
        m.CaseAssigned.model_validate_json(o.body).case_id
        for o in outbox
        if o.type == m.CaseAssigned.TYPE
    ]
    assert len(cases) == 2
    await world.partners.upsert(PartnerProfile("small-de", frozenset({"DE"}), max_open_cases=1))
    declines = [
        report(world, "case.declined", {"reason": "busy"}, case_id=case_id) for case_id in cases
    ]
    await world.updates.handle(declines)
    holders = [world.store.cases[c].partner_id for c in cases]
    assert holders.count("small-de") == 1
    assert world.partners.open_cases()["small-de"] == 1


async def test_message_ids_of_different_senders_do_not_collide(world: World) -> None:
    await refused(world, report(world, "case.accepted", sender=OTHER, mid="msg-0001"))
    outbox = await world.updates.handle([report(world, "case.accepted", mid="msg-0001")])
    assert outbox == []
    assert state(world).lifecycle is Lifecycle.ACCEPTED
