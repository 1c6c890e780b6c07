"""Message flows, live: what passes through each exchange, queue and partner.

Two sources, each for what it knows best:
- the RabbitMQ management API (``/api/exchanges``, ``/api/queues``, filtered to the hub's
  namespace): per exchange, messages in and out (totals and rates); per queue, backlog
  (ready + unacknowledged), consumers, publish / deliver / ack totals and rates, and the
  age of the oldest message where the broker reports ``head_message_timestamp`` (classic
  queues only: quorum queues do not, and peeking them would spend their delivery limit);
- the hub's store: per partner, messages received from it (``inbox``) and sent to it
  (``outbox``) in the last minute and the last hour, and refusals sent back to it. The
  broker keeps no per-routing-key counts, and partners' channels come and go.

Rates from the broker are per second over its sampling window (5 s by default); they
are shown per minute. ``flow_svg`` draws the whole flow with its counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import httpx

from hub.infra.topology import Topology

__all__ = [
    "ExchangeStats",
    "FlowMonitor",
    "Flows",
    "ManagementError",
    "PartnerFlow",
    "QueueStats",
    "exchange_stats",
    "flow_svg",
    "queue_stats",
]


class ManagementError(Exception):
    """The RabbitMQ management API could not be reached or refused the request."""


@dataclass(frozen=True)
class ExchangeStats:
    name: str
    logical: str
    in_total: int
    in_per_min: float
    out_total: int
    out_per_min: float


@dataclass(frozen=True)
class QueueStats:
    name: str
    logical: str
    kind: str  # hub, partner, creditor, dead, other
    messages: int
    ready: int
    unacked: int
    consumers: int
    published: int
    published_per_min: float
    delivered: int
    delivered_per_min: float
    acked_per_min: float
    oldest_age_s: float | None


@dataclass(frozen=True)
class PartnerFlow:
    partner_id: str
    queue_backlog: int
    consumers: int
    out_last_min: int
    out_last_hour: int
    in_last_min: int
    in_last_hour: int
    refused_last_hour: int


@dataclass(frozen=True)
class Flows:
    at: dt.datetime
    namespace: str
    exchanges: list[ExchangeStats] = field(default_factory=list)
    queues: list[QueueStats] = field(default_factory=list)
    partners: list[PartnerFlow] = field(default_factory=list)
    #: creditor side, from the store: claims received / receipts sent
    claims_last_min: int = 0
    claims_last_hour: int = 0
    receipts_last_min: int = 0
    receipts_last_hour: int = 0
    errors: list[str] = field(default_factory=list)

    def queue(self, logical: str) -> QueueStats | None:
        return next((q for q in self.queues if q.logical == logical), None)

    def exchange(self, logical: str) -> ExchangeStats | None:
        return next((x for x in self.exchanges if x.logical == logical), None)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["at"] = self.at.isoformat()
        return doc


# --- parsing the management API's documents (pure) ----------------------------------------


def _stat(doc: Mapping[str, Any], name: str) -> tuple[int, float]:
    stats = doc.get("message_stats") or {}
    total = int(stats.get(name, 0) or 0)
    per_s = float((stats.get(f"{name}_details") or {}).get("rate", 0.0) or 0.0)
    return total, round(per_s * 60, 1)


def _kind(logical: str) -> str:
    if logical == "hub.dead":
        return "dead"
    if logical.startswith("hub."):
        return "hub"
    if logical.startswith("partner."):
        return "partner"
    if logical.startswith("creditor."):
        return "creditor"
    return "other"


def exchange_stats(doc: Mapping[str, Any], namespace: str) -> ExchangeStats:
    name = str(doc["name"])
    in_total, in_rate = _stat(doc, "publish_in")
    out_total, out_rate = _stat(doc, "publish_out")
    return ExchangeStats(name, name.removeprefix(namespace), in_total, in_rate, out_total, out_rate)


def queue_stats(doc: Mapping[str, Any], namespace: str, now: dt.datetime) -> QueueStats:
    name = str(doc["name"])
    logical = name.removeprefix(namespace)
    published, pub_rate = _stat(doc, "publish")
    delivered, del_rate = _stat(doc, "deliver_get")
    _, ack_rate = _stat(doc, "ack")
    head = doc.get("head_message_timestamp")
    oldest = None
    if isinstance(head, int | float) and head > 0:
        oldest = max(0.0, now.timestamp() - float(head))
    return QueueStats(
        name=name,
        logical=logical,
        kind=_kind(logical),
        messages=int(doc.get("messages", 0) or 0),
        ready=int(doc.get("messages_ready", 0) or 0),
        unacked=int(doc.get("messages_unacknowledged", 0) or 0),
        consumers=int(doc.get("consumers", 0) or 0),
        published=published,
        published_per_min=pub_rate,
        delivered=delivered,
        delivered_per_min=del_rate,
        acked_per_min=ack_rate,
        oldest_age_s=oldest,
    )


# --- the monitor ---------------------------------------------------------------------------


class FlowMonitor:
    """Reads a snapshot of the flows. ``db`` is the hub's database (PyMongo async)."""

    def __init__(
        self,
        management_url: str,
        topology: Topology,
        db: Any,
        *,
        vhost: str = "/",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(management_url)
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self.base = f"{parts.scheme or 'http'}://{netloc}{parts.path.rstrip('/')}/api"
        self.auth = (
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
        )
        self.vhost = urllib.parse.quote(vhost, safe="")
        self.topology = topology
        self.db = db
        self._client = client

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(auth=self.auth, timeout=10)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _list(self, kind: str) -> list[dict[str, Any]]:
        ns = self.topology.namespace
        params: dict[str, Any] = {"page": 1, "page_size": 500}
        if ns:
            params.update(name="^" + ns.replace(".", "\\."), use_regex="true")
        items: list[dict[str, Any]] = []
        try:
            while True:
                r = await self.client().get(f"{self.base}/{kind}/{self.vhost}", params=params)
                r.raise_for_status()
                page = r.json()
                items.extend(page.get("items", []))
                if params["page"] >= int(page.get("page_count", 1) or 1):
                    break
                params["page"] += 1
        except (httpx.HTTPError, ValueError) as e:
            raise ManagementError(f"management API {kind}: {e}") from e
        return [i for i in items if str(i.get("name", "")).startswith(ns)]

    async def snapshot(self, now: dt.datetime | None = None) -> Flows:
        now = now or dt.datetime.now(dt.UTC)
        ns = self.topology.namespace
        errors: list[str] = []
        broker = await asyncio.gather(
            self._list("exchanges"), self._list("queues"), return_exceptions=True
        )
        exchanges: list[ExchangeStats] = []
        queues: list[QueueStats] = []
        if isinstance(broker[0], BaseException) or isinstance(broker[1], BaseException):
            errors.extend(str(b) for b in broker if isinstance(b, BaseException))
        else:
            exchanges = sorted(
                (exchange_stats(d, ns) for d in broker[0] if d.get("name")),
                key=lambda x: x.logical,
            )
            queues = sorted((queue_stats(d, ns, now) for d in broker[1]), key=lambda q: q.logical)
        store = await self._store_counts(now)
        by_queue = {q.logical: q for q in queues}
        partner_ids = sorted(
            {q.logical.removeprefix("partner.") for q in queues if q.kind == "partner"}
            | set(store["partners"])
        )
        partners = []
        for pid in partner_ids:
            q = by_queue.get(f"partner.{pid}")
            c = store["partners"].get(pid, {})
            partners.append(
                PartnerFlow(
                    pid,
                    q.messages if q else 0,
                    q.consumers if q else 0,
                    c.get("out_min", 0),
                    c.get("out_hour", 0),
                    c.get("in_min", 0),
                    c.get("in_hour", 0),
                    c.get("refused_hour", 0),
                )
            )
        return Flows(
            at=now,
            namespace=ns,
            exchanges=exchanges,
            queues=queues,
            partners=partners,
            claims_last_min=store["claims_min"],
            claims_last_hour=store["claims_hour"],
            receipts_last_min=store["receipts_min"],
            receipts_last_hour=store["receipts_hour"],
            errors=errors,
        )

    async def _group(self, collection: str, match: dict[str, Any], key: str) -> dict[str, int]:
        pipeline = [{"$match": match}, {"$group": {"_id": key, "n": {"$sum": 1}}}]
        cursor = await self.db[collection].aggregate(pipeline)
        return {str(d["_id"]): int(d["n"]) async for d in cursor if d["_id"] is not None}

    async def _store_counts(self, now: dt.datetime) -> dict[str, Any]:
        minute, hour = now - dt.timedelta(minutes=1), now - dt.timedelta(hours=1)
        partners: dict[str, dict[str, int]] = defaultdict(dict)
        out: dict[str, Any] = {"partners": partners}
        for label, since in (("min", minute), ("hour", hour)):
            received = await self._group(
                "inbox",
                {"received_at": {"$gte": since}, "queue": "hub.partner-updates"},
                "$sender",
            )
            for pid, n in received.items():
                partners[pid][f"in_{label}"] = n
            sent = await self._group(
                "outbox",
                {"sent_at": {"$gte": since}, "exchange": "partners.out"},
                "$routing_key",
            )
            for key, n in sent.items():
                pid = key.split(".", 1)[0]
                partners[pid][f"out_{label}"] = partners[pid].get(f"out_{label}", 0) + n
            out[f"claims_{label}"] = await self.db.inbox.count_documents(
                {"received_at": {"$gte": since}, "queue": "hub.claims"}
            )
            out[f"receipts_{label}"] = await self.db.outbox.count_documents(
                {"sent_at": {"$gte": since}, "exchange": "claims.receipts"}
            )
        refused = await self._group(
            "rejections", {"received_at": {"$gte": hour}, "source": "partner"}, "$sender"
        )
        for pid, n in refused.items():
            partners[pid]["refused_hour"] = n
        return out


# --- the picture ---------------------------------------------------------------------------


def _box(x: float, y: float, w: float, h: float, label: str, sub: str, ident: str) -> str:
    return (
        f'<g id="{escape(ident)}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
        f'fill="#f8fafc" stroke="#334155"/>'
        f'<text x="{x + w / 2}" y="{y + h / 2 - 3}" text-anchor="middle" font-weight="bold">'
        f"{escape(label)}</text>"
        f'<text x="{x + w / 2}" y="{y + h / 2 + 12}" text-anchor="middle" fill="#475569">'
        f"{escape(sub)}</text></g>"
    )


def _arrow(x1: float, y1: float, x2: float, y2: float, label: str, ident: str) -> str:
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#2563eb" stroke-width="2" '
        f'marker-end="url(#arrow)"/>'
        f'<text id="{escape(ident)}" x="{mx}" y="{my - 5}" text-anchor="middle" '
        f'fill="#1e3a8a">{escape(label)}</text>'
    )


def _q(flows: Flows, logical: str) -> str:
    q = flows.queue(logical)
    if q is None:
        return "-"
    return f"backlog {q.messages} · {q.consumers} consumer(s)"


def _x(flows: Flows, logical: str) -> tuple[int, float]:
    x = flows.exchange(logical)
    return (x.in_total, x.in_per_min) if x else (0, 0.0)


def flow_svg(flows: Flows, *, max_partners: int = 8) -> str:
    """Creditor -> hub -> partners -> hub -> creditor, with counts on every arrow."""
    partners: Sequence[PartnerFlow] = flows.partners[:max_partners]
    rows = max(len(partners), 1)
    height = max(300, 70 + rows * 56)
    width = 940
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
        'id="flow-picture" role="img"><title>Message flow</title>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#2563eb"/></marker></defs>'
    ]
    mid = height / 2 - 40
    claims_total, claims_rate = _x(flows, "claims.in")
    receipts_total, receipts_rate = _x(flows, "claims.receipts")
    parts.append(_box(10, mid, 150, 60, "creditor", "flexspace", "node-creditor"))
    parts.append(_box(370, mid - 10, 180, 80, "hub", _q(flows, "hub.claims"), "node-hub"))
    parts.append(
        _arrow(
            160,
            mid + 15,
            370,
            mid + 15,
            f"claims.in {claims_total} ({claims_rate}/min)",
            "edge-claims",
        )
    )
    parts.append(
        _arrow(
            370,
            mid + 50,
            160,
            mid + 50,
            f"receipts {receipts_total} ({receipts_rate}/min)",
            "edge-receipts",
        )
    )
    dead = flows.queue("hub.dead")
    parts.append(
        _box(
            385,
            height - 62,
            150,
            50,
            "hub.dead",
            f"{dead.messages if dead else 0} dead letter(s)",
            "node-dead",
        )
    )
    parts.append(
        f'<line x1="460" y1="{mid + 70}" x2="460" y2="{height - 62}" stroke="#dc2626" '
        'stroke-dasharray="4 3" marker-end="url(#arrow)"/>'
    )
    for i, p in enumerate(partners):
        y = 20 + i * 56
        parts.append(
            _box(
                760,
                y,
                170,
                46,
                p.partner_id,
                f"backlog {p.queue_backlog} · {p.consumers} cons.",
                f"node-partner-{p.partner_id}",
            )
        )
        parts.append(
            _arrow(
                550, mid + 20, 760, y + 14, f"out {p.out_last_min}/min", f"edge-out-{p.partner_id}"
            )
        )
        parts.append(
            _arrow(760, y + 34, 550, mid + 45, f"in {p.in_last_min}/min", f"edge-in-{p.partner_id}")
        )
    if not partners:
        parts.append('<text x="760" y="40">no partner queue yet</text>')
    if len(flows.partners) > max_partners:
        parts.append(
            f'<text x="760" y="{height - 8}">+{len(flows.partners) - max_partners} more</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
