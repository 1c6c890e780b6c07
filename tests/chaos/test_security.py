"""No one gets in: TLS, logs without secrets, documents kept to their case's partner, and
partners told only what they need.

- TLS: a RabbitMQ node of the test's own (``ow-tls``) offers only amqps, with mutual TLS,
  certificates from a throw-away CA (``scripts/test-ca``). The hub, a creditor and a
  partner (the SDK) work a case over it; a client without a certificate, a client that
  does not trust the server's CA, and plain AMQP are refused.
- Logs: a hub worker at DEBUG works claims (valid and not) and partner reports; its log
  holds neither the broker password nor any of the debtors' names, e-mails, phones or
  addresses.
- Documents: only the partner a case is assigned to can add a document to it, and the
  stored file records that partner; a partner's AMQP user reaches nothing but its own
  queue (``tests/integration/test_coordinator.py::test_partner_user_has_least_privilege``),
  so no document travels to another partner. There is no partner download path yet: the
  coordinator reads documents (``hubctl docs``, the dashboard).
- Data minimisation: ``case.assigned`` carries the debtor and the claims' collection
  fields, nothing else (no notes, no batch, no creditor-internal fields).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from partner_sdk import PartnerClient
from partner_sdk.messages import CaseAssigned
from tests.chaos import report
from tests.chaos.support import RabbitNode, take_all
from tests.conftest import PartnerFactory
from tests.support import Management, claim_body, eventually, publish_json, unique_settings

pytestmark = [pytest.mark.services, pytest.mark.chaos]

# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tls_node(services: None, certs: Path) -> AsyncIterator[RabbitNode]:
    node = RabbitNode("ow-tls", certs=certs, verify_peer=True, no_tcp=True)
    await node.start()
    try:
        yield node
    finally:
        await node.remove()


def amqps_url(
    node: RabbitNode, user: str = "guest", password: str = "guest", *, client_cert: bool = True
) -> str:
    assert node.certs is not None
    query = f"cafile={node.certs / 'ca.pem'}"
    if client_cert:
        query += f"&certfile={node.certs / 'client.pem'}&keyfile={node.certs / 'client.key'}"
    return f"amqps://{user}:{password}@localhost:{node.tls_port}/?{query}"


async def test_hub_creditor_and_partner_over_mutual_tls(
    tls_node: RabbitNode, services: None
) -> None:
    from hub.bootstrap import start_hub
    from hub.domain.routing import PartnerProfile
    from hub.infra import topology
    from partner_sdk.messages import Phase

    settings = unique_settings(amqp_url=amqps_url(tls_node))
    hub = await start_hub(settings)
    try:
        ns = settings.namespace
        pid = f"tls{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        await hub.partners.upsert(
            PartnerProfile(pid, frozenset({"DE"}), frozenset(Phase), 100, 24.0, True, 1.0)
        )
        async with hub.connection.channel() as ch:
            await topology.declare_partner(ch, hub.topology, pid)
        esc = ns.replace(".", r"\.")
        await tls_node.add_user(pid, password)
        await tls_node.ctl(
            "set_permissions", pid, "^$", f"^{esc}partners\\.in$", f"^{esc}partner\\.{pid}$"
        )
        await tls_node.ctl("set_topic_permissions", pid, f"{ns}partners.in", f"^{pid}\\.", "^$")

        creditor = await aio_pika.connect(amqps_url(tls_node))
        async with creditor:
            channel = await creditor.channel()
            claim_id = await publish_json(
                channel, hub.topology.claims_in, "claim.placed", claim_body(1), type="claim.placed"
            )
            (receipt,) = await take_all(channel, hub.topology.creditor_queue("flexspace"), expect=1)
            assert json.loads(receipt.body)["claim_message_id"] == claim_id

        partner_url = amqps_url(tls_node, pid, password)
        async with PartnerClient(partner_url, namespace=ns) as client:
            delivery = await client.next_delivery(timeout=30)
            assert delivery is not None and isinstance(delivery.message, CaseAssigned)
            case = delivery.message
            await client.accept(case.case_id, case.assignment_id)
            await delivery.ack()

        async def accepted() -> bool:
            state = await hub.store.case(case.case_id)
            return state is not None and state.lifecycle.value == "accepted"

        await eventually(accepted, within=30)
    finally:
        await hub.client.drop_database(settings.mongo_db)
        await hub.close()

    # refused: no client certificate, an untrusted server, plain AMQP
    refusals = {}
    for what, url in (
        ("no client certificate", amqps_url(tls_node, client_cert=False)),
        ("server not trusted", amqps_url(tls_node).replace("ca.pem", "other-ca.pem")),
        ("plain amqp", tls_node.url()),
    ):
        with pytest.raises((aio_pika.exceptions.AMQPConnectionError, ssl.SSLError, OSError)) as e:
            connection = await aio_pika.connect(url, timeout=10)
            await connection.close()
        refusals[what] = type(e.value).__name__
    report.record(
        "security: mutual TLS (amqps, test CA): hub, creditor and partner SDK worked a case; "
        f"refused: {', '.join(f'{k} ({v})' for k, v in refusals.items())}"
    )


# --- logs -------------------------------------------------------------------------------------

#: Debtor data that must never reach a log line.
PII_MARK = "Quixotl"


def pii_claim(n: int, *, tag: str, broken: str | None = None) -> dict[str, Any]:
    body = claim_body(n, country="DE")
    body["invoice_number"] = f"LOG-{tag}-{n}"
    debtor = body["debtor"]
    debtor["name"] = f"{PII_MARK} Fernsby {n} GmbH"
    debtor["email"] = f"{PII_MARK.lower()}.{n}@debtor-pii.example"
    debtor["phone"] = f"+49 30 5550 {1000 + n}"
    debtor["vat_id"] = f"DE{PII_MARK.upper()}{n}"
    debtor["address"]["line1"] = f"{n} {PII_MARK}strasse"
    if broken == "email":
        debtor["email"] = f"{PII_MARK.lower()}@@{n}.debtor-pii.example"
    elif broken == "phone":
        debtor["phone"] = f"{PII_MARK} phone {n}"
    elif broken == "name":
        debtor["name"] = f"{PII_MARK} " * 60
    return body


@pytest.fixture
def service_user(settings: Settings, management: Management) -> Iterator[tuple[str, str]]:
    """An AMQP user of the hub's own with a password worth hiding."""
    user, password = f"hubsvc-{uuid.uuid4().hex[:6]}", f"Pw-{uuid.uuid4().hex}"
    esc = settings.namespace.replace(".", r"\.")
    with httpx.Client(auth=management.auth, timeout=10) as c:
        c.put(
            f"{management.base}/users/{user}", json={"password": password, "tags": ""}
        ).raise_for_status()
        c.put(
            f"{management.base}/permissions/%2F/{user}",
            json={"configure": f"^{esc}", "write": f"^{esc}", "read": f"^{esc}"},
        ).raise_for_status()
    yield user, password
    management.delete_user(user)


async def test_worker_log_at_debug_holds_no_password_and_no_debtor_data(
    idle_hub: Hub, idle_partner: PartnerFactory, worker: Any, service_user: tuple[str, str]
) -> None:
    hub = idle_hub
    topo = hub.topology
    user, password = service_user
    tag = uuid.uuid4().hex[:6]
    pid = await idle_partner(["DE"])
    amqp_url = hub.settings.amqp_url.replace("guest:guest", f"{user}:{password}")
    w = worker(AMQP_URL=amqp_url, LOG_LEVEL="DEBUG", OUTBOX_GRACE_S="1", OUTBOX_POLL_S="0.5")
    w.start()

    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        sent = 0
        for n in range(30):
            broken = (None, "email", "phone", "name")[n % 4] if n >= 20 else None
            body = pii_claim(n, tag=tag, broken=broken)
            body["notes"] = f"internal: {PII_MARK} is a difficult debtor"
            await publish_json(channel, topo.claims_in, "claim.placed", body, type="claim.placed")
            sent += 1
        receipts = await take_all(channel, topo.creditor_queue("flexspace"), expect=sent, limit=120)
        assert len(receipts) == sent
        assigned = await take_all(channel, topo.partner_queue(pid), expect=20, limit=60)
        case = json.loads(assigned[0].body)

        partner_url = hub.settings.amqp_url.replace("guest:guest", f"{pid}:pw-{pid}")
        as_partner = await aio_pika.connect(partner_url)
        async with as_partner:
            pch = await as_partner.channel()
            reports = [
                ("case.closed", {"close_code": "paid"}),  # illegal before acceptance
                ("case.accepted", {"assignment_id": case["assignment_id"]}),
                (
                    "case.activity",
                    {
                        "kind": "call",
                        "outcome": "right_party_contact",
                        "note": f"spoke to {PII_MARK} Fernsby",
                    },
                ),
                (
                    "case.activity",
                    {"kind": "call", "outcome": "nonsense", "note": f"{PII_MARK} " * 500},
                ),
                (
                    "case.promise",
                    {"amount": "12.00", "currency": "EUR", "due_date": f"{PII_MARK}-01-01"},
                ),
            ]
            for mtype, fields in reports:
                await publish_json(
                    pch,
                    topo.partners_in,
                    f"{pid}.{mtype}",
                    {"case_id": case["case_id"], "occurred_at": "2026-12-04T10:00:00Z", **fields},
                    type=mtype,
                    user_id=pid,
                )

        async def all_reports_handled() -> bool:
            n = await hub.store.db.inbox.count_documents({"queue": "hub.partner-updates"})
            return n >= len(reports)

        await eventually(all_reports_handled, within=60)
        await asyncio.sleep(1.5)  # the relay's and the consumers' last lines
    w.kill()

    log = "\n".join(p.read_text(errors="replace") for p in w.logs)
    lines = log.count("\n")
    assert lines > 5 and f"{user}:***@" in log, log[:2000]  # the worker did log
    leaks = {
        "password": password in log,
        "debtor name/address/vat": PII_MARK.lower() in log.lower(),
        "phone": re.search(r"5550 ?1\d{3}", log) is not None,
        "e-mail": "debtor-pii.example" in log,
    }
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
    report.record(
        f"security: hub worker log at DEBUG, {lines} lines over {sent} claims (10 invalid in "
        f"debtor fields) and {len(reports)} partner reports (3 refused): no password, no "
        "debtor name, e-mail, phone, VAT id or address"
    )


# --- documents ---------------------------------------------------------------------------------


async def test_only_the_assignee_adds_documents_and_the_file_records_it(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    topo = hub.topology
    owner = await partner(["DE"], prefix="own")
    other = await partner(["FR"], prefix="oth")
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await publish_json(
            channel, topo.claims_in, "claim.placed", claim_body(3), type="claim.placed"
        )
        (assigned,) = await take_all(channel, topo.partner_queue(owner), expect=1)
    case = json.loads(assigned.body)
    content = b"%PDF-1.4 letter before action\n"

    def url(pid: str) -> str:
        return settings.amqp_url.replace("guest:guest", f"{pid}:pw-{pid}")

    args = ("letter", "letter.pdf", content, "application/pdf")
    async with PartnerClient(url(other), namespace=settings.namespace) as intruder:
        await intruder.upload_document(case["case_id"], "intruder-doc", *args)
    async with PartnerClient(url(owner), namespace=settings.namespace) as client:
        await client.accept(case["case_id"], case["assignment_id"])
        await client.upload_document(case["case_id"], "letter-1", *args)

    async def stored() -> bool:
        return bool(await hub.documents.list_for_case(case["case_id"]))

    await eventually(stored, within=30)
    files = await hub.documents.list_for_case(case["case_id"])
    assert [f["_id"] for f in files] == [f"{case['case_id']}/letter-1"]
    meta = files[0]["metadata"]
    assert meta["partner_id"] == meta["uploader"] == owner and meta["case_id"] == case["case_id"]
    refusal = await hub.store.db.rejections.find_one({"sender": other, "type": "document.added"})
    assert refusal is not None and refusal["code"] == "not_assignee", refusal


# --- data minimisation -------------------------------------------------------------------------

#: What a partner is told of a case, and of each claim and debtor in it.
ASSIGNMENT_FIELDS = {
    "case_id",
    "assignment_id",
    "partner_id",
    "creditor_entity",
    "debtor",
    "claims",
    "currency",
    "total",
    "phase",
    "assigned_at",
    "accept_by",
}
CLAIM_FIELDS = {
    "invoice_number",
    "invoice_date",
    "due_date",
    "principal",
    "interest",
    "fees",
    "contract_ref",
}
DEBTOR_FIELDS = {
    "name",
    "kind",
    "registration_id",
    "vat_id",
    "country",
    "address",
    "email",
    "phone",
    "language",
}


async def test_case_assigned_carries_only_what_the_partner_needs(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    topo = hub.topology
    pid = await partner(["DE"])
    secret = f"INTERNAL-{uuid.uuid4().hex[:8]}"
    body = claim_body(4, batch=(f"BATCH-{secret}", 1))
    body["notes"] = f"{secret}: creditor's own remark, not for the partner"
    body["contract_ref"] = "CTR-0042"
    body["debtor"] |= {"vat_id": "DE123456789", "phone": "+49 30 1234567", "language": "de"}
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await publish_json(channel, topo.claims_in, "claim.placed", body, type="claim.placed")
        (assigned,) = await take_all(channel, topo.partner_queue(pid), expect=1)
    doc = json.loads(assigned.body)
    assert set(doc) <= ASSIGNMENT_FIELDS, set(doc) - ASSIGNMENT_FIELDS
    assert set(doc["debtor"]) <= DEBTOR_FIELDS, set(doc["debtor"]) - DEBTOR_FIELDS
    for claim in doc["claims"]:
        assert set(claim) <= CLAIM_FIELDS, set(claim) - CLAIM_FIELDS
    assert doc["claims"][0]["contract_ref"] == "CTR-0042"
    assert secret.encode() not in assigned.body  # neither the notes nor the batch
    assert b"flexspace" not in assigned.body  # the creditor's own id stays with the hub
    report.record(
        "security: case.assigned carries "
        f"{len(doc)} fields ({', '.join(sorted(doc))}); no notes, batch or creditor id"
    )
