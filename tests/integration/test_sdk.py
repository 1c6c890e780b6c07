"""The partner SDK against a running hub (real RabbitMQ and MongoDB-compatible server).

The client connects as the partner's own least-privilege AMQP user, as a partner would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from partner_sdk import (
    CaseAssigned,
    CaseChange,
    CaseUpdated,
    Delivery,
    ErrorReply,
    HubError,
    PartnerClient,
    PublishFailed,
    SyncPartnerClient,
)
from partner_sdk.messages import MAX_DOCUMENT_BYTES
from tests.conftest import PartnerFactory
from tests.support import (
    Management,
    claim_body,
    drain,
    eventually,
    next_of,
    now_iso,
    partner_url,
    place,
    publish_json,
)

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def assignment(d: Delivery) -> bool:
    return isinstance(d.message, CaseAssigned)


def reply_to(message_id: str) -> Callable[[Delivery], bool]:
    return lambda d: isinstance(d.message, ErrorReply) and d.message.in_reply_to == message_id


async def case_doc(hub: Hub, case_id: str) -> dict[str, Any]:
    doc = await hub.store.db["cases"].find_one({"_id": case_id})
    assert doc is not None
    return doc


async def lifecycle(hub: Hub, case_id: str) -> str:
    return str((await case_doc(hub, case_id))["lifecycle"])


async def event_kinds(hub: Hub, case_id: str) -> list[str]:
    cursor = hub.store.db["events"].find({"case_id": case_id}).sort("seq", 1)
    return [e["kind"] async for e in cursor]


@pytest.fixture
async def assigned(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> AsyncIterator[tuple[PartnerClient, CaseAssigned]]:
    """A connected client of a new DE partner holding one accepted case."""
    pid = await partner(["DE"])
    async with PartnerClient(partner_url(settings, pid), namespace=settings.namespace) as client:
        await place(hub, 1)
        delivery = await next_of(client, assignment)
        case = delivery.message
        assert isinstance(case, CaseAssigned)
        await client.accept(case.case_id, case.assignment_id)
        await delivery.ack()
        yield client, case


async def test_full_case_through_the_sdk(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    async with PartnerClient(partner_url(settings, pid), namespace=settings.namespace) as client:
        assert client.partner_id == pid
        await place(hub, 7)
        delivery = await next_of(client, assignment)
        case = delivery.message
        assert isinstance(case, CaseAssigned)
        assert case.partner_id == pid and case.debtor.country == "DE"
        case_id = case.case_id

        await client.accept(case_id, case.assignment_id)
        await client.report_activity(case_id, "call", "right_party_contact", "spoke to AP")
        await client.report_payment(case_id, case.total, case.currency, reference="BANK-1")
        await client.close(case_id, "paid", "paid in full")
        await delivery.ack()

        async def closed() -> bool:
            return await lifecycle(hub, case_id) == "closed"

        await eventually(closed)
        doc = await case_doc(hub, case_id)
        assert doc["close_code"] == "paid" and doc["open"] is False
        kinds = await event_kinds(hub, case_id)
        assert kinds[-4:] == ["accepted", "activity", "payment", "closed"]


async def test_reports_on_unknown_and_foreign_cases_come_back_as_error_replies(
    hub: Hub,
    partner: PartnerFactory,
    settings: Settings,
    assigned: tuple[PartnerClient, CaseAssigned],
) -> None:
    _, case = assigned
    other = await partner(["FR"], prefix="q")
    async with PartnerClient(partner_url(settings, other), namespace=settings.namespace) as client:
        unknown = await client.report_activity("C-DOES-NOT-EXIST", "call", "no_contact")
        foreign = await client.report_activity(case.case_id, "email", "sent")

        d1 = await next_of(client, reply_to(unknown))
        assert isinstance(d1.message, ErrorReply)
        assert d1.message.code == "unknown_case"
        with pytest.raises(HubError) as caught:
            d1.raise_for_error()
        assert caught.value.reply.in_reply_to == unknown
        await d1.ack()

        d2 = await next_of(client, reply_to(foreign))
        assert isinstance(d2.message, ErrorReply)
        assert d2.message.code == "not_assignee"
        assert d2.message.case_id == case.case_id
        await d2.ack()
    assert "activity" not in await event_kinds(hub, case.case_id)


async def test_retry_with_the_same_message_id_is_applied_once(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned
    mid = uuid.uuid4().hex
    assert await client.report_activity(case.case_id, "call", "left_message", message_id=mid) == mid
    assert await client.report_activity(case.case_id, "call", "left_message", message_id=mid) == mid
    marker = await client.report_activity(case.case_id, "letter", "sent")

    async def marker_applied() -> bool:
        return await hub.store.db["events"].find_one({"message_id": marker}) is not None

    await eventually(marker_applied)
    assert await hub.store.db["events"].count_documents({"message_id": mid}) == 1
    assert (await event_kinds(hub, case.case_id)).count("activity") == 2


async def test_the_partner_holding_a_case_is_told_when_its_claims_change(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned

    async def creditor_sends(type: str, body: dict[str, Any]) -> str:
        async with hub.connection.channel() as ch:
            return await publish_json(ch, hub.topology.claims_in, type, body, type=type)

    def update(d: Delivery) -> bool:
        return isinstance(d.message, CaseUpdated) and d.message.case_id == case.case_id

    added = await creditor_sends("claim.placed", claim_body(2, debtor=1))
    delivery = await next_of(client, update)
    got = delivery.message
    assert isinstance(got, CaseUpdated) and delivery.message_id == f"upd:{added}"
    assert (got.change, got.invoice_number) == (CaseChange.CLAIM_ADDED, "INV-000002")
    assert got.assignment_id == case.assignment_id and got.partner_id == client.partner_id
    assert [c.invoice_number for c in got.claims] == ["INV-000001", "INV-000002"]
    state = await hub.store.case(case.case_id)
    assert state is not None and got.total == str(state.total) != case.total
    await delivery.ack()

    first = claim_body(1)
    withdrawal = {k: first[k] for k in ("creditor_id", "creditor_entity", "invoice_number")}
    await creditor_sends("claim.withdrawn", withdrawal)
    delivery = await next_of(client, update)
    got = delivery.message
    assert isinstance(got, CaseUpdated) and got.change is CaseChange.CLAIM_WITHDRAWN
    assert [c.invoice_number for c in got.claims] == ["INV-000002"]
    await delivery.ack()
    assert await lifecycle(hub, case.case_id) == "accepted"


async def test_legal_steps_are_checked_against_the_country_catalog(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned
    await client.report_legal_step(case.case_id, "DE", "mahnbescheid", "legal", "filed online")
    wrong = await client.report_legal_step(case.case_id, "DE", "injonction_de_payer", "legal")

    reply = await next_of(client, reply_to(wrong))
    assert isinstance(reply.message, ErrorReply)
    assert reply.message.code == "unknown_legal_step"
    assert "mahnbescheid" in reply.message.message  # the reply lists the known steps
    await reply.ack()
    kinds = await event_kinds(hub, case.case_id)
    assert kinds.count("legal_step") == 1
    doc = await case_doc(hub, case.case_id)
    assert doc["phase"] == "legal"


async def test_sync_client_receives_and_reports(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    await place(hub, 11)
    url = partner_url(settings, pid)

    def work() -> str:
        with SyncPartnerClient(url, namespace=settings.namespace) as client:
            delivery = client.next_delivery(timeout=30)
            assert delivery is not None
            case = delivery.message
            assert isinstance(case, CaseAssigned)
            client.accept(case.case_id, case.assignment_id)
            client.close(case.case_id, "returned", "not our market")
            delivery.ack()
            return case.case_id

    # The hub runs on this event loop: the blocking client must run in another thread.
    case_id = await asyncio.to_thread(work)

    async def closed() -> bool:
        return await lifecycle(hub, case_id) == "closed"

    await eventually(closed)


async def test_client_reconnects_after_the_broker_drops_its_connection(
    hub: Hub, partner: PartnerFactory, settings: Settings, management: Management
) -> None:
    pid = await partner(["DE"])
    async with PartnerClient(partner_url(settings, pid), namespace=settings.namespace) as client:
        await client.next_delivery(timeout=0.1)  # starts consuming
        await asyncio.to_thread(close_connections_of, management, pid)
        await place(hub, 31)
        delivery = await next_of(client, assignment, within=60)
        case = delivery.message
        assert isinstance(case, CaseAssigned)
        mid = uuid.uuid4().hex
        for _ in range(30):  # a report sent while reconnecting fails: retry, same id
            try:
                await client.accept(case.case_id, case.assignment_id, message_id=mid)
                break
            except PublishFailed:
                await asyncio.sleep(0.5)
        await delivery.ack()

        async def accepted() -> bool:
            return await lifecycle(hub, case.case_id) == "accepted"

        await eventually(accepted)


def close_connections_of(management: Management, user: str) -> None:
    with httpx.Client(auth=management.auth, timeout=10) as http:
        for _ in range(50):  # the management API lists connections with a short delay
            names = [
                c["name"]
                for c in http.get(f"{management.base}/connections").json()
                if c.get("user") == user
            ]
            if names:
                break
            time.sleep(0.2)
        assert names, f"no connection of {user}"
        for name in names:
            http.delete(
                f"{management.base}/connections/{urllib.parse.quote(name, safe='')}",
                headers={"X-Reason": "test: dropped connection"},
            ).raise_for_status()


# --- documents: upload, download, and only by the case's partner ---------------------------------


async def upload(client: PartnerClient, case_id: str, content: bytes) -> None:
    """Upload ``content`` as the letter DOC-1 of the case."""
    await client.upload_document(
        case_id, "DOC-1", "letter", "reminder.pdf", content, "application/pdf"
    )


async def until_stored(hub: Hub, case_id: str) -> None:
    async def stored() -> bool:
        return await hub.documents.info(f"{case_id}/DOC-1") is not None

    await eventually(stored)


async def test_upload_document_lands_in_gridfs(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned
    content = b"%PDF-1.4\n" + os.urandom(100_000)
    await upload(client, case.case_id, content)
    await until_stored(hub, case.case_id)
    found = await hub.documents.get(f"{case.case_id}/DOC-1")
    assert found is not None
    info, data = found
    assert data == content
    assert info["metadata"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert info["metadata"]["case_id"] == case.case_id
    assert info["metadata"]["kind"] == "letter"


async def test_the_assignee_downloads_its_document_byte_identical(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned
    content = b"%PDF-1.4\n" + os.urandom(300_000)
    await upload(client, case.case_id, content)
    # asked right after the upload: the hub takes them in order
    document = await client.download_document(case.case_id, "DOC-1", timeout=30)
    assert document.content == content
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert (document.filename, document.content_type, document.kind) == (
        "reminder.pdf",
        "application/pdf",
        "letter",
    )
    [record] = await hub.store.downloads(case.case_id)
    assert (record["partner_id"], record["document_id"]) == (client.partner_id, "DOC-1")
    assert record["sha256"] == document.sha256 and record["answers"] == 1
    assert record["served_at"] > record["requested_at"] - dt.timedelta(seconds=5)
    # the answer went to the call, not to the deliveries, and never through the outbox
    assert await client.next_delivery(timeout=0.5) is None
    assert await hub.store.db["outbox"].count_documents({"type": "document.content"}) == 0


async def test_another_partner_cannot_download_the_document(
    hub: Hub,
    partner: PartnerFactory,
    settings: Settings,
    assigned: tuple[PartnerClient, CaseAssigned],
) -> None:
    holder, case = assigned
    await upload(holder, case.case_id, b"%PDF-1.4 confidential")
    await until_stored(hub, case.case_id)
    other = await partner(["FR"], prefix="q")
    async with PartnerClient(partner_url(settings, other), namespace=settings.namespace) as client:
        with pytest.raises(HubError) as caught:
            await client.download_document(case.case_id, "DOC-1", timeout=30)
        assert caught.value.code == "not_assignee"
        assert caught.value.reply.case_id == case.case_id
        assert await client.next_delivery(timeout=0.5) is None
    # what reaches the other partner's queue, read without the SDK: a refusal, no content
    connection = await aio_pika.connect(partner_url(settings, other))
    try:
        channel = await connection.channel()
        body = {"case_id": case.case_id, "document_id": "DOC-1", "occurred_at": now_iso()}
        ns = settings.namespace
        mid = await publish_json(
            channel,
            f"{ns}partners.in",
            f"{other}.document.requested",
            body,
            type="document.requested",
            user_id=other,
        )
        queue = f"{ns}partner.{other}"
        got = await drain(channel, queue, until=lambda got: len(got) > 0)
        got += await drain(channel, queue, idle=1.0)  # and nothing after it
    finally:
        await connection.close()
    assert [(m.type, json.loads(m.body)["in_reply_to"]) for m in got] == [("error.reply", mid)]
    refusals = hub.store.db["rejections"].find({"sender": other, "type": "document.requested"})
    assert [(r["case_id"], r["code"]) async for r in refusals] == [
        (case.case_id, "not_assignee"),
        (case.case_id, "not_assignee"),
    ]
    assert await hub.store.downloads(case.case_id) == []


async def test_an_unknown_document_is_refused_and_recorded(
    hub: Hub, assigned: tuple[PartnerClient, CaseAssigned]
) -> None:
    client, case = assigned
    with pytest.raises(HubError) as caught:
        await client.download_document(case.case_id, "NO-SUCH-DOC", timeout=30)
    assert caught.value.code == "unknown_document"
    refusal = await hub.store.db["rejections"].find_one(
        {"sender": client.partner_id, "type": "document.requested"}
    )
    assert refusal is not None and refusal["code"] == "unknown_document"
    with pytest.raises(HubError) as unknown_case:
        await client.download_document("C-DOES-NOT-EXIST", "DOC-1", timeout=30)
    assert unknown_case.value.code == "unknown_case"


async def test_a_download_is_answered_while_deliveries_fill_the_prefetch_window(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    url = partner_url(settings, pid)
    async with PartnerClient(url, namespace=settings.namespace, prefetch=1) as client:
        await place(hub, 1)
        held = await next_of(client, lambda d: isinstance(d.message, CaseAssigned))
        assert isinstance(held.message, CaseAssigned)
        case_id = held.message.case_id
        await client.accept(case_id)
        await upload(client, case_id, b"%PDF-1.4 plan")
        await until_stored(hub, case_id)
        await place(hub, 2)
        await place(hub, 3)

        async def queued_ahead() -> bool:  # two assignments wait in the queue, sent
            query = {"type": "case.assigned", "sent_at": {"$ne": None}}
            return await hub.store.db["outbox"].count_documents(query) == 3

        await eventually(queued_ahead)
        # ``held`` is unsettled: the broker sends nothing more until it is settled
        document = await client.download_document(case_id, "DOC-1", timeout=30)
        assert document.content == b"%PDF-1.4 plan"
        await held.ack()
        ahead = [await client.next_delivery(timeout=10) for _ in range(2)]
        assert all(d is not None and isinstance(d.message, CaseAssigned) for d in ahead)
        for d in ahead:
            assert d is not None
            await d.ack()


async def test_the_largest_document_through_the_blocking_client(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    """20 MiB, 27 MiB of base64: more than a MongoDB document (the outbox) can hold."""
    pid = await partner(["DE"])
    await place(hub, 41)
    content = os.urandom(MAX_DOCUMENT_BYTES)

    def work() -> tuple[str, bytes]:
        with SyncPartnerClient(partner_url(settings, pid), namespace=settings.namespace) as c:
            delivery = c.next_delivery(timeout=30)
            assert delivery is not None and isinstance(delivery.message, CaseAssigned)
            case_id = delivery.message.case_id
            c.accept(case_id)
            delivery.ack()
            c.upload_document(
                case_id, "BIG-1", "court_filing", "filing.pdf", content, "application/pdf"
            )
            return case_id, c.download_document(case_id, "BIG-1", timeout=120).content

    case_id, downloaded = await asyncio.to_thread(work)
    assert downloaded == content
    [record] = await hub.store.downloads(case_id)
    assert record["size"] == MAX_DOCUMENT_BYTES


# --- the README example, in a venv that has only the SDK --------------------------------------


@pytest.fixture(scope="session")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (once per session, under /tmp) with only ``pip install ./partner_sdk``.

    The SDK is installed from a copy so that the build leaves nothing in the work tree.
    """
    root = tmp_path_factory.mktemp("sdkvenv")
    source = root / "src" / "partner_sdk"
    shutil.copytree(
        REPO / "partner_sdk",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        check=True,
        timeout=600,
    )
    return venv


async def run(*args: str, env: dict[str, str], within: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        cwd="/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
async def test_readme_example_runs_in_a_venv_with_only_the_sdk(
    hub: Hub, partner: PartnerFactory, settings: Settings, sdk_venv: Path
) -> None:
    python = str(sdk_venv / "bin" / "python")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONNOUSERSITE": "1"}
    code, out = await run(
        python,
        "-c",
        "import importlib.util as u, partner_sdk; print(partner_sdk.__file__); "
        "print([m for m in ('hub', 'pymongo', 'faststream') if u.find_spec(m)])",
        env=env,
    )
    assert code == 0, out
    path, missing = out.splitlines()
    assert path.startswith(str(sdk_venv)) and missing == "[]", out

    pid = await partner(["DE"])
    await place(hub, 21)
    code, out = await run(
        python,
        str(REPO / "docs" / "sdk-example.py"),
        env={
            **env,
            "ONEWINDOW_PARTNER_URL": partner_url(settings, pid),
            "ONEWINDOW_NAMESPACE": settings.namespace,
            "EXAMPLE_LIMIT": "1",
        },
    )
    assert code == 0, out

    async def closed() -> bool:
        doc = await hub.store.db["cases"].find_one({"partner_id": pid})
        return doc is not None and doc["lifecycle"] == "closed"

    await eventually(closed)
    doc = await hub.store.db["cases"].find_one({"partner_id": pid})
    assert doc is not None
    assert doc["close_code"] == "paid"
    assert (await event_kinds(hub, doc["_id"]))[-4:] == [
        "accepted",
        "activity",
        "payment",
        "closed",
    ]
