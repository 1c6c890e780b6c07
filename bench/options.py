"""The benchmark's knobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PHASES = ("limit", "intake", "updates", "latency")


def default_workers() -> int:
    """One hub worker per CPU (at most 4), as the hub is deployed."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass
class Options:
    #: Claims of the intake phase (one monthly batch).
    claims: int = 20_000
    #: Activity reports of the updates phase; None: cases x ``updates_factor``.
    updates: int | None = None
    updates_factor: float = 1.0
    #: Claims against one debtor (one case); 1: every claim makes its own case.
    claims_per_case: int = 1
    #: Hub worker processes (``hubctl run``); also the number of raw relay processes. One
    #: per CPU, as the hub is deployed (a worker is one Python process: one CPU at most).
    workers: int = field(default_factory=default_workers)
    #: Messages through the raw relay; None: as many as claims.
    relay_messages: int | None = None
    #: Documents of the raw write rate; None: min(claims, 20,000).
    db_docs: int | None = None
    db_batch: int = 500
    #: Steady offered load of the latency phase.
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    #: Seconds at the same rate before the measured ones (not measured): the steady state,
    #: not the database's catching up after the previous phases' floods.
    latency_warmup_s: float = 3.0
    #: Publisher confirms outstanding per publishing channel.
    window: int = 1000
    #: Prefetch of the raw relay; None: the hub's own (ONEWINDOW_PREFETCH or 512).
    relay_prefetch: int | None = None
    #: Extra environment of the hub processes, e.g. {"ONEWINDOW_BATCH_MAX": "500"}.
    hub_env: dict[str, str] = field(default_factory=dict)
    #: Phases to run, of ``PHASES``.
    phases: tuple[str, ...] = PHASES
    #: Give up a phase after this long.
    timeout_s: float = 900.0
    #: Record py-spy profiles of the hub processes into this directory.
    profile_dir: Path | None = None
    #: Keep the run's queues, users and database (for inspection).
    keep: bool = False
    #: Where the processes' logs go; None: a temporary directory.
    log_dir: Path | None = None

    def relay_count(self) -> int:
        return self.relay_messages if self.relay_messages is not None else self.claims

    def db_count(self) -> int:
        return self.db_docs if self.db_docs is not None else min(self.claims, 20_000)
