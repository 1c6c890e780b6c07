"""``python -m bench`` end to end with tiny sizes: every phase runs (hub workers as separate
processes), the JSON result has every key with sane values, and the run leaves nothing
behind (queues, exchanges, partner users, database). A smoke test, not a timed test:
no figure is compared with a target here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from hub.config import Settings
from tests.support import Management

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = 200
UPDATES = 200


@pytest.fixture(scope="module")
def result(services: None) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--claims",
            str(CLAIMS),
            "--updates",
            str(UPDATES),
            "--latency-rate",
            "50",
            "--latency-seconds",
            "2",
            "--latency-warmup",
            "0.5",
            "--json",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _rate(value: Any) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value) and value > 0, value
    return float(value)


def test_every_figure_is_there_and_sane(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    for key in (
        "limit_relay_per_s",
        "limit_relay_pipelined_per_s",
        "limit_db_writes_per_s",
        "intake_claims_per_s",
        "updates_per_s",
        "ratio_intake",
        "ratio_updates",
        "ratio_intake_pipelined",
        "ratio_updates_pipelined",
        "peak_rss_mb",
    ):
        _rate(result[key])
    assert result["ratio_intake"] == pytest.approx(
        result["intake_claims_per_s"] / result["limit_relay_per_s"], rel=0.01
    )
    assert result["ratio_updates"] == pytest.approx(
        result["updates_per_s"] / result["limit_relay_per_s"], rel=0.01
    )
    assert result["ratio_intake_pipelined"] == pytest.approx(
        result["intake_claims_per_s"] / result["limit_relay_pipelined_per_s"], rel=0.01
    )
    assert result["limit_relay_pipelined_prefetch"] == 512  # the hub's own prefetch
    assert result["claims"] == CLAIMS
    assert result["cases"] == CLAIMS  # one claim per case by default
    assert result["updates"] == UPDATES
    assert result["intake_rejected"] == 0
    assert result["updates_refused"] == 0
    assert result["intake_batch_reconciled"] is True
    # a hub worker is a Python process of some tens of MB, not bytes and not gigabytes
    assert 20 < result["peak_rss_mb"] < 2000


def test_latency_percentiles(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    assert lat["count"] == 100 and lat["missing"] == 0  # the 25 of the warm-up not counted
    assert lat["warmup_claims"] == 25
    p50, p95, p99 = (_rate(lat[k]) for k in ("p50", "p95", "p99"))
    assert p50 <= p95 <= p99 <= lat["max"]
    assert p99 < 60_000


def test_versions(result: dict[str, Any]) -> None:
    v = result["versions"]
    assert v["rabbitmq"] and v["rabbitmq"][0].isdigit()
    assert v["database"]["name"] and v["database"]["version"]
    assert v["python"].startswith("3.")
    assert v["hub"]


def test_where_the_time_went(result: dict[str, Any]) -> None:
    phases = result["phases"]
    assert {
        "limit_relay",
        "limit_relay_pipelined",
        "limit_db",
        "intake",
        "accepts",
        "updates",
        "latency",
    } <= set(phases)
    for usage in phases.values():
        assert usage["wall_s"] > 0
        assert all(v >= 0 for v in usage["cpu_s"].values())
    assert phases["intake"]["cpu_s"]["hub"] > 0
    for key, target in result["targets"].items():
        assert target["met"] in (True, False, None), key


def test_nothing_is_left_behind(result: dict[str, Any]) -> None:
    run = result["run"]
    settings = Settings()
    management = Management(settings)
    with httpx.Client(auth=management.auth, timeout=10) as c:
        queues = c.get(f"{management.base}/queues/%2F?columns=name").json()
        users = c.get(f"{management.base}/users?columns=name").json()
    assert not [q["name"] for q in queues if q["name"].startswith(f"bench{run}.")]
    assert not [u["name"] for u in users if u["name"].startswith(f"b{run}-")]
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
    try:
        assert f"bench_{run}" not in client.list_database_names()
    finally:
        client.close()
