"""The coordinator's dashboard in headless Chromium (Debian's ``chromium`` package driven
by Playwright through its executable path; no browser is downloaded), against a hub
carrying real traffic: flow counts move as messages pass, a dead letter is replayed, a
settlement is decided, a case is opened as of an earlier moment."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from hub.bootstrap import Hub
from hub.config import Settings
from hub.domain.model import EventKind, Lifecycle
from hub.entrypoints.web import DashboardSettings, create_app
from partner_sdk import messages as m
from tests.conftest import PartnerFactory
from tests.traffic import PartnerClient, ServedApp, now, place_claim, wait_case, wait_events

pytestmark = [pytest.mark.services, pytest.mark.e2e]

L = Lifecycle
PASSWORD = "browser-test-password"
CHROMIUM = os.environ.get("ONEWINDOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
#: set to a folder to keep screenshots of every page the test visits
SHOTS = os.environ.get("ONEWINDOW_SCREENSHOTS")


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


@pytest.fixture
async def page(hub: Hub, settings: Settings) -> AsyncIterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    from playwright.async_api import async_playwright

    served = ServedApp(
        create_app(DashboardSettings(**settings.model_dump(), dashboard_password=PASSWORD))
    )
    await asyncio.to_thread(served.start)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(
                base_url=served.url,
                http_credentials={"username": "coordinator", "password": PASSWORD},
            )
            context.set_default_timeout(30_000)
            tab = await context.new_page()
            try:
                yield tab
            finally:
                await context.close()
                await browser.close()
    finally:
        await asyncio.to_thread(served.stop)


async def refuse_one(hub: Hub, pid: str) -> str:
    """The partner refuses a message without requeue: the broker dead-letters it."""
    connection = await aio_pika.connect(PartnerClient(hub, pid).url)
    try:
        ch = await connection.channel()
        queue = await ch.get_queue(hub.topology.partner_queue(pid), ensure=False)
        for _ in range(100):
            msg = await queue.get(fail=False)
            if msg is not None:
                await msg.nack(requeue=False)
                assert msg.message_id
                return msg.message_id
            await asyncio.sleep(0.1)
        raise AssertionError("nothing to refuse")
    finally:
        await connection.close()


async def partner_queue_ids(hub: Hub, pid: str) -> list[str]:
    connection = await aio_pika.connect(PartnerClient(hub, pid).url)
    try:
        ch = await connection.channel()
        queue = await ch.get_queue(hub.topology.partner_queue(pid), ensure=False)
        ids = []
        while (msg := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(str(msg.message_id))
        return ids
    finally:
        await connection.close()


async def test_the_coordinator_works_the_dashboard(
    hub: Hub, partner: PartnerFactory, page: Any
) -> None:
    from playwright.async_api import expect

    pid = await partner(["DE"])
    client = PartnerClient(hub, pid)

    # -- flows: the counts move as messages pass ------------------------------------------
    await page.goto("/flows")
    claims_cell = page.locator("#creditor tbody tr td").first
    await expect(claims_cell).to_have_text("0")
    await expect(page.locator("#flow-picture")).to_be_visible()
    cases = [await place_claim(hub, n, country="DE") for n in range(1, 4)]
    await expect(claims_cell).to_have_text("3")
    partner_row = page.locator(f'#partners tbody tr[data-name="{pid}"]')
    await expect(partner_row.locator("td").nth(3)).to_have_text("3")  # out last minute
    await expect(page.locator(f"#edge-out-{pid}")).to_have_text("out 3/min")
    exchange_row = page.locator('#exchanges tbody tr[data-name="claims.in"]')
    await expect(exchange_row.locator("td").nth(1)).to_have_text("3")  # broker statistics
    await shot(page, "flows")
    for case in cases:
        await wait_case(hub, case, L.ASSIGNED)

    # -- a dead letter is replayed ----------------------------------------------------------
    dead_id = await refuse_one(hub, pid)
    await page.goto("/exceptions")
    letter = page.locator(f'tr[data-message="{dead_id}"]')
    for _ in range(20):  # the broker moves it to hub.dead asynchronously
        if await letter.count():
            break
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(letter.locator("td").nth(2)).to_have_text("rejected")
    await shot(page, "exceptions")
    await letter.locator("button.replay").click()
    await expect(page.locator("#status")).to_have_text(f"replay {dead_id}: done")
    await expect(letter).to_have_count(0)
    assert dead_id in await partner_queue_ids(hub, pid)

    # -- a settlement is decided ------------------------------------------------------------
    case = cases[0]
    await client.report(m.CaseAccepted, case)
    await client.report(
        m.SettlementProposed, case, settlement_id="S-9", amount="600.00", currency="EUR"
    )
    await wait_events(hub, case, 4)
    await page.goto("/exceptions")
    row = page.locator(f'tr[data-case="{case}"][data-settlement="S-9"]')
    await row.locator("input.note").fill("agreed with the creditor")
    await row.locator("button.approve").click()
    await expect(page.locator("#status")).to_have_text("approve S-9: done")
    await expect(row).to_have_count(0)
    last = (await hub.store.events(case))[-1]
    assert last.kind is EventKind.SETTLEMENT_DECIDED
    assert last.data["decision"] == "approved" and last.data["note"] == "agreed with the creditor"

    # -- a case as of an earlier moment -----------------------------------------------------
    target = cases[1]
    await asyncio.sleep(0.05)
    moment = now()
    await asyncio.sleep(0.05)
    await client.report(m.CaseAccepted, target)
    await wait_case(hub, target, L.ACCEPTED)
    await page.goto("/cases")
    await page.locator('input[name="q"]').fill(target)
    await page.locator('button[type="submit"]').click()
    await page.locator(f'#results a[href="/cases/{target}"]').click()
    lifecycle = page.locator('td[data-field="lifecycle"]')
    await expect(lifecycle).to_have_text("accepted")
    await expect(page.locator('#timeline tr[data-kind="accepted"]')).to_have_count(1)
    await page.locator("#as-of").fill(moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3])
    await page.locator("#show-as-of").click()
    await expect(page.locator("#as-of-banner")).to_contain_text("As of")
    await expect(lifecycle).to_have_text("assigned")
    await expect(page.locator('#timeline tr[data-kind="accepted"]')).to_have_count(0)
    await expect(page.locator('td[data-field="partner_id"]')).to_have_text(pid)
    await shot(page, "case-as-of")

    # -- KPIs with their charts ----------------------------------------------------------------
    await page.goto("/kpis")
    await expect(page.locator("#kpi-cases")).to_have_text("3")
    await expect(page.locator("#chart-vintage_curves svg")).to_be_visible()
    await expect(page.locator('table[data-table="league"] tbody tr')).to_have_count(1)
    await shot(page, "kpis")
