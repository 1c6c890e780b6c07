"""The processes under test: hub workers (``hubctl run``) and the raw relay, each a child
process with its output in a log file; always stopped at the end of the run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ProcessDied(RuntimeError):
    """A process under test exited before the benchmark was done with it."""


class Children:
    """Child processes started with the same environment, their logs kept in ``log_dir``."""

    def __init__(self, name: str, log_dir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_dir = log_dir
        self.env = {**os.environ, **env}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, argv: Sequence[str], count: int = 1) -> list[int]:
        pids = []
        for _ in range(count):
            log = self.log_dir / f"{self.name}-{len(self.procs) + 1}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    list(argv),
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.procs.append(proc)
            self.logs.append(log)
            pids.append(proc.pid)
        return pids

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise ProcessDied(
                    f"{self.name} process {proc.pid} exited with {proc.returncode}:\n"
                    + self.tail(log)
                )

    def output(self, marker: str) -> bool:
        """Whether every process has written ``marker`` to its log."""
        return all(marker in log.read_text(errors="replace") for log in self.logs)

    @staticmethod
    def tail(log: Path, size: int = 4000) -> str:
        text = log.read_text(errors="replace") if log.exists() else ""
        return text[-size:]

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT (a clean shutdown), then SIGKILL whatever is left after ``grace``."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)


def hub_command() -> list[str]:
    """``hubctl run`` of this interpreter's environment."""
    return [sys.executable, "-m", "hub.entrypoints.cli", "run"]


def relay_command(
    amqp_url: str, source: str, exchange: str, routing_key: str, prefetch: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.relay",
        "--amqp",
        amqp_url,
        "--source",
        source,
        "--exchange",
        exchange,
        "--routing-key",
        routing_key,
        "--prefetch",
        str(prefetch),
    ]


class Profiler:
    """``py-spy record`` attached to each hub process (collapsed stacks, one file each)."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    @staticmethod
    def available() -> str | None:
        found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        return found if Path(found).exists() else None

    def attach(self, pids: Sequence[int]) -> None:
        exe = self.available()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = self.out_dir / f"hub-{pid}.txt"
            self.procs.append(
                subprocess.Popen(
                    [
                        exe,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(self.rate),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                )
            )
            self.files.append(out)

    def stop(self) -> list[Path]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [f for f in self.files if f.exists()]
