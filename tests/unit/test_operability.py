"""Operability without services: the AsyncAPI document (validated against the AsyncAPI
3.0.0 JSON Schema), the OpenAPI document, JSON logs, batch traces and metrics, charts."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from prometheus_client import generate_latest
from typer.testing import CliRunner

from hub.entrypoints.asyncapi import CONSUMED, PUBLISHED, asyncapi_document
from hub.entrypoints.cli_web import register
from hub.entrypoints.web import DashboardSettings, create_app
from hub.infra.observability import (
    HubMetrics,
    JsonFormatter,
    instrument_hub,
    log_context,
    setup_tracing,
)
from hub.service import charts
from partner_sdk import messages as m

# The AsyncAPI 3.0.0 JSON Schema, from the npm package @asyncapi/specs 6.11.1
# (schemas/3.0.0-without-$id.json, Apache-2.0), kept here so that the check runs offline.
ASYNCAPI_SCHEMA = Path(__file__).parents[1] / "data" / "asyncapi-3.0.0.schema.json"


def asyncapi_validator() -> Any:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_asyncapi_document_validates_against_the_asyncapi_schema() -> None:
    doc = asyncapi_document()
    errors = list(asyncapi_validator().iter_errors(doc))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]
    assert doc["asyncapi"] == "3.0.0"
    # every message type of the contract is in it, with its pydantic schema
    schemas = doc["components"]["schemas"]
    for _, _, types in CONSUMED.values():
        assert {t.__name__ for t in types} <= set(schemas)
    assert {cls.__name__ for _, _, cls, _ in PUBLISHED} <= set(schemas)
    assert schemas["ClaimPlaced"]["additionalProperties"] is False
    assert set(doc["channels"]) >= {
        "hub.claims",
        "hub.partner-updates",
        "partners.out:case.assigned",
    }
    updates = doc["components"]["messages"]["hub.partner-updates:SubscribeMessage"]["payload"]
    assert len(updates["oneOf"]) == 11  # ten reports and document.requested
    assert "password" not in json.dumps(asyncapi_document("amqp://u:secret@h:5672/"))
    # the validator does catch a broken document
    broken = copy.deepcopy(doc)
    del broken["info"]
    assert list(asyncapi_validator().iter_errors(broken))
    broken = copy.deepcopy(doc)
    broken["channels"]["hub.claims"]["messages"] = "oops"
    assert list(asyncapi_validator().iter_errors(broken))


def test_docs_commands_print_both_documents(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["docs", "asyncapi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["asyncapi"] == "3.0.0"
    target = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["docs", "openapi", "-o", str(target)])
    assert result.exit_code == 0, result.output
    doc = json.loads(target.read_text())
    assert doc["openapi"].startswith("3.")
    assert "/api/cases/{case_id}/settlements/{settlement_id}/decision" in doc["paths"]
    assert doc["components"]["securitySchemes"]["HTTPBasic"]["scheme"] == "basic"


def test_docs_join_an_existing_docs_group() -> None:
    app = typer.Typer()
    docs = typer.Typer()

    @docs.command("list")
    def listing() -> None:
        """A command already in the group."""

    app.add_typer(docs, name="docs")
    register(app)
    assert [g.name for g in app.registered_groups] == ["docs"]
    names = {c.name for c in docs.registered_commands}
    assert names == {"list", "asyncapi", "openapi"}


def test_dashboard_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEWINDOW_DASHBOARD_PASSWORD", "from-env")
    monkeypatch.setenv("ONEWINDOW_DASHBOARD_DEV", "1")
    s = DashboardSettings()
    assert s.dashboard_password is not None
    assert s.dashboard_password.get_secret_value() == "from-env" and s.dashboard_dev
    assert "from-env" not in repr(s)
    app = create_app(s, connect=False)
    assert app.title.startswith("OneWindow")


def test_json_logs_carry_the_ids_in_scope() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.onewindow.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with log_context(case_id="C-1", message_id="m-1"):
            logger.info("handled %s", "x", extra={"partner_id": "acme-de"})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "handled x" and first["level"] == "info"
    assert (first["case_id"], first["message_id"], first["partner_id"]) == ("C-1", "m-1", "acme-de")
    assert "case_id" not in second and second["level"] == "warning"


class FakeConsumer:
    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self.calls = 0

        async def handler(batch: Sequence[Any]) -> list[Any]:
            self.calls += 1
            if any(getattr(b, "message_id", "") == "poison" for b in batch):
                raise ValueError("poison")
            return ["out"] * len(batch)

        self.handler: Any = handler


class FakeMessage:
    def __init__(self, message_id: str, headers: dict[str, Any] | None = None) -> None:
        self.message_id = message_id
        self.headers = headers or {}


async def test_batches_are_traced_counted_and_linked_to_their_senders() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = InMemorySpanExporter()
    provider = setup_tracing("test", exporter=exporter)
    consumer = FakeConsumer("t.hub.claims")

    class FakeHub:
        consumers = [consumer]

    metrics = instrument_hub(FakeHub())
    assert instrument_hub(FakeHub(), metrics) is metrics  # wrapping twice is harmless
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = await consumer.handler([FakeMessage("a", {"traceparent": parent}), FakeMessage("b")])
    assert out == ["out", "out"] and consumer.calls == 1
    with pytest.raises(ValueError):
        await consumer.handler([FakeMessage("poison")])
    provider.force_flush()
    ok, failed = exporter.get_finished_spans()
    assert ok.name == "t.hub.claims process" and ok.kind is SpanKind.CONSUMER
    assert ok.attributes is not None and ok.attributes["messaging.batch.message_count"] == 2
    assert [f"{link.context.trace_id:032x}" for link in ok.links] == [
        "0af7651916cd43dd8448eb211c80319c"
    ]
    assert failed.status.status_code is StatusCode.ERROR
    text = generate_latest(metrics.registry).decode()
    assert 'hub_messages_total{queue="t.hub.claims"} 2.0' in text
    assert 'hub_batch_failures_total{queue="t.hub.claims"} 1.0' in text
    assert 'hub_batch_seconds_count{queue="t.hub.claims"} 1.0' in text


def test_hub_metrics_have_their_own_registry() -> None:
    a, b = HubMetrics(), HubMetrics()
    a.messages.labels("q").inc()
    assert 'queue="q"' in generate_latest(a.registry).decode()
    assert 'queue="q"' not in generate_latest(b.registry).decode()


def test_charts_escape_labels_and_draw_something() -> None:
    svg = charts.bar_chart({"<b>&": 3, "x": 1.5}, title="T <1>")
    assert "&lt;b&gt;&amp;" in svg and "T &lt;1&gt;" in svg and svg.count("<rect") >= 3
    assert "no data" in charts.bar_chart({}, title="empty")
    line = charts.line_chart({"2026-10 EUR": [0.1, None, 0.5]}, title="L")
    assert "<polyline" in line and line.count("<circle") == 2
    stacked = charts.stacked_bars({"DE": {"assigned": 2, "closed": 1}}, title="S")
    assert stacked.count("<rect") >= 4  # background, two segments, legend
    assert m.ClaimPlaced.TYPE == "claim.placed"
