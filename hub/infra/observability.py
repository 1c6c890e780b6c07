"""Operability: structured JSON logs, Prometheus metrics and OpenTelemetry traces.

Logs
    ``setup_logging(level, json_logs=True)`` writes one JSON object a line: time, level,
    logger, message, and the ids in scope: ``case_id``, ``message_id``, ``partner_id``
    (given with ``extra={...}`` on a call, or bound for a block with ``log_context``).

Metrics
    ``HubMetrics`` holds the hub worker's counters and histograms in its own registry
    (``hub_messages_total``, ``hub_batches_total``, ``hub_batch_seconds``,
    ``hub_batch_failures_total``, ``hub_outbox_published_total``); ``instrument_hub`` wraps
    a running hub's consumers so they count; ``start_metrics_server`` serves a registry
    on its own port for a worker. The dashboard serves ``/metrics`` itself.

Traces
    ``setup_tracing`` installs an OpenTelemetry tracer provider (console exporter when
    ``OTEL_TRACES_EXPORTER=console``, else spans are created and dropped unless the
    caller passes an exporter). The hub's consumers are aio-pika batch consumers, not
    FastStream subscribers, so FastStream's ``TelemetryMiddleware`` does not apply to
    them: ``instrument_hub`` opens one CONSUMER span per batch (``<queue> process``) with
    the messaging attributes, the batch size, and a link to every message that carried
    a W3C ``traceparent`` header. The dashboard opens a SERVER span per request.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = [
    "HubMetrics",
    "JsonFormatter",
    "instrument_hub",
    "log_context",
    "setup_logging",
    "setup_tracing",
    "start_metrics_server",
    "tracer",
]

#: The ids a log line names when they are known (STYLE.md: case, message, partner).
CONTEXT_FIELDS = ("case_id", "message_id", "partner_id", "batch_id", "queue")
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "onewindow_log_context", default=MappingProxyType({})
)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (``case_id=...``, ``message_id=...``) to every log line of the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the bound ids and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_context.get())
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        span = _current_span_ids()
        if span:
            doc.update(span)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO", *, json_logs: bool = True) -> None:
    """Configure the root logger (idempotent: replaces the handlers it installed)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_onewindow", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._onewindow = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter()
        if json_logs
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("aiormq", "aio_pika", "pymongo", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- metrics -----------------------------------------------------------------------------


class HubMetrics:
    """The hub worker's metrics, in a registry of their own (one per hub: tests run many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "hub_messages", "Messages handled by a consumer", ["queue"], registry=r
        )
        self.batches = Counter("hub_batches", "Batches committed", ["queue"], registry=r)
        self.failures = Counter(
            "hub_batch_failures", "Batches whose handler raised", ["queue"], registry=r
        )
        self.batch_seconds = Histogram(
            "hub_batch_seconds",
            "Time to handle one batch (one MongoDB transaction)",
            ["queue"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.outbox = Counter(
            "hub_outbox_messages", "Outgoing messages produced by handlers", ["queue"], registry=r
        )


def start_metrics_server(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=registry)


# --- traces ------------------------------------------------------------------------------


def setup_tracing(service_name: str = "onewindow-hub", exporter: Any = None) -> Any:
    """Install a tracer provider; returns it. ``exporter``: a span exporter (e.g. an
    ``InMemorySpanExporter`` in tests); default from ``OTEL_TRACES_EXPORTER=console``."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # already installed: add to it (set once only)
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        trace.set_tracer_provider(provider)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def tracer(name: str = "onewindow") -> Any:
    from opentelemetry import trace

    return trace.get_tracer(name)


def _current_span_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - tracing is optional
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def _links(batch: Sequence[Any]) -> list[Any]:
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    links = []
    for msg in batch:
        headers = getattr(msg, "headers", None) or {}
        carrier = {k: str(v) for k, v in headers.items() if k in ("traceparent", "tracestate")}
        if "traceparent" in carrier:
            ctx = trace.get_current_span(extract(carrier)).get_span_context()
            if ctx.is_valid:
                links.append(trace.Link(ctx))
    return links


Handler = Callable[[Sequence[Any]], Awaitable[list[Any]]]


def traced_handler(queue: str, handler: Handler, metrics: HubMetrics | None = None) -> Handler:
    """``handler`` with one span, log context and metrics per batch."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    async def handle(batch: Sequence[Any]) -> list[Any]:
        ids = [m.message_id for m in batch if getattr(m, "message_id", None)]
        start = time.perf_counter()
        with (
            tracer("onewindow.hub").start_as_current_span(
                f"{queue} process",
                kind=SpanKind.CONSUMER,
                links=_links(batch),
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": queue,
                    "messaging.batch.message_count": len(batch),
                    "messaging.message.id": ids[0] if len(ids) == 1 else "",
                    "onewindow.message_ids": ids[:50],
                },
            ) as span,
            log_context(queue=queue, message_id=ids[0] if len(ids) == 1 else None),
        ):
            try:
                out = await handler(batch)
            except Exception as e:
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
                if metrics:
                    metrics.failures.labels(queue).inc()
                raise
            span.set_attribute("onewindow.outbox_count", len(out))
        if metrics:
            metrics.messages.labels(queue).inc(len(batch))
            metrics.batches.labels(queue).inc()
            metrics.outbox.labels(queue).inc(len(out))
            metrics.batch_seconds.labels(queue).observe(time.perf_counter() - start)
        return out

    return handle


def instrument_hub(hub: Any, metrics: HubMetrics | None = None) -> HubMetrics:
    """Wrap a running hub's batch consumers with traces, log context and metrics.
    ``BatchConsumer`` calls ``self.handler`` for every batch, so the swap takes effect at
    the next batch."""
    metrics = metrics or HubMetrics()
    for consumer in getattr(hub, "consumers", ()):
        if not getattr(consumer.handler, "_onewindow_traced", False):
            wrapped = traced_handler(consumer.queue_name, consumer.handler, metrics)
            wrapped._onewindow_traced = True  # type: ignore[attr-defined]
            consumer.handler = wrapped
    return metrics
