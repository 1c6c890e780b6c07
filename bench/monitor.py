"""Resource sampling: resident memory of the hub processes every 100 ms, and the CPU time
each party (hub, broker, database server, the benchmark itself) spends in each phase.

Sampling runs in a thread, so a busy event loop in the benchmark does not skip samples.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]

MB = 1024 * 1024


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _cpu_pressure_us() -> float | None:
    """Total time (us) some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some"):
                    return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(user + system, system) CPU seconds of a process."""
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0, 0.0
    return float(t.user + t.system), float(t.system)


@dataclass
class PhaseUsage:
    """What one phase cost: wall time, CPU seconds per party, load average, peak RSS."""

    name: str
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Of which in the kernel (system time).
    sys_s: dict[str, float] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    peak_rss_mb: float = 0.0
    #: Share of the phase during which some task waited for a CPU (Linux PSI).
    cpu_pressure: float | None = None
    #: When the measured work was done (``time.perf_counter``), if before the phase ends.
    done_at: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_pressure": None if self.cpu_pressure is None else round(self.cpu_pressure, 3),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "sys_s": {k: round(v, 2) for k, v in self.sys_s.items()},
            "cpu_share": {
                k: round(v / self.wall_s, 2) if self.wall_s else 0.0 for k, v in self.cpu_s.items()
            },
            "loadavg_before": [round(x, 2) for x in self.load_before],
            "loadavg_after": [round(x, 2) for x in self.load_after],
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


class Monitor:
    """Samples the RSS of the hub processes every ``interval`` s and the CPU of the parties."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.parties: dict[str, list[psutil.Process]] = {"bench": [psutil.Process(os.getpid())]}
        self.peak_rss_mb = 0.0  # one hub process, the largest
        self.peak_rss_total_mb = 0.0  # all hub processes together
        self._phase_peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.phases: list[PhaseUsage] = []

    def watch(self, party: str, pid: int | None) -> None:
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        with self._lock:
            self.parties.setdefault(party, []).append(proc)

    def forget(self, party: str) -> None:
        with self._lock:
            self.parties.pop(party, None)

    def _sample(self) -> None:
        with self._lock:
            hubs = list(self.parties.get("hub", []))
        total = 0.0
        largest = 0.0
        for proc in hubs:
            try:
                rss = proc.memory_info().rss / MB
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            largest = max(largest, rss)
        with self._lock:
            self.peak_rss_mb = max(self.peak_rss_mb, largest)
            self.peak_rss_total_mb = max(self.peak_rss_total_mb, total)
            self._phase_peak = max(self._phase_peak, largest)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _cpu(self) -> dict[str, tuple[float, float]]:
        with self._lock:
            parties = {k: list(v) for k, v in self.parties.items()}
        out = {}
        for party, procs in parties.items():
            times = [_cpu_seconds(p) for p in procs]
            out[party] = (sum(t for t, _ in times), sum(s for _, s in times))
        return out

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseUsage]:
        usage = PhaseUsage(name, load_before=os.getloadavg())
        with self._lock:
            self._phase_peak = 0.0
        cpu0 = self._cpu()
        busy0, stall0 = _machine_busy_seconds(), _cpu_pressure_us()
        t0 = time.perf_counter()
        try:
            yield usage
        finally:
            usage.wall_s = (usage.done_at or time.perf_counter()) - t0
            cpu1 = self._cpu()
            busy1, stall1 = _machine_busy_seconds(), _cpu_pressure_us()
            zero = (0.0, 0.0)
            usage.cpu_s = {k: max(0.0, v[0] - cpu0.get(k, zero)[0]) for k, v in cpu1.items()}
            usage.sys_s = {k: max(0.0, v[1] - cpu0.get(k, zero)[1]) for k, v in cpu1.items()}
            # Everything else on the machine (other users' processes, the kernel).
            usage.cpu_s["others"] = max(0.0, busy1 - busy0 - sum(usage.cpu_s.values()))
            if stall0 is not None and stall1 is not None and usage.wall_s > 0:
                usage.cpu_pressure = (stall1 - stall0) / 1e6 / usage.wall_s
            usage.load_after = os.getloadavg()
            self._sample()
            with self._lock:
                usage.peak_rss_mb = self._phase_peak
            self.phases.append(usage)

    def usage(self) -> Mapping[str, PhaseUsage]:
        return {p.name: p for p in self.phases}
