"""The file adapter against a running hub and a real drop folder (``tmp_path``)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.certify import SCENARIOS, Certification, CertificationHub, FileRig
from adapters.files import (
    NOTICE_COLUMNS,
    PLACEMENT_COLUMNS,
    FileAdapter,
    MongoQuarantineLog,
    StatusMapping,
    load_mapping,
)
from hub.bootstrap import Hub
from hub.config import Settings
from partner_sdk import PartnerClient
from tests.conftest import PartnerFactory
from tests.support import claim_body, eventually, publish_json

pytestmark = pytest.mark.services

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mappings" / "acme-de.yaml"


def partner_url(settings: Settings, pid: str) -> str:
    broker = urllib.parse.urlsplit(settings.amqp_url)
    return f"amqp://{pid}:pw-{pid}@{broker.hostname}:{broker.port or 5672}/"


def acme_mapping() -> StatusMapping:
    """The example mapping of acme-de, lent to a test partner."""
    return dataclasses.replace(load_mapping(EXAMPLE), partner_id=None)


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def drop_return(folder: Path, name: str, rows: list[list[str]]) -> Path:
    incoming = folder / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "status_code", "date", "amount", "currency", "note"])
    writer.writerows(rows)
    path = incoming / name
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


async def test_the_file_adapter_passes_the_certification(
    hub: Hub, partner: PartnerFactory, settings: Settings, tmp_path: Path
) -> None:
    pid = await partner(["DE"])
    rig = FileRig(
        partner_url(settings, pid),
        hub,
        tmp_path,
        acme_mapping(),
        namespace=settings.namespace,
    )
    report = await Certification(CertificationHub(hub), rig, within=20).run(pid)

    assert report.passed, report.as_text()
    assert [r.name for r in report.results] == [name for name, _, _ in SCENARIOS]
    got = {r.name: r for r in report.results}
    assert "quarantine" in got["invalid_message"].detail
    assert "notice file" in got["unknown_case"].detail

    placements = sorted((tmp_path / "outgoing").glob("placements-*.csv"))
    assert placements
    with placements[0].open(encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(PLACEMENT_COLUMNS)
    (row,) = [r for p in placements for r in read_csv(p)]
    assert row["case_id"] == report.case_id and row["debtor_country"] == "AQ"
    notices = [r for p in (tmp_path / "outgoing").glob("notices-*.csv") for r in read_csv(p)]
    assert {r["code"] for r in notices} == {"unknown_case", "illegal_transition"}
    assert all(r["source"].startswith("cert-") for r in notices)  # the row they answer
    # every return file was handled; the document moved with its file
    assert not list((tmp_path / "incoming").glob("*.csv"))
    assert len(list((tmp_path / "processed").glob("*.csv"))) == 7
    assert len(list((tmp_path / "processed" / "documents").iterdir())) == 1
    (entry,) = [d async for d in hub.store.db.quarantine.find({"partner_id": pid})]
    assert entry["reason_code"] == "invalid_message" and entry["code"] == "ACC"


@pytest.fixture
async def adapter(
    hub: Hub, partner: PartnerFactory, settings: Settings, tmp_path: Path
) -> AsyncIterator[FileAdapter]:
    """A connected file adapter of a new DE partner, driven round by round."""
    pid = await partner(["DE"])
    client = PartnerClient(partner_url(settings, pid), namespace=settings.namespace)
    a = FileAdapter(client, tmp_path, acme_mapping(), MongoQuarantineLog(hub.store.db), settle_s=0)
    await a.open()
    try:
        yield a
    finally:
        await a.stop()


async def assigned_case(hub: Hub, adapter: FileAdapter, n: int) -> str:
    async with hub.connection.channel() as ch:
        await publish_json(
            ch,
            hub.topology.claims_in,
            "claim.placed",
            claim_body(n, debtor=n),
            type="claim.placed",
        )
    assert await adapter.pump_once(30) == 1
    (placement,) = adapter.drop.outgoing.glob("placements-*.csv")
    (row,) = read_csv(placement)
    assert row["invoice_numbers"] == f"INV-{n:06d}" and row["total"] == "1052.50"
    return row["case_id"]


async def test_unknown_codes_are_quarantined_and_rereading_a_file_changes_nothing(
    hub: Hub, adapter: FileAdapter, tmp_path: Path
) -> None:
    case_id = await assigned_case(hub, adapter, 11)
    rows = [
        [case_id, "ACC", "2026-05-04", "", "", ""],
        [case_id, "XYZ", "2026-05-05", "", "", "what is this?"],
        [case_id, "TEL1", "2026-05-05T09:30:00+02:00", "", "", "spoke to the CFO"],
        [case_id, "PAY", "2026-05-06", "250.00", "EUR", ""],
    ]
    drop_return(tmp_path, "status-0506.csv", rows)
    (report,) = await adapter.poll_once()

    assert [(line, t) for line, _, t in report.forwarded] == [
        (2, "case.accepted"),
        (4, "case.activity"),
        (5, "case.payment"),
    ]
    (q,) = report.quarantined
    assert (q.file, q.line, q.code, q.reason_code) == ("status-0506.csv", 3, "XYZ", "unknown_code")
    # in the folder, for whoever fixes the row...
    (qfile,) = (tmp_path / "quarantine").glob("*.quarantine.csv")
    (qrow,) = read_csv(qfile)
    assert qrow["status_code"] == "XYZ" and qrow["line"] == "3"
    assert "not in the mapping" in qrow["reason"]
    # ...and in MongoDB, for the coordinator's dashboard
    (doc,) = [d async for d in hub.store.db.quarantine.find({"partner_id": adapter.partner_id})]
    assert (doc["file"], doc["line"], doc["code"], doc["status"]) == (
        "status-0506.csv",
        3,
        "XYZ",
        "open",
    )
    assert (tmp_path / "processed" / "status-0506.csv").is_file()

    async def applied() -> bool:
        state = await hub.store.case(case_id)
        return state is not None and state.collected == "250.00"

    await eventually(applied)
    before = [e.seq for e in await hub.store.events(case_id)]

    # the partner drops the same file again: same ids, nothing applied twice
    drop_return(tmp_path, "status-0506.csv", rows)
    (again,) = await adapter.poll_once()
    assert [mid for _, mid, _ in again.forwarded] == [mid for _, mid, _ in report.forwarded]
    assert len(list((tmp_path / "processed").glob("status-0506*.csv"))) == 2
    # a last row, applied after the repeated ones (the hub consumes in order)
    drop_return(tmp_path, "status-0507.csv", [[case_id, "TEL0", "2026-05-07", "", "", ""]])
    (last,) = await adapter.poll_once()
    (_, last_id, _) = last.forwarded[0]

    async def sentinel() -> bool:
        return any(e.message_id == last_id for e in await hub.store.events(case_id))

    await eventually(sentinel)
    state = await hub.store.case(case_id)
    assert state is not None and state.collected == "250.00"
    assert [e.seq for e in await hub.store.events(case_id)] == [*before, before[-1] + 1]
    assert await hub.store.db.quarantine.count_documents({"partner_id": adapter.partner_id}) == 1


async def test_the_hubs_refusals_come_back_as_notice_rows_naming_the_source_row(
    hub: Hub, adapter: FileAdapter, tmp_path: Path
) -> None:
    case_id = await assigned_case(hub, adapter, 12)
    drop_return(
        tmp_path,
        "status-a.csv",
        [
            ["C-0000000000000000", "ACC", "2026-05-04", "", "", ""],
            [case_id, "CLP", "2026-05-04", "", "", ""],  # closing a case not accepted
        ],
    )
    (report,) = await adapter.poll_once()
    assert len(report.forwarded) == 2
    notices: list[dict[str, str]] = []
    for _ in range(20):
        await adapter.pump_once(1)
        notices = [r for p in adapter.drop.outgoing.glob("notices-*.csv") for r in read_csv(p)]
        if len(notices) == 2:
            break
    with next(adapter.drop.outgoing.glob("notices-*.csv")).open(encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(NOTICE_COLUMNS)
    by_code = {r["code"]: r for r in notices}
    assert set(by_code) == {"unknown_case", "illegal_transition"}
    assert by_code["unknown_case"]["source"] == "status-a.csv:2"
    assert by_code["illegal_transition"]["source"] == "status-a.csv:3"
    assert by_code["illegal_transition"]["case_id"] == case_id
    assert all(r["type"] == "error.reply" for r in notices)


async def test_a_file_without_the_required_columns_is_quarantined_whole(
    hub: Hub, adapter: FileAdapter, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    (incoming / "broken.csv").write_text("case;code;when\nC-1;ACC;2026-05-04\n", encoding="utf-8")
    (report,) = await adapter.poll_once()
    (entry,) = report.quarantined
    assert entry.line == 0 and entry.reason_code == "invalid_file"
    assert "status_code" in entry.reason
    assert (tmp_path / "quarantine" / "broken.csv").is_file()
    assert (tmp_path / "quarantine" / "broken.csv.reason.txt").is_file()
    assert not (incoming / "broken.csv").exists()
    doc = await hub.store.db.quarantine.find_one({"partner_id": adapter.partner_id})
    assert doc is not None and doc["line"] == 0 and doc["reason_code"] == "invalid_file"


async def test_hubctl_adapters_files_once_writes_and_reads_the_drop_folder(
    hub: Hub, partner: PartnerFactory, settings: Settings, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from hub.entrypoints import cli_adapters

    pid = await partner(["DE"])
    app = typer.Typer()
    cli_adapters.register(app)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(EXAMPLE.read_text(encoding="utf-8").replace("acme-de", pid), "utf-8")
    env = {
        "ONEWINDOW_NAMESPACE": settings.namespace,
        "ONEWINDOW_MONGO_DB": settings.mongo_db,
        "ONEWINDOW_PARTNER_AMQP_URL": partner_url(settings, pid),
        "COLUMNS": "200",
    }
    args = ["adapters", "files", "--partner", pid, "--drop", str(tmp_path / "drop")]
    args += ["--mapping", str(mapping), "--once", "--settle", "0"]

    async with hub.connection.channel() as ch:
        await publish_json(
            ch, hub.topology.claims_in, "claim.placed", claim_body(21), type="claim.placed"
        )

    async def placed() -> bool:
        return await hub.store.db.cases.count_documents({"partner_id": pid}) == 1

    await eventually(placed)
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "1 hub message(s) written" in result.output
    (placement,) = (tmp_path / "drop" / "outgoing").glob("placements-*.csv")
    (row,) = read_csv(placement)

    drop_return(tmp_path / "drop", "r1.csv", [[row["case_id"], "ACC", "2026-05-04", "", "", ""]])
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "1 return file(s) read" in result.output

    async def accepted() -> bool:
        state = await hub.store.case(row["case_id"])
        return state is not None and state.lifecycle.value == "accepted"

    await eventually(accepted)
