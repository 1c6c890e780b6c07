"""Partner updates: reports from partners, authorised, validated, applied.

Consumer of ``hub.partner-updates``. The sender is the broker-validated AMQP ``user_id``
(a partner's own user); only the partner a case is assigned to may report on it. A
refused report (invalid, unknown case, foreign case, illegal transition) gets an
``error.reply`` to its sender, is recorded in ``rejections``, and changes nothing. A
repeated ``message_id`` changes nothing. A batch is one transaction, like intake.

A ``document.requested`` is a read: refused like a report, or answered with the
document's content, recorded in ``downloads``. The answer is a transient reply (see
``OutMessage``), too large for the outbox; the request is not entered in the inbox, so a
request redelivered before its answer was confirmed is answered again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hub import contract
from hub.domain import lifecycle
from hub.domain.errors import DomainError, UnknownCase
from hub.domain.model import CaseState, Event, EventKind, Lifecycle, fold
from partner_sdk import messages as m
from partner_sdk.messages import ErrorDetail

from . import outgoing
from .intake import message_id_of
from .placement import place
from .ports import Changeset, Clock, Incoming, OutMessage, PartnerDirectory, Store, Tx, utcnow

log = logging.getLogger(__name__)

REPORT_TYPES = frozenset(
    t.TYPE
    for t in (
        m.CaseAccepted,
        m.CaseDeclined,
        m.CaseActivity,
        m.CasePromise,
        m.CasePayment,
        m.SettlementProposed,
        m.CaseDispute,
        m.CaseLegalStep,
        m.CaseClosed,
        m.DocumentAdded,
        m.DocumentRequested,
    )
)


class DocumentStore(Protocol):
    async def put(
        self, file_id: str, data: bytes, *, filename: str, metadata: Mapping[str, Any]
    ) -> None: ...

    async def info(self, file_id: str) -> Mapping[str, Any] | None: ...

    async def get(self, file_id: str) -> tuple[Mapping[str, Any], bytes] | None: ...


LegalSteps = Callable[[str], Mapping[str, Any] | None]


def _no_catalog(country: str) -> Mapping[str, Any] | None:
    return None


@dataclass
class _Parsed:
    incoming: Incoming
    message_id: str
    sender: str | None
    type: str
    model: m.Message | None
    code: str
    reason: str
    errors: list[ErrorDetail]
    content: bytes | None = None

    @property
    def case_id(self) -> str | None:
        return getattr(self.model, "case_id", None)

    @property
    def key(self) -> str:
        """Inbox key: message ids are unique per sender, not across partners, so that
        one partner cannot shadow another's reports by reusing its ids."""
        return f"partner:{self.sender or '-'}:{self.message_id}"


class UpdatesService:
    def __init__(
        self,
        store: Store,
        partners: PartnerDirectory,
        documents: DocumentStore,
        *,
        clock: Clock = utcnow,
        legal_steps: LegalSteps = _no_catalog,
        max_body_bytes: int = 28 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.partners = partners
        self.documents = documents
        self.clock = clock
        self.legal_steps = legal_steps
        self.max_body_bytes = max_body_bytes

    def parse(self, msg: Incoming) -> _Parsed:
        mid = message_id_of(msg)
        prefix, _, key_type = msg.routing_key.partition(".")
        mtype = msg.type or key_type
        sender = msg.user_id or None

        def refuse(code: str, reason: str, errors: list[ErrorDetail] | None = None) -> _Parsed:
            who = sender or prefix or None
            return _Parsed(msg, mid, who, mtype, None, code, reason, errors or [])

        if sender is None:
            return refuse(
                "invalid_message",
                "the message carries no user_id: publish with user_id set to your partner id",
            )
        if prefix != sender:
            return refuse(
                "not_assignee",
                f"routing key {msg.routing_key[:100]!r} does not "
                f"start with your partner id {sender!r}",
            )
        if len(msg.body) > self.max_body_bytes:
            return refuse(
                "invalid_message", f"body of {len(msg.body)} bytes exceeds {self.max_body_bytes}"
            )
        if msg.content_type not in (None, "", "application/json"):
            return refuse(
                "invalid_message", f"content type {msg.content_type!r} is not application/json"
            )
        if mtype not in REPORT_TYPES:
            return refuse(
                "unknown_type",
                f"message type {mtype[:64]!r} is not one a partner "
                "sends; expected one of " + ", ".join(sorted(REPORT_TYPES)),
            )
        try:
            model = contract.validate(mtype, msg.body)
        except contract.ContractError as e:
            return refuse(
                "invalid_message", f"the message does not match schema {mtype}.v1", e.details
            )
        content = None
        if isinstance(model, m.DocumentAdded):
            problem, content = _document_bytes(model)
            if problem:
                return refuse("invalid_document", problem)
        return _Parsed(msg, mid, sender, mtype, model, "", "", [], content)

    async def handle(self, batch: Sequence[Incoming]) -> list[OutMessage]:
        parsed = [self.parse(msg) for msg in batch]
        profiles = await self.partners.profiles()
        open_cases = dict(self.partners.open_cases())
        documents = await self._requested_documents(parsed)
        deltas: dict[str, int] = {}

        async def work(tx: Tx) -> Changeset:
            deltas.clear()
            run = _UpdatesRun(self, tx, self.clock(), profiles, open_cases, deltas, documents)
            return await run.run(parsed)

        changes = await self.store.transact(work)
        for partner_id, n in deltas.items():
            self.partners.note_assigned(partner_id, n)
        return changes.outbox + changes.replies

    async def _requested_documents(self, parsed: Sequence[_Parsed]) -> dict[str, Mapping[str, Any]]:
        """The descriptions of the documents requested, read before the transaction (a
        stored document never changes); their content is read only when it is sent."""
        found: dict[str, Mapping[str, Any]] = {}
        for p in parsed:
            if isinstance(p.model, m.DocumentRequested):
                file_id = document_file_id(p.model.case_id, p.model.document_id)
                if file_id not in found and (info := await self.documents.info(file_id)):
                    found[file_id] = info
        return found

    def content_loader(
        self, file_id: str, *, in_reply_to: str, case_id: str
    ) -> Callable[[], Awaitable[bytes]]:
        """What builds the body of a ``document.content`` when it is sent."""

        async def load() -> bytes:
            found = await self.documents.get(file_id)
            if found is None:  # documents are never deleted: the store lost it
                raise LookupError(f"document {file_id} is described but cannot be read")
            info, data = found
            return await asyncio.to_thread(_content_body, info, data, in_reply_to, case_id)

        return load


def _document_bytes(doc: m.DocumentAdded) -> tuple[str | None, bytes | None]:
    try:
        data = base64.b64decode(doc.content_base64, validate=True)
    except (binascii.Error, ValueError):
        return "content_base64 is not valid base64", None
    if len(data) != doc.size:
        return f"size says {doc.size} bytes but the content has {len(data)}", None
    digest = hashlib.sha256(data).hexdigest()
    if digest != doc.sha256:
        return f"sha256 of the content is {digest}, not {doc.sha256}", None
    return None, data


def document_file_id(case_id: str, document_id: str) -> str:
    return f"{case_id}/{document_id}"


def _content_body(info: Mapping[str, Any], data: bytes, in_reply_to: str, case_id: str) -> bytes:
    """The ``document.content`` body (run in a thread: encoding 20 MiB takes a while)."""
    meta = info["metadata"]
    return m.DocumentContent(
        in_reply_to=in_reply_to,
        case_id=case_id,
        document_id=meta["document_id"],
        kind=m.DocumentKind(meta["kind"]),
        filename=info["filename"],
        content_type=meta["content_type"],
        size=meta["size"],
        sha256=meta["sha256"],
        content_base64=base64.b64encode(data).decode("ascii"),
    ).to_json()


class _UpdatesRun:
    def __init__(
        self,
        service: UpdatesService,
        tx: Tx,
        now: dt.datetime,
        profiles: Sequence[Any],
        open_cases: Mapping[str, int],
        deltas: dict[str, int],
        documents: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.s = service
        self.tx = tx
        self.now = now
        self.profiles = profiles
        self.open_cases = open_cases
        self.deltas = deltas
        self.cs = Changeset()
        self.cases: dict[str, CaseState] = {}
        self.loaded: dict[str, int] = {}
        self.touched: dict[str, None] = {}
        #: descriptions of the documents requested, and of those stored by this run
        self.documents = dict(documents)

    async def run(self, parsed: Sequence[_Parsed]) -> Changeset:
        seen = await self.tx.seen(p.key for p in parsed)
        fresh = []
        for p in parsed:
            if p.key not in seen:
                seen.add(p.key)
                fresh.append(p)
        ids = {cid for p in fresh if (cid := p.case_id)}
        self.cases = dict(await self.tx.cases(ids))
        self.loaded = {cid: st.version for cid, st in self.cases.items()}
        for p in fresh:
            await self._one(p)
        for cid in self.touched:
            self.cs.cases.append((self.cases[cid], self.loaded.get(cid, 0)))
        return self.cs

    async def _one(self, p: _Parsed) -> None:
        if p.model is None:
            self._refuse(p, p.code, p.reason, p.errors)
            return
        assert p.sender is not None
        case_id = p.case_id
        assert case_id is not None
        state = self.cases.get(case_id)
        try:
            if state is None:
                raise UnknownCase(f"there is no case {case_id}", case_id=case_id)
            if isinstance(p.model, m.DocumentRequested):
                self._serve(p, state, p.model)
                return
            events = lifecycle.report(
                state,
                p.sender,
                p.model,
                message_id=p.message_id,
                now=self.now,
                legal_steps=self.s.legal_steps(state.country),
            )
        except DomainError as e:
            self._refuse(p, e.code, e.message, [])
            return
        if isinstance(p.model, m.DocumentAdded) and p.content is not None:
            file_id = document_file_id(case_id, p.model.document_id)
            metadata = {
                "case_id": case_id,
                "document_id": p.model.document_id,
                "kind": p.model.kind.value,
                "content_type": p.model.content_type,
                "uploader": p.sender,
                "size": p.model.size,
                "sha256": p.model.sha256,
                "partner_id": p.sender,
            }
            await self.s.documents.put(
                file_id, p.content, filename=p.model.filename, metadata=metadata
            )
            # a request later in this batch finds it (a stored document never changes)
            self.documents.setdefault(
                file_id, {"_id": file_id, "filename": p.model.filename, "metadata": metadata}
            )
        self._apply(case_id, state, events)
        self._inbox(p, "applied", case_id)
        after = self.cases[case_id]
        if after.lifecycle is Lifecycle.DECLINED:
            self.deltas[p.sender] = self.deltas.get(p.sender, 0) - 1
            counts = {
                k: self.open_cases.get(k, 0) + self.deltas.get(k, 0)
                for k in self.open_cases.keys() | self.deltas.keys()
            }
            placed = place(after, self.profiles, counts, self.now)
            if placed.events:
                self._apply(case_id, after, placed.events)
                self.cs.outbox.extend(placed.outbox)
                if placed.state.partner_id:
                    pid = placed.state.partner_id
                    self.deltas[pid] = self.deltas.get(pid, 0) + 1
        elif any(e.kind is EventKind.CLOSED for e in events):
            self.deltas[p.sender] = self.deltas.get(p.sender, 0) - 1

    def _serve(self, p: _Parsed, state: CaseState, request: m.DocumentRequested) -> None:
        """Answer a download, or refuse it (``DomainError``). It changes no case and is
        not entered in the inbox: a redelivered request is answered again."""
        assert p.sender is not None
        file_id = document_file_id(state.case_id, request.document_id)
        document = self.documents.get(file_id)
        lifecycle.check_download(state, p.sender, request.document_id, document)
        assert document is not None
        meta = document["metadata"]
        log.info(
            "partner %s downloads document %s of case %s (request %s)",
            p.sender,
            request.document_id,
            state.case_id,
            p.message_id,
        )
        self.cs.downloads.append(
            {
                "_id": p.key,
                "message_id": p.message_id,
                "partner_id": p.sender,
                "case_id": state.case_id,
                "document_id": request.document_id,
                "size": meta["size"],
                "sha256": meta["sha256"],
                "requested_at": request.occurred_at,
                "served_at": self.now,
            }
        )
        load = self.s.content_loader(file_id, in_reply_to=p.message_id, case_id=state.case_id)
        self.cs.replies.append(
            outgoing.document_content(
                p.sender,
                in_reply_to=p.message_id,
                case_id=state.case_id,
                load=load,
                now=self.now,
            )
        )

    def _apply(self, case_id: str, state: CaseState, events: list[Event]) -> None:
        new = fold(events, state)
        assert new is not None
        self.cases[case_id] = new
        self.cs.events.extend(events)
        self.touched[case_id] = None

    def _inbox(self, p: _Parsed, status: str, case_id: str | None) -> None:
        self.cs.inbox.append(
            {
                "_id": p.key,
                "message_id": p.message_id,
                "queue": "hub.partner-updates",
                "type": p.type[:64],
                "sender": p.sender,
                "status": status,
                "case_id": case_id,
                "received_at": self.now,
            }
        )

    def _refuse(self, p: _Parsed, code: str, reason: str, errors: list[ErrorDetail]) -> None:
        case_id = p.case_id
        log.warning(
            "refused %s %s from partner %s on case %s: %s",
            p.type[:64],
            p.message_id,
            p.sender,
            case_id,
            code,
        )
        self._inbox(p, "refused", case_id)
        self.cs.rejections.append(
            {
                "_id": p.key,
                "source": "partner",
                "sender": p.sender,
                "message_id": p.message_id,
                "type": p.type[:64],
                "case_id": case_id,
                "code": code,
                "reason": reason,
                "errors": [e.model_dump() for e in errors],
                "received_at": self.now,
            }
        )
        if p.sender:
            self.cs.outbox.append(
                outgoing.error_reply(
                    p.sender,
                    in_reply_to=p.message_id,
                    in_reply_to_type=p.type,
                    case_id=case_id,
                    code=code,
                    message=reason,
                    errors=errors,
                    now=self.now,
                )
            )
