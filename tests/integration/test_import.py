"""``hubctl claims import`` and ``hubctl route --dry-run`` against a hub running in-process
on the real RabbitMQ and MongoDB-compatible server (own namespace and database)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection
from pymongo import MongoClient
from typer.testing import CliRunner

from hub.bootstrap import Hub
from hub.config import Settings
from hub.entrypoints import cli_claims
from hub.entrypoints.cli import app
from hub.entrypoints.cli_claims import import_file, wait_for_batch
from hub.service import importer, simulation
from hub.service.importer import CSV_COLUMNS
from tests.support import drain, unique_settings

pytestmark = pytest.mark.services

CREDITOR = "flexspace"
STATUS_OF_KIND = {
    "claim": "accepted",
    "duplicate": "duplicate",
    "amendment": "amended",
    "withdrawal": "withdrawn",
    "invalid": "rejected",
}


def write_csv(path: Path, rows: list[simulation.SampleRow]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(importer.to_csv_record(row.type, row.body))
    return path


async def test_a_csv_batch_gets_one_receipt_per_row_and_a_reconciliation(
    hub: Hub, settings: Settings, connection: AbstractRobustConnection, tmp_path: Path
) -> None:
    sample = simulation.generate_sample(
        200, 25, 11, today=dt.date(2026, 12, 1), tag=uuid.uuid4().hex[:8]
    )
    kinds = Counter(r.kind for r in sample)
    assert kinds["duplicate"] >= 5 and kinds["invalid"] >= 3 and kinds["amendment"] >= 5
    path = write_csv(tmp_path / "december.csv", sample)

    outcome = await import_file(settings, path, creditor_id=CREDITOR)

    stats = outcome.stats
    assert (stats.rows, stats.published, stats.confirmed) == (200, 200, 200)
    assert stats.invalid_locally == kinds["invalid"]
    assert outcome.previously is None
    batch_id = outcome.batch.batch_id
    rows = list(importer.read_rows(outcome.batch, creditor_id=CREDITOR))
    expected_status = {
        r.message_id: STATUS_OF_KIND[s.kind] for r, s in zip(rows, sample, strict=True)
    }

    channel = await connection.channel()
    queue = hub.topology.creditor_queue(CREDITOR)
    messages = await drain(
        channel,
        queue,
        limit=90,
        until=lambda got: any(msg.type == "batch.reconciled" for msg in got),
    )
    # delivery is at least once: a receipt may come twice, always under the same id
    unique = {msg.message_id: msg for msg in messages}
    assert all(str(msg.message_id).startswith(("rcpt:", "batch:")) for msg in messages)
    receipts = [json.loads(m.body) for m in unique.values() if m.type == "claim.receipt"]
    reconciled = [json.loads(m.body) for m in unique.values() if m.type == "batch.reconciled"]

    # one receipt per row, each with the status the row calls for
    assert Counter(r["claim_message_id"] for r in receipts) == Counter(list(expected_status))
    assert {r["claim_message_id"]: r["status"] for r in receipts} == expected_status
    assert all(r["batch_id"] == batch_id for r in receipts)
    rejected = [r for r in receipts if r["status"] == "rejected"]
    assert all(r["errors"] for r in rejected)
    [summary] = reconciled
    statuses = Counter(expected_status.values())
    assert summary["batch_id"] == batch_id
    assert (summary["expected"], summary["received"]) == (200, 200)
    for status in ("accepted", "duplicate", "amended", "withdrawn", "rejected"):
        assert summary[status] == statuses[status], status

    db = hub.store.db
    cases = await db.cases.count_documents({})
    inbox = await db.inbox.count_documents({})
    assert inbox == 200

    # the same file again: the same ids, the hub's inbox makes it a no-op
    again = await import_file(settings, path, creditor_id=CREDITOR)

    assert again.batch.batch_id == batch_id
    assert again.stats.confirmed == 200
    assert again.previously is not None and again.previously["accepted"] == statuses["accepted"]
    assert [r.message_id for r in importer.read_rows(again.batch, creditor_id=CREDITOR)] == [
        r.message_id for r in rows
    ]
    late = await drain(channel, queue, idle=3.0, limit=15)
    assert {msg.message_id for msg in late} <= set(unique)  # at most a late re-delivery
    assert await db.cases.count_documents({}) == cases
    assert await db.inbox.count_documents({}) == inbox
    assert await db.events.count_documents({"message_id": {"$in": list(expected_status)}}) > 0


async def test_wait_reads_the_receipts_also_of_rows_that_could_not_be_mapped(
    hub: Hub, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_claims, "RECONCILE_GRACE_S", 3.0)
    sample = simulation.generate_sample(20, 5, 3, today=dt.date(2026, 12, 1), tag="w1")
    path = tmp_path / "mixed.jsonl"
    with path.open("wb") as f:
        for row in sample:
            f.write(row.jsonl() + b"\n")
        f.write(b'{"creditor_entity": "FLEX-DE-01", "invoice_number": \n')

    outcome = await import_file(settings, path, creditor_id=CREDITOR)
    assert outcome.stats.rows == 21
    assert len(outcome.stats.raw_ids) == 1

    waited = await wait_for_batch(
        settings,
        CREDITOR,
        outcome.batch.batch_id,
        rows=outcome.stats.published,
        raw_ids=outcome.stats.raw_ids,
        limit_s=60,
    )

    assert not waited.timed_out
    assert waited.receipts == 21
    kinds = Counter(STATUS_OF_KIND[s.kind] for s in sample)
    kinds["rejected"] += 1  # the line that is not JSON
    assert waited.statuses == kinds
    [raw_id] = outcome.stats.raw_ids
    rejection = await hub.store.db.rejections.find_one({"message_id": raw_id})
    assert rejection is not None and rejection["sender"] == CREDITOR
    if waited.reconciled is not None:  # once intake counts raw rows by their headers
        assert waited.reconciled["received"] == 21


def test_route_dry_run_shows_where_cases_would_go_and_changes_nothing(
    services: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = unique_settings()
    monkeypatch.setenv("ONEWINDOW_MONGO_DB", settings.mongo_db)
    monkeypatch.setenv("ONEWINDOW_NAMESPACE", settings.namespace)
    monkeypatch.setenv("COLUMNS", "160")
    sample = simulation.generate_sample(80, 25, 7, today=dt.date(2026, 12, 1))
    path = write_csv(tmp_path / "plan.csv", sample)
    client: MongoClient[dict[str, object]] = MongoClient(settings.mongo_url)
    try:
        db = client[settings.mongo_db]
        for profile in simulation.DEMO_PARTNERS:
            db.partners.replace_one({"_id": profile.partner_id}, profile.to_document(), upsert=True)
        before = {name: db[name].count_documents({}) for name in db.list_collection_names()}

        runner = CliRunner()
        refused = runner.invoke(app, ["route", str(path)])
        result = runner.invoke(app, ["route", "--dry-run", str(path), "--show", "500"])

        assert refused.exit_code == 2
        assert "routing happens on import" in refused.output
        assert result.exit_code == 0, result.output
        assert "nothing was changed" in result.output
        assert "demo-" in result.output
        assert "unassigned" in result.output
        after = {name: db[name].count_documents({}) for name in db.list_collection_names()}
        assert after == before
    finally:
        client.drop_database(settings.mongo_db)
        client.close()
