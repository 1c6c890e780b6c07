"""The webhook adapter against a running hub and REAL HTTP servers on localhost ports.

The partner's side is ``WebhookDriver``: a uvicorn server that checks every POST's
signature and sends signed callbacks, as a partner's API would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.certify import SCENARIOS, Certification, CertificationHub, WebhookRig
from adapters.webhook import (
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_TYPE,
    EmbeddedServer,
    RetryPolicy,
    WebhookAdapter,
    WebhookSender,
    signed_headers,
)
from hub.bootstrap import Hub
from hub.config import Settings
from partner_sdk import CaseAssigned, PartnerClient
from tests.conftest import PartnerFactory
from tests.support import drain, eventually, partner_url, place

pytestmark = pytest.mark.services


@pytest.fixture
async def rig(hub: Hub, partner: PartnerFactory, settings: Settings) -> AsyncIterator[WebhookRig]:
    """A DE partner behind the webhook adapter, its API played by the driver."""
    pid = await partner(["DE"])
    r = WebhookRig(partner_url(settings, pid), namespace=settings.namespace)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_the_webhook_adapter_passes_the_certification(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    rig = WebhookRig(partner_url(settings, pid), namespace=settings.namespace)
    report = await Certification(CertificationHub(hub), rig, within=20).run(pid)

    assert report.passed, report.as_text()
    assert [r.name for r in report.results] == [name for name, _, _ in SCENARIOS]
    got = {r.name: r for r in report.results}
    assert "HTTP 400" in got["invalid_message"].detail  # refused by the adapter itself
    assert "body.amount" in got["invalid_message"].detail
    assert "error.reply POST" in got["unknown_case"].detail
    # every POST the partner received was correctly signed
    assert rig.seen.posts == 3 and rig.seen.bad_signatures == 0  # assignment, 2 errors
    assert rig.adapter is not None and rig.adapter.dead_lettered == 0
    types = {r.type for r in rig.inbox.items}
    assert {"case.assigned", "error.reply"} <= types


async def test_deliveries_are_retried_with_backoff_until_the_partner_answers(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    rig = WebhookRig(
        partner_url(settings, pid),
        namespace=settings.namespace,
        fail_first=2,  # 503 twice for every message, then 200
        policy=RetryPolicy(attempts=4, base=0.05, cap=0.2),
    )
    report = await Certification(CertificationHub(hub), rig, within=20).run(pid)

    assert report.passed, report.as_text()
    assert rig.seen.attempts and set(rig.seen.attempts.values()) == {3}
    assert rig.adapter is not None and rig.adapter.dead_lettered == 0


class FlakyPartner:
    """A partner API that always answers ``status``; counts what it got."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.attempts: dict[str, int] = {}
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        mid = request.headers.get(HEADER_MESSAGE_ID, "")
        self.attempts[mid] = self.attempts.get(mid, 0) + 1
        return JSONResponse({"error": "nope"}, status_code=self.status)


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (400, 1)])
async def test_a_message_the_partner_never_takes_goes_to_the_dead_letter_queue(
    hub: Hub, partner: PartnerFactory, settings: Settings, status: int, attempts: int
) -> None:
    pid = await partner(["DE"])
    api = FlakyPartner(status)
    async with EmbeddedServer(api.app) as server:
        sender = WebhookSender(
            f"{server.url}/hook", "s" * 32, policy=RetryPolicy(attempts=3, base=0.01, cap=0.05)
        )
        client = PartnerClient(partner_url(settings, pid), namespace=settings.namespace)
        async with WebhookAdapter(client, sender, "s" * 32, poll_s=0.1) as adapter:
            await place(hub, 1)

            async def dead_lettered() -> bool:
                return adapter.dead_lettered == 1

            await eventually(dead_lettered, within=30)

    assert list(api.attempts.values()) == [attempts]  # 5xx retried, 4xx not
    async with hub.connection.channel() as ch:
        dead = await drain(ch, hub.topology.hub_dead, until=lambda got: len(got) >= 1)
        assert [d.type for d in dead] == ["case.assigned"]
        assert dead[0].message_id == next(iter(api.attempts))
        queue = await ch.get_queue(hub.topology.partner_queue(pid), ensure=False)
        assert await queue.get(fail=False) is None  # not left to be delivered again


async def test_callbacks_are_verified_and_replays_refused_over_real_http(
    hub: Hub, rig: WebhookRig
) -> None:
    await place(hub, 2)
    got = await rig.inbox.wait(lambda r: isinstance(r.message, CaseAssigned), 30)
    assert got is not None and isinstance(got.message, CaseAssigned)
    case_id = got.message.case_id
    accept = {
        "case_id": case_id,
        "occurred_at": "2026-01-05T10:00:00Z",
    }
    mid = f"acc-{uuid.uuid4().hex[:8]}"
    payload = json.dumps({"type": "case.accepted", "message_id": mid, "body": accept}).encode()
    now = int(time.time())
    good = signed_headers(
        rig.secret, payload, timestamp=now, message_id=mid, message_type="case.accepted"
    )

    async with httpx.AsyncClient(timeout=10) as http:
        url = rig.callback_url

        forged = {**good, HEADER_SIGNATURE: "v1=" + "0" * 64}
        assert (await http.post(url, content=payload, headers=forged)).status_code == 401
        wrong_key = signed_headers(
            "not the secret", payload, timestamp=now, message_id=mid, message_type="case.accepted"
        )
        r = await http.post(url, content=payload, headers=wrong_key)
        assert r.status_code == 401 and r.json()["error"] == "bad_signature"
        old = signed_headers(
            rig.secret, payload, timestamp=now - 301, message_id=mid, message_type="case.accepted"
        )
        r = await http.post(url, content=payload, headers=old)
        assert r.status_code == 401 and r.json()["error"] == "stale_timestamp"
        ahead = signed_headers(
            rig.secret, payload, timestamp=now + 120, message_id=mid, message_type="case.accepted"
        )
        assert (await http.post(url, content=payload, headers=ahead)).status_code == 401
        unsigned = {k: v for k, v in good.items() if k not in (HEADER_SIGNATURE, HEADER_TIMESTAMP)}
        r = await http.post(url, content=payload, headers=unsigned)
        assert r.status_code == 401 and r.json()["error"] == "missing_signature"

        r = await http.post(url, content=payload, headers=good)
        assert r.status_code == 202, r.text
        assert r.json() == {"status": "accepted", "message_id": mid}

        # the very same request again, and a fresh signature on the same message id
        r = await http.post(url, content=payload, headers=good)
        assert r.status_code == 409 and r.json()["message_id"] == mid
        again = signed_headers(
            rig.secret, payload, timestamp=now + 1, message_id=mid, message_type="case.accepted"
        )
        assert (await http.post(url, content=payload, headers=again)).status_code == 409

        bad = json.dumps(
            {
                "type": "case.payment",
                "message_id": "pay-1",
                "body": {"case_id": case_id, "amount": "12,50", "currency": "EURO"},
            }
        ).encode()
        headers = signed_headers(
            rig.secret, bad, timestamp=now, message_id="pay-1", message_type="case.payment"
        )
        r = await http.post(url, content=bad, headers=headers)
        assert r.status_code == 400
        problem = r.json()
        assert problem["error"] == "invalid_message"
        paths = {e["path"] for e in problem["errors"]}
        assert {"body.amount", "body.currency", "body.occurred_at"} <= paths

        mismatch = {**good, HEADER_TYPE: "case.closed"}
        r = await http.post(url, content=payload, headers=mismatch)
        assert r.status_code == 400 and r.json()["errors"][0]["path"] == "type"

    async def accepted() -> bool:
        state = await hub.store.case(case_id)
        return state is not None and state.lifecycle.value == "accepted"

    await eventually(accepted)
    events = [e for e in await hub.store.events(case_id) if e.message_id == mid]
    assert len(events) == 1  # applied once, under the partner's own message id
    assert events[0].actor == rig.partner_id


async def test_hubctl_adapters_webhook_serves_callbacks_and_stops_on_sigint(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    import asyncio
    import os
    import signal
    import socket
    import sys

    pid = await partner(["DE"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "ONEWINDOW_NAMESPACE": settings.namespace,
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_PARTNER_AMQP_URL": partner_url(settings, pid),
        "ACME_SECRET": "x" * 32,
    }
    code = (
        "import typer\nfrom hub.entrypoints import cli_adapters\n"
        "app = typer.Typer()\ncli_adapters.register(app)\napp()\n"
    )
    args = ["adapters", "webhook", "--partner", pid, "--url", "http://127.0.0.1:9/hook"]
    args += ["--secret-env", "ACME_SECRET", "--listen", f"127.0.0.1:{port}"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            health = None
            for _ in range(100):
                try:
                    health = await http.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert health is not None and health.json() == {"status": "ok", "partner_id": pid}
            r = await http.post(f"http://127.0.0.1:{port}/callbacks", content=b"{}")
            assert r.status_code == 401
        proc.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()
    assert f"webhook adapter for {pid}" in output.decode()
