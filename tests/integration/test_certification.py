"""The certification suite against a running hub (real RabbitMQ and MongoDB-compatible
server): the SDK passes it, a faulty partner does not, and ``hubctl certify`` runs it."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
import typer
from typer.testing import CliRunner

from adapters.certify import (
    CERT_ENTITY_PREFIX,
    SCENARIOS,
    Assignment,
    Certification,
    CertificationHub,
    CertificationReport,
    SdkDriver,
    certify,
)
from hub.bootstrap import Hub
from hub.config import Settings
from tests.conftest import PartnerFactory

pytestmark = pytest.mark.services


def partner_url(settings: Settings, pid: str) -> str:
    broker = urllib.parse.urlsplit(settings.amqp_url)
    return f"amqp://{pid}:pw-{pid}@{broker.hostname}:{broker.port or 5672}/"


def verdicts(report: CertificationReport) -> dict[str, str]:
    return {r.name: r.verdict for r in report.results}


def assert_certified(report: CertificationReport) -> None:
    assert report.passed, report.as_text()
    assert [r.name for r in report.results] == [name for name, _, _ in SCENARIOS]


async def test_a_partner_on_the_sdk_passes_the_certification(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    report = await certify(hub, pid, partner_url(settings, pid), via="sdk", within=20)
    assert_certified(report)

    case = await hub.store.case(report.case_id or "")
    assert case is not None
    assert case.creditor_entity == f"{CERT_ENTITY_PREFIX}{pid}"
    assert case.lifecycle.value == "closed" and case.close_code == "paid"
    kinds = [e.kind.value for e in await hub.store.events(case.case_id)]
    assert kinds[-4:] == ["accepted", "activity", "document_added", "closed"]
    # the partner's profile is as it was: the test country was only lent for the run
    await hub.partners.refresh()
    profile = next(p for p in await hub.partners.profiles() if p.partner_id == pid)
    assert profile.countries == frozenset({"DE"})
    # every refusal was recorded by the hub
    codes = {d["code"] async for d in hub.store.db.rejections.find({"sender": pid})}
    assert codes == {"unknown_case", "illegal_transition", "invalid_message"}


class LazyDriver(SdkDriver):
    """A partner that receives its assignments but never accepts them."""

    async def accept(self, a: Assignment) -> str:
        return "never-sent"


async def test_a_partner_that_does_not_accept_fails_and_its_case_is_taken_back(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    driver = LazyDriver(partner_url(settings, pid), namespace=settings.namespace)
    report = await Certification(CertificationHub(hub), driver, within=3).run(pid)

    got = verdicts(report)
    assert not report.passed
    assert got["assignment"] == "pass"
    assert got["accept"] == "fail"
    assert got["activity"] == got["document"] == got["close"] == "skip"
    assert got["illegal_transition"] == "skip"
    assert got["unknown_case"] == got["invalid_message"] == "pass"
    assert "NOT CERTIFIED" in report.summary()
    case = await hub.store.case(report.case_id or "")
    assert case is not None and case.lifecycle.value == "recalled"


async def test_a_live_partner_is_not_certified_without_force(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    pid = await partner(["DE"])
    await hub.store.db.cases.insert_one(
        {"_id": "C-LIVE", "partner_id": pid, "open": True, "creditor_entity": "FS-DE-001"}
    )
    report = await certify(hub, pid, partner_url(settings, pid), within=5)
    assert not report.passed
    assert {r.verdict for r in report.results} == {"skip"}
    assert any("real open case" in n for n in report.notes)


async def test_hubctl_certify_prints_the_table_and_exits_0(
    hub: Hub, partner: PartnerFactory, settings: Settings
) -> None:
    from hub.entrypoints import cli_adapters

    pid = await partner(["FR"])
    app = typer.Typer()
    cli_adapters.register(app)
    env = {
        "ONEWINDOW_NAMESPACE": settings.namespace,
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_AMQP_URL": settings.amqp_url,
        "ONEWINDOW_MONGO_URL": settings.mongo_url,
        "COLUMNS": "200",
    }
    args = ["certify", "--partner", pid, "--url", partner_url(settings, pid), "--timeout", "20"]
    # The command runs its own event loop: give it a thread, the hub keeps this one.
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    assert result.exit_code == 0, result.output
    for name, _, _ in SCENARIOS:
        assert name in result.output
    assert "CERTIFIED" in result.output and "NOT CERTIFIED" not in result.output
