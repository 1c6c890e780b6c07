"""The coordinator's commands and the partners' broker users, against the real services.

Each test has its own database and AMQP namespace (``settings``/``hub`` fixtures), its
own partners (ids with a random suffix) and deletes the RabbitMQ users it created.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.exceptions import ChannelAccessRefused
from typer.testing import CliRunner

from hub.bootstrap import Hub
from hub.config import Settings
from hub.domain.errors import IllegalTransition, InvalidCommand, UnknownCase
from hub.domain.model import CaseState, EventKind, Lifecycle, case_id_for
from hub.domain.routing import PartnerProfile
from hub.entrypoints.cli import app
from hub.infra.rabbit_admin import RabbitAdmin
from hub.service.coordinator import Coordinator
from hub.service.ports import OutMessage
from partner_sdk import messages as m
from partner_sdk.messages import Phase
from tests.support import claim_body, eventually, publish_json

pytestmark = pytest.mark.services


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class Network:
    """Partners of one test: profiles in the hub's directory, provisioned broker users."""

    hub: Hub
    admin: RabbitAdmin
    urls: dict[str, str] = field(default_factory=dict)

    async def add(
        self, name: str, countries: Sequence[str], *, sla_hours: float = 48.0, user: bool = True
    ) -> str:
        pid = f"{name}-{uuid.uuid4().hex[:6]}"
        await self.hub.partners.upsert(
            PartnerProfile(
                pid,
                frozenset(countries),
                frozenset(Phase),
                sla_hours=sla_hours,
                name=f"{name} test partner",
            )
        )
        if user:
            self.urls[pid] = await self.admin.provision_partner(pid, "pw-" + uuid.uuid4().hex)
        else:
            await self.admin.declare_partner_queue(pid)
        return pid


@pytest.fixture
async def network(hub: Hub, settings: Settings) -> AsyncIterator[Network]:
    net = Network(hub, RabbitAdmin.from_settings(settings))
    try:
        yield net
    finally:
        for pid in net.urls:
            await net.admin.remove_partner(pid)


@pytest.fixture
async def channel(hub: Hub) -> AsyncIterator[AbstractChannel]:
    async with hub.connection.channel() as ch:
        yield ch


@pytest.fixture
def coordinator(hub: Hub) -> Coordinator:
    return Coordinator(hub.store, hub.partners)


# --- helpers ----------------------------------------------------------------------------


async def place_claim(hub: Hub, channel: AbstractChannel, country: str = "DE") -> str:
    """Publish one claim of a new debtor; return its case id."""
    n = uuid.uuid4().int % 1_000_000
    body = claim_body(n, country=country)
    claim = m.ClaimPlaced.model_validate_json(json.dumps(body))
    await publish_json(channel, hub.topology.claims_in, "claim.placed", body, type="claim.placed")
    return case_id_for(claim.creditor_entity, claim.debtor.model_dump())


async def wait_case(hub: Hub, case_id: str, *lifecycles: Lifecycle) -> CaseState:
    found: list[CaseState] = []

    async def check() -> bool:
        state = await hub.store.case(case_id)
        if state is not None and state.lifecycle in lifecycles:
            found.append(state)
            return True
        return False

    await eventually(check, within=10)
    return found[-1]


async def publish(hub: Hub, messages: Sequence[OutMessage]) -> None:
    confirmed = await hub.publisher.publish(messages)
    assert sorted(confirmed) == sorted(o.message_id for o in messages)
    await hub.store.mark_sent(confirmed)


async def expect(
    channel: AbstractChannel, queue: str, type_: str, case_id: str, within: float = 10.0
) -> AbstractIncomingMessage:
    """The first message of ``type_`` about ``case_id`` on ``queue`` (others are dropped)."""
    q = await channel.get_queue(queue, ensure=False)
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    seen: list[str] = []
    while loop.time() < end:
        msg = await q.get(no_ack=True, fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        if msg.type == type_ and msg.correlation_id == case_id:
            return msg
        seen.append(f"{msg.type}/{msg.correlation_id}")
    raise AssertionError(f"no {type_} for {case_id} on {queue}; saw {seen}")


async def partner_report(
    url: str, hub: Hub, partner_id: str, msg: m.Message, *, routing_partner: str | None = None
) -> None:
    """Publish a report as the partner's own AMQP user (user_id checked by the broker)."""
    connection = await aio_pika.connect(url)
    try:
        ch = await connection.channel()
        await publish_json(
            ch,
            hub.topology.partners_in,
            f"{routing_partner or partner_id}.{msg.TYPE}",
            msg.to_json(),
            type=msg.TYPE,
            user_id=partner_id,
        )
    finally:
        await connection.close()


def cli(settings: Settings, *args: str) -> Any:
    """Run ``hubctl`` (in a thread by the caller: the command runs its own event loop)."""
    env = {
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_NAMESPACE": settings.namespace,
        "ONEWINDOW_AMQP_URL": settings.amqp_url,
        "ONEWINDOW_MONGO_URL": settings.mongo_url,
        "COLUMNS": "220",
    }
    return CliRunner().invoke(app, list(args), env=env)


async def run_cli(settings: Settings, *args: str, code: int = 0) -> str:
    result = await asyncio.to_thread(cli, settings, *args)
    assert result.exit_code == code, (result.output, result.exception)
    return str(result.output)


async def assert_refused(url: str) -> None:
    """The broker refuses a connection with ``url`` (closed here: aio-pika would leave a
    refused connection to the garbage collector, which may run without a loop)."""
    connection = aio_pika.Connection(make_url(url))
    try:
        with pytest.raises(aio_pika.exceptions.AMQPError):
            await connection.connect()
    finally:
        await connection.close()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- reassign / recall ---------------------------------------------------------------------


async def test_reassign_moves_the_case_and_tells_both_partners(
    hub: Hub, network: Network, channel: AbstractChannel, coordinator: Coordinator
) -> None:
    de = [await network.add(f"de{i}", ["DE"], user=False) for i in range(3)]
    fi = await network.add("fi", ["FI"], user=False)
    case_id = await place_claim(hub, channel)
    first = await wait_case(hub, case_id, Lifecycle.ASSIGNED)
    old = first.partner_id
    assert old in de
    await expect(channel, hub.topology.partner_queue(old), "case.assigned", case_id)

    out = await coordinator.reassign(case_id, reason="no answer within SLA", actor="kam-anna")
    await publish(hub, out)

    state = await hub.store.case(case_id)
    assert state is not None
    assert state.lifecycle is Lifecycle.ASSIGNED
    assert state.partner_id in de and state.partner_id != old
    assert state.assignments == 2 and state.assignment_id != first.assignment_id
    recalled = await expect(channel, hub.topology.partner_queue(old), "case.recalled", case_id)
    body = m.CaseRecalled.model_validate_json(recalled.body)
    assert body.assignment_id == first.assignment_id
    assert body.reason == "no answer within SLA"
    assigned = await expect(
        channel, hub.topology.partner_queue(state.partner_id), "case.assigned", case_id
    )
    assert m.CaseAssigned.model_validate_json(assigned.body).assignment_id == state.assignment_id
    kinds = [(e.kind, e.actor) for e in await hub.store.events(case_id)][-2:]
    assert kinds == [(EventKind.RECALLED, "kam-anna"), (EventKind.ASSIGNED, "kam-anna")]
    unsent = await hub.store.db.outbox.count_documents({"sent_at": None})
    assert unsent == 0

    # forced to a chosen partner: it must exist, be active and cover the country
    third = next(p for p in de if p not in (old, state.partner_id))
    with pytest.raises(InvalidCommand, match="does not cover DE"):
        await coordinator.reassign(case_id, to_partner=fi, reason="x")
    with pytest.raises(InvalidCommand, match="no partner"):
        await coordinator.reassign(case_id, to_partner="nobody-here", reason="x")
    with pytest.raises(InvalidCommand, match="already with"):
        await coordinator.reassign(case_id, to_partner=state.partner_id, reason="x")
    await publish(hub, await coordinator.reassign(case_id, to_partner=third, reason="by hand"))
    forced = await hub.store.case(case_id)
    assert forced is not None and forced.partner_id == third and forced.assignments == 3
    await expect(channel, hub.topology.partner_queue(third), "case.assigned", case_id)
    with pytest.raises(UnknownCase):
        await coordinator.reassign("C-0000000000000000", reason="x")


async def test_reassign_without_another_partner_leaves_the_case_unassigned(
    hub: Hub, network: Network, channel: AbstractChannel, coordinator: Coordinator
) -> None:
    only = await network.add("se", ["SE"], user=False)
    case_id = await place_claim(hub, channel, country="SE")
    await wait_case(hub, case_id, Lifecycle.ASSIGNED)
    await publish(hub, await coordinator.reassign(case_id, reason="quality"))
    state = await hub.store.case(case_id)
    assert state is not None
    assert state.lifecycle is Lifecycle.UNASSIGNED and state.partner_id is None
    await expect(channel, hub.topology.partner_queue(only), "case.recalled", case_id)
    # from the unassigned inbox the coordinator places it by hand, even with the same firm
    await publish(hub, await coordinator.reassign(case_id, to_partner=only, reason="retry"))
    again = await hub.store.case(case_id)
    assert again is not None and again.partner_id == only


async def test_recall_and_show_as_of_an_earlier_moment(
    hub: Hub,
    settings: Settings,
    network: Network,
    channel: AbstractChannel,
    coordinator: Coordinator,
) -> None:
    pid = await network.add("at", ["AT"], user=False)
    case_id = await place_claim(hub, channel, country="AT")
    assigned = await wait_case(hub, case_id, Lifecycle.ASSIGNED)
    await asyncio.sleep(0.05)
    moment = now()
    await asyncio.sleep(0.05)
    await publish(hub, await coordinator.recall(case_id, reason="paid directly", actor="flexspace"))
    await expect(channel, hub.topology.partner_queue(pid), "case.recalled", case_id)

    current, events = await coordinator.show(case_id)
    assert current is not None and current.lifecycle is Lifecycle.RECALLED
    assert current.partner_id is None and events[-1].kind is EventKind.RECALLED
    earlier, earlier_events = await coordinator.show(case_id, moment, "recorded")
    assert earlier is not None
    assert earlier.lifecycle is Lifecycle.ASSIGNED and earlier.partner_id == pid
    assert earlier.version == assigned.version == len(earlier_events) == len(events) - 1
    assert assigned.placed_at is not None
    before, none = await coordinator.show(case_id, assigned.placed_at - dt.timedelta(seconds=1))
    assert before is None and none == []
    with pytest.raises(IllegalTransition):
        await coordinator.recall(case_id, reason="again")

    shown = await run_cli(settings, "cases", "show", case_id, "--as-of", moment.isoformat())
    assert "as of" in shown and pid in shown and "assigned" in shown
    assert "recalled" not in shown
    shown_now = await run_cli(settings, "cases", "show", case_id)
    assert "recalled" in shown_now and "paid directly" in shown_now
    assert "claim_added" in shown_now and "occurred_at" in shown_now
    missing = await run_cli(settings, "cases", "show", "C-0000000000000000", code=1)
    assert "no case" in missing

    # find: by case id, invoice number, debtor name prefix (any case)
    invoice = next(iter(current.claims))
    name = str(current.debtor["name"])
    for query in (case_id, invoice, name[:8].upper(), name.lower()):
        assert [s.case_id for s in await coordinator.find(query)] == [case_id], query
    assert await coordinator.find("Debtor (") == []
    found = await run_cli(settings, "cases", "find", invoice)
    assert case_id in found


# --- settlements ---------------------------------------------------------------------------


async def test_decide_settlement_tells_the_partner(
    hub: Hub,
    settings: Settings,
    network: Network,
    channel: AbstractChannel,
    coordinator: Coordinator,
) -> None:
    pid = await network.add("nl", ["NL"])
    case_id = await place_claim(hub, channel, country="NL")
    state = await wait_case(hub, case_id, Lifecycle.ASSIGNED)
    url = network.urls[pid]
    await partner_report(
        url,
        hub,
        pid,
        m.CaseAccepted(case_id=case_id, assignment_id=state.assignment_id, occurred_at=now()),
    )
    for sid in ("S-1", "S-2"):
        await partner_report(
            url,
            hub,
            pid,
            m.SettlementProposed(
                case_id=case_id,
                settlement_id=sid,
                amount="800.00",
                currency="EUR",
                terms="one payment within 14 days",
                occurred_at=now(),
            ),
        )

    async def proposed() -> bool:
        s = await hub.store.case(case_id)
        return s is not None and len(s.pending_settlements) == 2

    await eventually(proposed, within=10)
    pending = dict(
        ((cid, d["settlement_id"]), d) for cid, d in await coordinator.pending_settlements()
    )
    assert set(pending) == {(case_id, "S-1"), (case_id, "S-2")}
    assert pending[(case_id, "S-1")]["partner_id"] == pid
    assert pending[(case_id, "S-1")]["amount"] == "800.00"
    listed = await run_cli(settings, "settlements", "list")
    assert case_id in listed and "S-2" in listed

    out = await coordinator.decide_settlement(
        case_id, "S-1", approved=True, decided_by="kam-anna", note="approved by creditor"
    )
    await publish(hub, out)
    decided = await expect(channel, hub.topology.partner_queue(pid), "settlement.decided", case_id)
    body = m.SettlementDecided.model_validate_json(decided.body)
    assert (body.settlement_id, body.decision, body.decided_by) == ("S-1", "approved", "kam-anna")
    with pytest.raises(InvalidCommand, match="not waiting"):
        await coordinator.decide_settlement(case_id, "S-1", approved=False, decided_by="x")

    rejected = await run_cli(
        settings, "settlements", "decide", case_id, "S-2", "--reject", "--note", "too low"
    )
    assert "rejected" in rejected and "sent" in rejected
    decided = await expect(channel, hub.topology.partner_queue(pid), "settlement.decided", case_id)
    assert m.SettlementDecided.model_validate_json(decided.body).decision == "rejected"
    after = await hub.store.case(case_id)
    assert after is not None and dict(after.pending_settlements) == {}
    assert await coordinator.pending_settlements() == []


# --- overdue -------------------------------------------------------------------------------


async def test_overdue_lists_cases_past_their_sla(
    hub: Hub,
    settings: Settings,
    network: Network,
    channel: AbstractChannel,
    coordinator: Coordinator,
) -> None:
    slow = await network.add("fi", ["FI"], sla_hours=0.0001, user=False)  # 0.36 s
    await network.add("dk", ["DK"], user=False)
    late = await place_claim(hub, channel, country="FI")
    fine = await place_claim(hub, channel, country="DK")
    state = await wait_case(hub, late, Lifecycle.ASSIGNED)
    await wait_case(hub, fine, Lifecycle.ASSIGNED)
    assert state.partner_id == slow and state.accept_by is not None
    await asyncio.sleep(max(0.0, (state.accept_by - now()).total_seconds()) + 0.05)

    assert [s.case_id for s in await coordinator.overdue(now())] == [late]
    assert await coordinator.overdue(state.accept_by - dt.timedelta(seconds=1)) == []
    listed = await run_cli(settings, "cases", "overdue")
    assert late in listed and fine not in listed

    listed = await run_cli(settings, "cases", "list", "--status", "assigned", "--country", "dk")
    assert fine in listed and late not in listed


# --- partners' broker users ------------------------------------------------------------------


async def test_partner_user_has_least_privilege(hub: Hub, network: Network) -> None:
    a = await network.add("pa", ["DE"])
    b = await network.add("pb", ["DE"])
    topo = hub.topology
    connection = await aio_pika.connect(network.urls[a])
    try:
        ch = await connection.channel()
        own = await ch.declare_queue(topo.partner_queue(a), passive=True)
        assert await own.get(fail=False) is None  # may read its own queue

        ch = await connection.channel()
        other = await ch.declare_queue(topo.partner_queue(b), passive=True)
        with pytest.raises(ChannelAccessRefused):
            await other.get(fail=False)

        ch = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await ch.declare_queue(f"{topo.namespace}mine", durable=True)

        # publishing as another partner's routing key: the topic permission closes the channel
        ch = await connection.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(topo.partners_in, ensure=False)
        message = aio_pika.Message(b"{}", type="case.activity", user_id=a)
        with pytest.raises(ChannelAccessRefused, match="topic") as refused:
            await exchange.publish(message, routing_key=f"{b}.case.activity")
        assert f"{b}.case.activity" in str(refused.value)

        # its own routing key is allowed: the hub answers (error.reply: unknown case)
        ch = await connection.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(topo.partners_in, ensure=False)
        report = m.CaseActivity(
            case_id="C-0000000000000000",
            kind=m.ActivityKind.CALL,
            outcome=m.ActivityOutcome.NO_CONTACT,
            occurred_at=now(),
        )
        await exchange.publish(
            aio_pika.Message(
                report.to_json(),
                type=report.TYPE,
                user_id=a,
                message_id=uuid.uuid4().hex,
                content_type="application/json",
            ),
            routing_key=f"{a}.{report.TYPE}",
        )
        async with hub.connection.channel() as admin_ch:
            reply = await expect(
                admin_ch, topo.partner_queue(a), "error.reply", "C-0000000000000000"
            )
        assert m.ErrorReply.model_validate_json(reply.body).code == "unknown_case"
    finally:
        await connection.close()


async def test_disabled_partner_cannot_connect(hub: Hub, network: Network) -> None:
    pid = await network.add("px", ["DE"])
    url = network.urls[pid]
    live: AbstractRobustConnection = await aio_pika.connect_robust(url, reconnect_interval=60)
    try:
        await eventually(
            lambda: _has_connection(network.admin, pid), within=12, interval=0.5
        )  # the management API reports connections every few seconds
        closed = await network.admin.disable_partner(pid, directory=hub.partners)
        assert closed >= 1
        profile = next(p for p in await hub.partners.profiles() if p.partner_id == pid)
        assert profile.active is False
        await assert_refused(url)
    finally:
        await live.close()
    assert await network.admin.remove_partner(pid) is True
    assert await network.admin.remove_partner(pid) is False
    assert not await network.admin.user_exists(pid)


async def _has_connection(admin: RabbitAdmin, pid: str) -> bool:
    return bool(await admin.connections_of(pid))


# --- CLI: partners -------------------------------------------------------------------------


async def test_cli_partners_add_list_disable_remove(
    hub: Hub, settings: Settings, channel: AbstractChannel
) -> None:
    pid = f"cli-{uuid.uuid4().hex[:6]}"
    admin = RabbitAdmin.from_settings(settings)
    try:
        added = await run_cli(
            settings,
            "partners",
            "add",
            pid,
            "--countries",
            "be,LU",
            "--phases",
            "amicable,legal",
            "--max-open",
            "5",
            "--sla-hours",
            "12",
            "--min-amount",
            "100",
            "--name",
            "Gallia Test",
        )
        assert "amqp://" in added and f"{pid}:" in added
        url = added[added.index("amqp://") :].split()[0]
        connection = await aio_pika.connect(url)
        await connection.close()

        await hub.partners.refresh()  # the worker's directory caches profiles for seconds
        case_id = await place_claim(hub, channel, country="BE")
        await wait_case(hub, case_id, Lifecycle.ASSIGNED)
        listed = await run_cli(settings, "partners", "list")
        row = next(line for line in listed.splitlines() if pid in line)
        assert "BE,LU" in row and "amicable,legal" in row and "Gallia Test" in row
        assert " 1 " in row and " 5 " in row  # one open case of five

        refused = await run_cli(settings, "partners", "add", "Bad_Id", "--countries", "DE", code=1)
        assert "must match" in refused
        refused = await run_cli(settings, "partners", "add", "ok-id", "--countries", "XX", code=1)
        assert "XX" in refused

        disabled = await run_cli(settings, "partners", "disable", pid, "--settle", "0")
        assert "disabled" in disabled and "1 open case" in disabled
        await assert_refused(url)
        assert "no" in next(
            line
            for line in (await run_cli(settings, "partners", "list")).splitlines()
            if pid in line
        )

        # adding it again re-enables it, with its password unchanged
        again = await run_cli(settings, "partners", "add", pid, "--countries", "BE,LU")
        assert "password unchanged" in again and "amqp://" not in again
        connection = await aio_pika.connect(url)
        await connection.close()

        refused = await run_cli(settings, "partners", "remove", pid, code=1)
        assert "open case" in refused
        removed = await run_cli(settings, "partners", "remove", pid, "--force")
        assert "removed" in removed
        assert not await admin.user_exists(pid)
    finally:
        await admin.remove_partner(pid)


async def test_cli_partners_load_example_file(hub: Hub, settings: Settings) -> None:
    example = Path(__file__).parents[2] / "examples" / "partners.yaml"
    loaded = await run_cli(settings, "partners", "load", str(example), "--no-broker-users")
    assert "acme-de" in loaded and "not provisioned" in loaded
    profiles = {p.partner_id: p for p in await _fresh_profiles(hub)}
    assert len(profiles) >= 10
    countries = [c for p in profiles.values() for c in p.countries]
    assert len(set(countries)) >= 30
    assert countries.count("DE") >= 2
    assert "NO" in profiles["lexnord-se"].countries
    assert profiles["acme-de"].max_amount is not None


async def _fresh_profiles(hub: Hub) -> list[PartnerProfile]:
    await hub.partners.refresh()
    return await hub.partners.profiles()


# --- documents -----------------------------------------------------------------------------


async def test_cli_docs_list_and_get_verify_the_sha256(
    hub: Hub,
    settings: Settings,
    network: Network,
    channel: AbstractChannel,
    tmp_path: Path,
) -> None:
    pid = await network.add("lu", ["LU"])
    case_id = await place_claim(hub, channel, country="LU")
    state = await wait_case(hub, case_id, Lifecycle.ASSIGNED)
    url = network.urls[pid]
    accept = m.CaseAccepted(case_id=case_id, assignment_id=state.assignment_id, occurred_at=now())
    await partner_report(url, hub, pid, accept)
    content = b"Lawyer's letter of demand\n" * 50
    await partner_report(
        url,
        hub,
        pid,
        m.DocumentAdded(
            case_id=case_id,
            document_id="D-1",
            kind=m.DocumentKind.LETTER,
            filename="demand.txt",
            content_type="text/plain",
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content_base64=base64.b64encode(content).decode(),
            occurred_at=now(),
        ),
    )

    async def stored() -> bool:
        return bool(await hub.documents.list_for_case(case_id))

    await eventually(stored, within=10)
    listed = await run_cli(settings, "docs", "list", case_id)
    assert "D-1" in listed and "demand.txt" in listed and "letter" in listed and pid in listed

    target = tmp_path / "copy.txt"
    got = await run_cli(settings, "docs", "get", case_id, "D-1", "-o", str(target))
    assert target.read_bytes() == content
    assert hashlib.sha256(content).hexdigest() in got and "verified" in got
    refused = await run_cli(settings, "docs", "get", case_id, "D-1", "-o", str(target), code=1)
    assert "exists" in refused
    missing = await run_cli(settings, "docs", "get", case_id, "D-9", code=1)
    assert "no document D-9" in missing

    # a corrupted copy in GridFS is refused, nothing written
    await hub.store.db["documents.files"].update_one(
        {"_id": f"{case_id}/D-1"}, {"$set": {"metadata.sha256": "0" * 64}}
    )
    bad = tmp_path / "bad.txt"
    refused = await run_cli(settings, "docs", "get", case_id, "D-1", "-o", str(bad), code=1)
    assert "corrupt" in refused and not bad.exists()
