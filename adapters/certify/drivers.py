"""Drivers: how the certification plays the partner's side, one per way of connecting.

A driver receives the hub's messages and sends the partner's reports the way that kind
of partner does, so that the same scenarios certify every path end to end:

- ``SdkDriver``: ``PartnerClient`` itself (a partner that installed the SDK);
- ``WebhookDriver``: an HTTP server playing a partner with an API behind the webhook
  adapter: it checks the signature of each POST it receives and sends signed callbacks;
- ``FileDriver``: a partner behind the file adapter: it reads the placement and notice
  files and writes status return files with its own codes.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aio_pika
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.files.adapter import DropFolder
from adapters.files.mapping import StatusMapping, row_message_id
from adapters.webhook import signing
from adapters.webhook.server import EmbeddedServer
from partner_sdk import messages as m
from partner_sdk.client import Delivery, PartnerClient, parse_hub_message
from partner_sdk.errors import InvalidMessage

__all__ = [
    "Assignment",
    "Driver",
    "FileDriver",
    "Received",
    "Refusal",
    "SdkDriver",
    "WebhookDriver",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Assignment:
    case_id: str
    assignment_id: str
    currency: str
    total: str


@dataclass(frozen=True)
class Refusal:
    """How a report was refused: ``code`` (e.g. ``unknown_case``), by ``via`` (the hub's
    ``error.reply``, the adapter's HTTP 400, the file adapter's quarantine)."""

    code: str
    message: str
    via: str
    message_id: str | None = None


@dataclass(frozen=True)
class Received:
    """A hub message as the partner's side got it."""

    type: str
    message_id: str
    message: m.Message


class Driver(Protocol):
    name: str
    partner_id: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def expect_case(self, case_id: str) -> None:
        """The certification's case: its messages are the driver's to take."""

    async def assignment(self, case_id: str, within: float) -> Assignment | None: ...
    async def accept(self, a: Assignment) -> str: ...
    async def activity(self, case_id: str) -> str: ...
    async def document(self, case_id: str, name: str, content: bytes) -> str: ...
    async def close(self, case_id: str) -> str: ...
    async def error_reply(self, message_id: str, within: float) -> Refusal | None: ...
    async def invalid(self, case_id: str, within: float) -> Refusal | None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _assignment(msg: m.CaseAssigned) -> Assignment:
    return Assignment(msg.case_id, msg.assignment_id, msg.currency, msg.total)


def _refusal(msg: m.ErrorReply, via: str) -> Refusal:
    return Refusal(msg.code, msg.message, via, msg.in_reply_to)


class _Inbox:
    """Hub messages received, searchable while they keep arriving."""

    def __init__(self) -> None:
        self.items: list[Received] = []

    def add(self, item: Received) -> None:
        self.items.append(item)

    async def wait(self, match: Callable[[Received], bool], within: float) -> Received | None:
        end = time.monotonic() + within
        while True:
            found = next((r for r in self.items if match(r)), None)
            if found is not None or time.monotonic() >= end:
                return found
            await asyncio.sleep(0.05)

    async def assignment(self, case_id: str, within: float) -> Assignment | None:
        got = await self.wait(
            lambda r: isinstance(r.message, m.CaseAssigned) and r.message.case_id == case_id,
            within,
        )
        return _assignment(got.message) if got and isinstance(got.message, m.CaseAssigned) else None

    async def error_reply(self, message_id: str, within: float, via: str) -> Refusal | None:
        got = await self.wait(
            lambda r: isinstance(r.message, m.ErrorReply) and r.message.in_reply_to == message_id,
            within,
        )
        return _refusal(got.message, via) if got and isinstance(got.message, m.ErrorReply) else None


# --- SDK ---------------------------------------------------------------------------------


class SdkDriver:
    """The partner through ``PartnerClient``. Deliveries about the certification's case
    (or answering its reports) are acknowledged; any other is left unacknowledged, and
    the broker gives it back when the driver disconnects."""

    name = "sdk"

    def __init__(self, url: str, *, namespace: str = "", partner_id: str | None = None) -> None:
        self.client = PartnerClient(url, partner_id, namespace=namespace)
        self.partner_id = self.client.partner_id
        self.url = url
        self.namespace = namespace
        self.inbox = _Inbox()
        self._ours: set[str] = set()
        self._held: list[Delivery] = []
        self._task: asyncio.Task[None] | None = None

    def expect_case(self, case_id: str) -> None:
        self._ours.add(case_id)

    async def start(self) -> None:
        await self.client.connect()
        self._task = asyncio.create_task(self._receive())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.client.disconnect()

    async def _receive(self) -> None:
        async for delivery in self.client.deliveries():
            msg = delivery.message
            ours = delivery.case_id in self._ours or (
                isinstance(msg, m.ErrorReply) and msg.in_reply_to in self._ours
            )
            if not ours:
                self._held.append(delivery)
                continue
            self.inbox.add(Received(delivery.type, delivery.message_id, msg))
            await delivery.ack()

    def _mid(self) -> str:
        mid = f"cert-{uuid.uuid4().hex}"
        self._ours.add(mid)
        return mid

    async def assignment(self, case_id: str, within: float) -> Assignment | None:
        return await self.inbox.assignment(case_id, within)

    async def accept(self, a: Assignment) -> str:
        return await self.client.accept(a.case_id, a.assignment_id, message_id=self._mid())

    async def activity(self, case_id: str) -> str:
        return await self.client.report_activity(
            case_id, "call", "right_party_contact", "certification call", message_id=self._mid()
        )

    async def document(self, case_id: str, name: str, content: bytes) -> str:
        return await self.client.upload_document(
            case_id,
            f"CERT-{uuid.uuid4().hex[:12]}",
            "letter",
            name,
            content,
            "text/plain",
            message_id=self._mid(),
        )

    async def close(self, case_id: str) -> str:
        return await self.client.close(case_id, "paid", "certification", message_id=self._mid())

    async def error_reply(self, message_id: str, within: float) -> Refusal | None:
        return await self.inbox.error_reply(message_id, within, "error.reply")

    async def invalid(self, case_id: str, within: float) -> Refusal | None:
        """Publish, as the partner, a report the SDK would refuse to build."""
        mid = self._mid()
        body = json.dumps({"case_id": case_id, "kind": "telepathy"}).encode()
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(f"{self.namespace}partners.in", ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=mid,
                    type=m.CaseActivity.TYPE,
                    user_id=self.partner_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=f"{self.partner_id}.{m.CaseActivity.TYPE}",
            )
        finally:
            await connection.close()
        return await self.error_reply(mid, within)


# --- webhook ------------------------------------------------------------------------------


@dataclass
class _Hook:
    """What the partner's fake HTTP API saw."""

    posts: int = 0
    bad_signatures: int = 0
    attempts: dict[str, int] = field(default_factory=dict)


class WebhookDriver:
    """A partner with an HTTP API: serves ``POST /hook`` (the adapter delivers there) and
    sends signed callbacks to the adapter's ``callback_url`` (set before use).

    ``fail_first`` answers the first POSTs of each message id with 503, to see the
    adapter retry.
    """

    name = "webhook"

    def __init__(
        self,
        partner_id: str,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_first: int = 0,
    ) -> None:
        self.partner_id = partner_id
        self.secret = secret
        self.fail_first = fail_first
        self.callback_url = ""
        self.inbox = _Inbox()
        self.seen = _Hook()
        self.server = EmbeddedServer(
            Starlette(routes=[Route("/hook", self._hook, methods=["POST"])]), host, port
        )
        self._http: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def expect_case(self, case_id: str) -> None:
        pass

    async def start(self) -> None:
        await self.server.start()
        self._http = httpx.AsyncClient(timeout=30)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self.server.stop()

    async def _hook(self, request: Request) -> JSONResponse:
        raw = await request.body()
        self.seen.posts += 1
        try:
            signing.verify([self.secret], request.headers, raw, now=time.time())
        except signing.SignatureError as e:
            self.seen.bad_signatures += 1
            return JSONResponse({"error": e.code}, status_code=401)
        try:
            doc = json.loads(raw)
            mtype, mid = str(doc["type"]), str(doc["message_id"])
            message = parse_hub_message(mtype, json.dumps(doc["body"]).encode())
        except (ValueError, KeyError, TypeError, InvalidMessage) as e:
            return JSONResponse({"error": "invalid", "message": str(e)}, status_code=400)
        if request.headers.get(signing.HEADER_MESSAGE_ID) != mid:
            return JSONResponse({"error": "message id header"}, status_code=400)
        attempt = self.seen.attempts.get(mid, 0) + 1
        self.seen.attempts[mid] = attempt
        if attempt <= self.fail_first:
            return JSONResponse({"error": "try again"}, status_code=503)
        if all(r.message_id != mid for r in self.inbox.items):
            self.inbox.add(Received(mtype, mid, message))
        return JSONResponse({"status": "ok"})

    async def post(
        self, message_type: str, body: Mapping[str, Any], *, message_id: str | None = None
    ) -> httpx.Response:
        """Send one signed callback to the adapter."""
        if self._http is None or not self.callback_url:
            raise RuntimeError("start the driver and set callback_url first")
        mid = message_id or f"cert-{uuid.uuid4().hex}"
        payload = json.dumps({"type": message_type, "message_id": mid, "body": body}).encode()
        headers = signing.signed_headers(
            self.secret,
            payload,
            timestamp=int(time.time()),
            message_id=mid,
            message_type=message_type,
        )
        return await self._http.post(self.callback_url, content=payload, headers=headers)

    async def _report(self, message_type: str, body: dict[str, Any]) -> str:
        body.setdefault("occurred_at", _now().isoformat())
        response = await self.post(message_type, body)
        if response.status_code != 202:
            raise RuntimeError(
                f"the adapter answered {message_type} with HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        return str(response.json()["message_id"])

    async def assignment(self, case_id: str, within: float) -> Assignment | None:
        return await self.inbox.assignment(case_id, within)

    async def accept(self, a: Assignment) -> str:
        return await self._report(
            m.CaseAccepted.TYPE, {"case_id": a.case_id, "assignment_id": a.assignment_id}
        )

    async def activity(self, case_id: str) -> str:
        return await self._report(
            m.CaseActivity.TYPE,
            {"case_id": case_id, "kind": "call", "outcome": "right_party_contact"},
        )

    async def document(self, case_id: str, name: str, content: bytes) -> str:
        return await self._report(
            m.DocumentAdded.TYPE,
            {
                "case_id": case_id,
                "document_id": f"CERT-{uuid.uuid4().hex[:12]}",
                "kind": "letter",
                "filename": name,
                "content_type": "text/plain",
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "content_base64": base64.b64encode(content).decode("ascii"),
            },
        )

    async def close(self, case_id: str) -> str:
        return await self._report(m.CaseClosed.TYPE, {"case_id": case_id, "close_code": "paid"})

    async def error_reply(self, message_id: str, within: float) -> Refusal | None:
        return await self.inbox.error_reply(message_id, within, "error.reply POST")

    async def invalid(self, case_id: str, within: float) -> Refusal | None:
        """A payment with a float amount and no currency: the adapter must answer 400."""
        mid = f"cert-{uuid.uuid4().hex}"
        response = await self.post(
            m.CasePayment.TYPE,
            {"case_id": case_id, "amount": 12.5, "occurred_at": _now().isoformat()},
            message_id=mid,
        )
        if response.status_code != 400:
            return Refusal(f"HTTP {response.status_code}", response.text[:300], "HTTP answer", mid)
        doc = response.json()
        paths = ", ".join(e.get("path", "?") for e in doc.get("errors", []))
        return Refusal(str(doc.get("error")), f"{doc.get('message')} ({paths})", "HTTP 400", mid)


# --- files --------------------------------------------------------------------------------

_RETURN_COLUMNS = ("case_id", "status_code", "date", "amount", "currency", "note", "document")


class FileDriver:
    """A partner exchanging files through the file adapter's drop folder."""

    name = "files"

    def __init__(self, partner_id: str, drop: Path | str, mapping: StatusMapping) -> None:
        self.partner_id = partner_id
        self.drop = DropFolder(Path(drop))
        self.mapping = mapping
        self.run = uuid.uuid4().hex[:8]
        self._seq = 0
        self.placements: list[dict[str, str]] = []
        self.notices: list[dict[str, str]] = []
        self._read: set[str] = set()

    def expect_case(self, case_id: str) -> None:
        pass

    async def start(self) -> None:
        await asyncio.to_thread(self.drop.create)

    async def stop(self) -> None:
        pass

    # reading the adapter's files

    def _scan(self) -> None:
        for path in sorted(self.drop.outgoing.glob("*.csv")):
            if path.name in self._read or path.name.startswith("."):
                continue
            self._read.add(path.name)
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
            if path.name.startswith("placements-"):
                self.placements.extend(rows)
            elif path.name.startswith("notices-"):
                self.notices.extend(rows)

    async def _scanning(self, find: Callable[[], T | None], within: float) -> T | None:
        end = time.monotonic() + within
        while True:
            await asyncio.to_thread(self._scan)
            found = find()
            if found is not None or time.monotonic() >= end:
                return found
            await asyncio.sleep(0.1)

    async def assignment(self, case_id: str, within: float) -> Assignment | None:
        def find() -> Assignment | None:
            row = next((r for r in self.placements if r["case_id"] == case_id), None)
            if row is None:
                return None
            return Assignment(case_id, row["assignment_id"], row["currency"], row["total"])

        return await self._scanning(find, within)

    async def error_reply(self, message_id: str, within: float) -> Refusal | None:
        def find() -> Refusal | None:
            for row in self.notices:
                if row.get("type") == m.ErrorReply.TYPE and row.get("reference") == message_id:
                    return Refusal(row["code"], row["detail"], "notice file", message_id)
            return None

        return await self._scanning(find, within)

    # writing return files

    def _code(self, message_type: str, **fixed: str) -> str:
        code = self.mapping.code_for(message_type, **fixed) or self.mapping.code_for(message_type)
        if code is None:
            raise LookupError(f"the mapping {self.mapping.source} has no code for {message_type}")
        return code

    def _write(self, values: Mapping[str, str]) -> tuple[str, str]:
        """Write a one-row return file; (file name, the row's message id)."""
        self._seq += 1
        name = f"cert-{self.run}-{self._seq:03d}.csv"
        cells = [values.get(c, "") for c in _RETURN_COLUMNS]
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.mapping.delimiter, lineterminator="\r\n")
        writer.writerow(_RETURN_COLUMNS)
        writer.writerow(cells)
        self.drop.incoming.mkdir(parents=True, exist_ok=True)
        tmp = self.drop.incoming / f".{name}.tmp"
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(tmp, self.drop.incoming / name)
        return name, row_message_id(self.partner_id, name, 2, cells)

    async def _row(self, case_id: str, code: str, **values: str) -> str:
        row = {"case_id": case_id, "status_code": code, "date": _now().isoformat(), **values}
        _, mid = await asyncio.to_thread(self._write, row)
        return mid

    async def accept(self, a: Assignment) -> str:
        return await self._row(a.case_id, self._code(m.CaseAccepted.TYPE))

    async def activity(self, case_id: str) -> str:
        code = self._code(m.CaseActivity.TYPE, kind="call", outcome="right_party_contact")
        return await self._row(case_id, code, note="certification call")

    async def document(self, case_id: str, name: str, content: bytes) -> str:
        code = self._code(m.DocumentAdded.TYPE)
        await asyncio.to_thread(self.drop.documents.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((self.drop.documents / name).write_bytes, content)
        return await self._row(case_id, code, document=name)

    async def close(self, case_id: str) -> str:
        return await self._row(case_id, self._code(m.CaseClosed.TYPE, close_code="paid"))

    async def invalid(self, case_id: str, within: float) -> Refusal | None:
        """A row whose date is not a date: the adapter must quarantine it."""
        code = self._code(m.CaseAccepted.TYPE)
        row = {"case_id": case_id, "status_code": code, "date": "last tuesday"}
        name, mid = await asyncio.to_thread(self._write, row)
        target = self.drop.quarantine / f"{Path(name).stem}.quarantine.csv"

        def find() -> Refusal | None:
            if not target.is_file():
                return None
            for q in csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))):
                return Refusal(q["reason_code"], q["reason"], "quarantine", mid)
            return None

        end = time.monotonic() + within
        while True:
            found = await asyncio.to_thread(find)
            if found is not None or time.monotonic() >= end:
                return found
            await asyncio.sleep(0.1)
