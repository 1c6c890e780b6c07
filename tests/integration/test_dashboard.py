"""The dashboard's HTTP API against a hub carrying real traffic (the app served by
uvicorn on a free localhost port): log-in, live flows, the exception inbox and its
actions, the case view as of a moment, KPIs, metrics, and its OpenAPI document."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from hub.domain.model import Lifecycle
from hub.entrypoints.web import DashboardSettings, create_app
from partner_sdk import messages as m
from tests.conftest import PartnerFactory
from tests.support import claim_body, eventually, publish_json
from tests.traffic import PartnerClient, ServedApp, now, place_claim, wait_case, wait_events

pytestmark = pytest.mark.services

L = Lifecycle
PASSWORD = "correct horse battery staple"


@dataclass
class Dashboard:
    url: str
    auth: tuple[str, str]

    def client(self, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("auth", self.auth)
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kw)

    async def get(self, path: str, **params: Any) -> Any:
        async with self.client() as c:
            r = await c.get(path, params=params)
            assert r.status_code == 200, (path, r.status_code, r.text[:500])
            return r.json()

    async def post(self, path: str, body: dict[str, Any], status: int = 200) -> Any:
        async with self.client() as c:
            r = await c.post(path, json=body)
            assert r.status_code == status, (path, r.status_code, r.text[:500])
            return r.json()


@pytest.fixture
async def dashboard(hub: Hub, settings: Settings) -> AsyncIterator[Dashboard]:
    dash = DashboardSettings(**settings.model_dump(), dashboard_password=PASSWORD)
    served = ServedApp(create_app(dash))
    await asyncio.to_thread(served.start)
    try:
        yield Dashboard(served.url, ("coordinator", PASSWORD))
    finally:
        await asyncio.to_thread(served.stop)


async def test_log_in_is_required_except_in_development_from_localhost(
    dashboard: Dashboard, settings: Settings
) -> None:
    async with dashboard.client(auth=None) as c:
        r = await c.get("/api/flows")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert (await c.get("/flows")).status_code == 401
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/api/flows", auth=("coordinator", "wrong"))).status_code == 401
        assert (await c.get("/api/flows", auth=("someone", PASSWORD))).status_code == 401
        assert (await c.get("/healthz")).status_code == 200
    async with dashboard.client() as c:
        page = await c.get("/flows")
        assert page.status_code == 200 and "Message flows" in page.text
        # an action from another site is refused even with the browser's credentials
        r = await c.post(
            "/api/cases/C-0000000000000000/reassign",
            json={"reason": "x"},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
        r = await c.post("/api/cases/C-0000000000000000/reassign", content="reason=x")
        assert r.status_code == 422  # a form post is not JSON

    dev = ServedApp(create_app(DashboardSettings(**settings.model_dump(), dashboard_dev=True)))
    await asyncio.to_thread(dev.start)
    try:
        async with httpx.AsyncClient(base_url=dev.url) as c:
            assert (await c.get("/api/flows")).status_code == 200
    finally:
        await asyncio.to_thread(dev.stop)
    # no password and no development mode: nobody gets in
    closed = ServedApp(create_app(DashboardSettings(**settings.model_dump())))
    await asyncio.to_thread(closed.start)
    try:
        async with httpx.AsyncClient(base_url=closed.url) as c:
            assert (await c.get("/api/flows", auth=("coordinator", ""))).status_code == 401
    finally:
        await asyncio.to_thread(closed.stop)


async def test_flow_counts_follow_the_traffic(
    hub: Hub, partner: PartnerFactory, dashboard: Dashboard
) -> None:
    pid = await partner(["DE"])
    before = await dashboard.get("/api/flows")
    assert before["claims_last_min"] == 0 and before["errors"] == []
    assert {q["logical"] for q in before["queues"]} >= {
        "hub.claims",
        "hub.partner-updates",
        "hub.dead",
        f"partner.{pid}",
    }
    cases = [await place_claim(hub, n, country="DE") for n in range(1, 4)]
    for case in cases:
        await wait_case(hub, case, L.ASSIGNED)
    client = PartnerClient(hub, pid)
    await client.report(m.CaseAccepted, cases[0])
    await wait_events(hub, cases[0], 3)

    async def counted() -> bool:
        f = await dashboard.get("/api/flows")
        claims = next(x for x in f["exchanges"] if x["logical"] == "claims.in")
        p = next(p for p in f["partners"] if p["partner_id"] == pid)
        return (
            f["claims_last_min"] == 3
            and f["receipts_last_min"] == 3
            and claims["in_total"] >= 3  # the broker's statistics lag a few seconds
            and p["out_last_min"] == 3
            and p["in_last_min"] == 1
            and p["queue_backlog"] == 3
        )

    await eventually(counted, within=30, interval=1)
    f = await dashboard.get("/api/flows")
    assert f["svg"].startswith("<svg") and f"node-partner-{pid}" in f["svg"]


async def dead_letter_of(hub: Hub, pid: str) -> str:
    """The partner refuses a message without requeue: the broker dead-letters it."""
    connection = await aio_pika.connect(PartnerClient(hub, pid).url)
    try:
        ch = await connection.channel()
        queue = await ch.get_queue(hub.topology.partner_queue(pid), ensure=False)
        msg = None
        for _ in range(100):
            msg = await queue.get(fail=False)
            if msg is not None:
                break
            await asyncio.sleep(0.1)
        assert msg is not None and msg.message_id
        await msg.nack(requeue=False)
        return msg.message_id
    finally:
        await connection.close()


async def test_exception_inbox_and_its_actions(
    hub: Hub, partner: PartnerFactory, dashboard: Dashboard
) -> None:
    pid = await partner(["DE"])
    # a rejected claim, an unassigned case, a settlement, an error reply, a dead letter
    async with hub.connection.channel() as ch:
        bad = claim_body(90)
        bad["currency"] = "XXX"
        bad_id = await publish_json(
            ch, hub.topology.claims_in, "claim.placed", bad, type="claim.placed"
        )
    lonely = await place_claim(hub, 91, country="NL")
    case = await place_claim(hub, 92, country="DE")
    await wait_case(hub, lonely, L.UNASSIGNED)
    await wait_case(hub, case, L.ASSIGNED)
    client = PartnerClient(hub, pid)
    await client.report(m.CaseAccepted, case)
    await client.report(
        m.SettlementProposed, case, settlement_id="S-1", amount="700.00", currency="EUR"
    )
    await client.report(m.CaseAccepted, "C-0000000000000000")  # unknown case: error reply
    await wait_events(hub, case, 4)
    dead_id = await dead_letter_of(hub, pid)
    # a partner status code the file adapter quarantined (adapters/files/quarantine.py)
    from adapters.files.quarantine import MongoQuarantineLog, QuarantineEntry

    await MongoQuarantineLog(hub.store.db).record(
        [QuarantineEntry("q-1", pid, "status-0001.csv", 3, "ZZ9", "unknown_code", "no mapping")]
    )

    async def listed() -> bool:
        x = await dashboard.get("/api/exceptions")
        return bool(x["dead_letters"]) and bool(x["error_replies"]) and bool(x["rejected_claims"])

    await eventually(listed, within=20, interval=0.5)
    x = await dashboard.get("/api/exceptions")
    assert [r["message_id"] for r in x["rejected_claims"]] == [bad_id]
    assert "currency" in json.dumps(x["rejected_claims"][0]["errors"])
    assert [c["case_id"] for c in x["unassigned"]] == [lonely]
    assert x["overdue"] == []
    assert [(q["partner_id"], q["code"]) for q in x["quarantined"]] == [(pid, "ZZ9")]
    (settlement,) = x["settlements"]
    assert (settlement["case_id"], settlement["settlement_id"]) == (case, "S-1")
    assert settlement["amount"] == "700.00" and settlement["partner_id"] == pid
    (reply,) = x["error_replies"]
    assert reply["sender"] == pid and reply["code"] == "unknown_case"
    (letter,) = x["dead_letters"]
    assert letter["message_id"] == dead_id and letter["reason"] == "rejected"
    assert letter["queue"] == f"partner.{pid}" and letter["routing_key"] == f"{pid}.case.assigned"

    # decide the settlement: the partner is told
    done = await dashboard.post(
        f"/api/cases/{case}/settlements/S-1/decision", {"approved": True, "note": "fine"}
    )
    assert done["published"] == 1
    events = await hub.store.events(case)
    assert events[-1].kind.value == "settlement_decided"
    assert events[-1].actor == "coordinator" and events[-1].data["decision"] == "approved"
    again = await dashboard.post(
        f"/api/cases/{case}/settlements/S-1/decision", {"approved": False}, status=400
    )
    assert "not waiting" in again["detail"]

    # replay the dead letter: it is back in the partner's queue, gone from hub.dead
    replayed = await dashboard.post(f"/api/dead-letters/{letter['id']}/replay", {})
    assert replayed["message_id"] == dead_id
    assert (await dashboard.get("/api/exceptions"))["dead_letters"] == []
    await dashboard.post(f"/api/dead-letters/{letter['id']}/replay", {}, status=404)
    connection = await aio_pika.connect(client.url)
    try:
        ch = await connection.channel()
        queue = await ch.get_queue(hub.topology.partner_queue(pid), ensure=False)
        got = []
        while (msg := await queue.get(fail=False, no_ack=True)) is not None:
            got.append(msg)
        back = [g for g in got if g.message_id == dead_id]
        assert back and back[0].headers["x-onewindow-replayed-by"] == "coordinator"
        assert m.CaseAssigned.model_validate_json(back[0].body).case_id == case
    finally:
        await connection.close()

    # assign the unassigned case once a partner covers its country
    nl = await partner(["NL"])
    assigned = await dashboard.post(
        f"/api/cases/{lonely}/reassign", {"to_partner": nl, "reason": "new NL partner"}
    )
    assert assigned == {
        "case_id": lonely,
        "lifecycle": "assigned",
        "partner_id": nl,
        "published": 1,
    }
    refused = await dashboard.post(f"/api/cases/{lonely}/reassign", {"to_partner": nl}, status=400)
    assert "already with" in refused["detail"]
    await dashboard.post("/api/cases/C-0000000000000000/reassign", {}, status=404)
    assert (await dashboard.get("/api/exceptions"))["unassigned"] == []


async def test_case_view_search_kpis_and_metrics(
    hub: Hub, partner: PartnerFactory, dashboard: Dashboard
) -> None:
    pid = await partner(["FR"])
    case = await place_claim(hub, 7, country="FR", debtor=7)
    await wait_case(hub, case, L.ASSIGNED)
    await asyncio.sleep(0.05)
    moment = now()
    await asyncio.sleep(0.05)
    await PartnerClient(hub, pid).report(m.CaseAccepted, case)
    await wait_case(hub, case, L.ACCEPTED)

    found = await dashboard.get("/api/cases", q="Debtor 7")
    assert [c["case_id"] for c in found] == [case]
    assert [c["case_id"] for c in await dashboard.get("/api/cases", q="INV-000007")] == [case]
    view = await dashboard.get(f"/api/cases/{case}")
    assert view["state"]["lifecycle"] == "accepted" and view["total_events"] == 3
    then = await dashboard.get(f"/api/cases/{case}", as_of=moment.isoformat())
    assert then["state"]["lifecycle"] == "assigned" and len(then["events"]) == 2
    naive = moment.replace(tzinfo=None).isoformat()  # what a datetime-local field sends
    assert (await dashboard.get(f"/api/cases/{case}", as_of=naive))["state"] == then["state"]
    before = await dashboard.get(
        f"/api/cases/{case}", as_of=(moment - dt.timedelta(days=1)).isoformat()
    )
    assert before["state"] is None and before["events"] == []
    async with dashboard.client() as c:
        assert (await c.get("/api/cases/C-0000000000000000")).status_code == 404
        assert (await c.get(f"/api/cases/{case}", params={"as_of": "soon"})).status_code == 422
        html = await c.get(f"/cases/{case}", params={"as_of": moment.isoformat()})
        assert "As of" in html.text and "claim_added" in html.text and "accepted" not in html.text
        metrics = (await c.get("/metrics")).text
        assert 'onewindow_cases{lifecycle="accepted"} 1.0' in metrics
        assert "onewindow_queue_messages" in metrics and "onewindow_http_requests_total" in metrics
        report = await c.get("/report", params={"format": "csv"})
        assert report.status_code == 200 and "recovery_rate" in report.text
        kpis_page = await c.get("/kpis")
        assert kpis_page.status_code == 200 and "Partner league table" in kpis_page.text

    k = await dashboard.get("/api/kpis")
    lifecycle = {r["lifecycle"]: r["cases"] for r in k["tables"]["lifecycle"]}
    assert lifecycle == {"accepted": 1}
    (row,) = k["tables"]["league"]
    assert row["partner"] == pid and row["sla_rate"] == "1.0000"


async def test_the_openapi_document_passes_schemathesis(
    hub: Hub, partner: PartnerFactory, dashboard: Dashboard, tmp_path: Path
) -> None:
    """Every documented operation, fuzzed: no server error, every status and body as the
    document says. ``negative_data_rejection`` is left out: unknown query parameters are
    ignored, as most HTTP APIs do."""
    pid = await partner(["DE"])
    case = await place_claim(hub, 1, country="DE")
    await wait_case(hub, case, L.ASSIGNED)
    await PartnerClient(hub, pid).report(m.CaseAccepted, case)
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        f"{dashboard.url}/openapi.json",
        "--auth",
        ":".join(dashboard.auth),
        "--checks",
        "all",
        "--exclude-checks",
        "negative_data_rejection",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--no-color",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert " passed" in text and "Selected: 8/8" in text
