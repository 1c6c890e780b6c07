"""Fixtures. Tests marked ``services`` talk to the real RabbitMQ and the MongoDB-compatible
server that ``scripts/services up`` starts; each test gets its own database and AMQP
namespace, so tests never share state."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from hub.bootstrap import Hub, start_hub
from hub.config import Settings
from hub.infra import topology
from tests.support import Management, unique_settings
from tests.workers import WorkerProcess


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> None:
    settings = Settings()
    missing = [
        name
        for name, port in (
            ("RabbitMQ", 5672),
            ("RabbitMQ management", 15672),
            ("MongoDB-compatible server", 27017),
        )
        if not _reachable("127.0.0.1", port)
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not reachable: run scripts/services up "
            f"(settings: {settings.mongo_url})"
        )


@pytest.fixture
def settings(services: None) -> Iterator[Settings]:
    s = unique_settings()
    yield s
    Management(s).delete_namespace(s.namespace)


@contextlib.asynccontextmanager
async def running_hub(settings: Settings, *, consume: bool) -> AsyncIterator[Hub]:
    """A test's hub; its database is dropped afterwards."""
    h = await start_hub(settings, consume=consume)
    try:
        yield h
    finally:
        await h.client.drop_database(settings.mongo_db)
        await h.close()


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    async with running_hub(settings, consume=True) as h:
        yield h


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """A robust AMQP connection of the test's own."""
    conn = await aio_pika.connect_robust(settings.amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def management(settings: Settings) -> Management:
    return Management(settings)


@pytest.fixture
async def partner(hub: Hub, management: Management) -> AsyncIterator[PartnerFactory]:
    factory = PartnerFactory(hub, management)
    yield factory
    for pid in factory.created:
        management.delete_user(pid)


class PartnerFactory:
    """Registers partners (profile, queue, least-privilege AMQP user) for a test."""

    def __init__(self, hub: Hub, management: Management) -> None:
        self.hub = hub
        self.management = management
        self.created: list[str] = []

    async def __call__(
        self,
        countries: list[str],
        *,
        prefix: str = "p",
        sla_hours: float = 24,
        max_open: int = 10_000,
        weight: float = 1.0,
        phases: tuple[str, ...] = ("amicable", "legal", "enforcement"),
    ) -> str:
        from hub.domain.routing import PartnerProfile
        from partner_sdk.messages import Phase

        pid = f"{prefix}{uuid.uuid4().hex[:6]}"
        await self.hub.partners.upsert(
            PartnerProfile(
                pid,
                frozenset(countries),
                frozenset(Phase(p) for p in phases),
                max_open,
                sla_hours,
                True,
                weight,
            )
        )
        async with self.hub.connection.channel() as ch:
            await topology.declare_partner(ch, self.hub.topology, pid)
        self.management.add_partner_user(pid, "pw-" + pid, self.hub.settings.namespace)
        self.created.append(pid)
        return pid


# --- a hub without consumers, and hub workers as separate processes (e2e, chaos) ---------


@pytest.fixture
async def idle_hub(settings: Settings) -> AsyncIterator[Hub]:
    """Connections, topology and indexes of a test's hub, without consumers."""
    async with running_hub(settings, consume=False) as h:
        yield h


@pytest.fixture
async def idle_partner(idle_hub: Hub, management: Management) -> AsyncIterator[PartnerFactory]:
    factory = PartnerFactory(idle_hub, management)
    yield factory
    for pid in factory.created:
        management.delete_user(pid)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory of hub worker processes: ``w = worker(ONEWINDOW_BATCH_MAX="50")``."""
    made: list[WorkerProcess] = []

    def make(**env: str) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path, {f"ONEWINDOW_{k}": v for k, v in env.items()})
        made.append(w)
        return w

    request.node.hub_workers = made
    try:
        yield make
    finally:
        for w in made:
            w.stop_all()
        deadline = time.monotonic() + 10
        for w in made:
            for proc in w.procs:
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for w in getattr(item, "hub_workers", []):
            report.sections.append(("hub worker output", w.output()))
    return report
