"""Fixtures of the end-to-end tests: a hub that does not consume (for tests whose worker
is a separate process), its partner factory, and hub worker processes that are always
killed at the end and whose output is shown when the test fails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.bootstrap import Hub, start_hub
from hub.config import Settings
from tests.conftest import PartnerFactory
from tests.support import Management

HUBCTL = Path(sys.executable).with_name("hubctl")


@pytest.fixture
async def idle_hub(settings: Settings) -> AsyncIterator[Hub]:
    """Connections, topology and indexes of a test's hub, without consumers."""
    h = await start_hub(settings, consume=False)
    try:
        yield h
    finally:
        await h.client.drop_database(settings.mongo_db)
        await h.close()


@pytest.fixture
async def idle_partner(idle_hub: Hub, management: Management) -> AsyncIterator[PartnerFactory]:
    factory = PartnerFactory(idle_hub, management)
    yield factory
    for pid in factory.created:
        management.delete_user(pid)


class WorkerProcess:
    """``hubctl run`` as a separate process, with this test's namespace and database."""

    def __init__(self, settings: Settings, log_dir: Path, env: dict[str, str]) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    @property
    def current(self) -> subprocess.Popen[bytes] | None:
        return self.procs[-1] if self.procs else None

    def start(self) -> subprocess.Popen[bytes]:
        s = self.settings
        env = {
            **os.environ,
            "ONEWINDOW_AMQP_URL": s.amqp_url,
            "ONEWINDOW_MONGO_URL": s.mongo_url,
            "ONEWINDOW_MONGO_DB": s.mongo_db,
            "ONEWINDOW_NAMESPACE": s.namespace,
            **self.env,
        }
        log = self.log_dir / f"worker-{len(self.procs) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(HUBCTL), "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def kill(self) -> None:
        """SIGKILL the running worker (no clean-up of any kind) and reap it."""
        proc = self.current
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)

    def output(self, tail: int = 20_000) -> str:
        parts = []
        for proc, log in zip(self.procs, self.logs, strict=True):
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {log.name} (pid {proc.pid}, exit {proc.returncode}) ---")
            parts.append(text[-tail:])
        return "\n".join(parts)


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
