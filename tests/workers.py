"""Hub worker processes (``hubctl run``) for the end-to-end and fault-injection tests:
always killed at the end, their output attached to a failing test's report."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from hub.config import Settings

HUBCTL = Path(sys.executable).with_name("hubctl")


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
