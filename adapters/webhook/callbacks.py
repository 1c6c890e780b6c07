"""The partner's callbacks: ``POST /callbacks``, verified, validated, forwarded to the hub.

A callback is a signed request (see ``signing``) whose body is a partner report::

    {"type": "case.accepted", "message_id": "acc-4711", "body": {"case_id": "C-...", ...}}

``body`` is the report exactly as the AMQP contract v1 describes it (``schemas/``). The
report goes to the hub under the partner's own AMQP user with the SAME ``message_id``,
so a retried callback is applied once. Answers (JSON):

=====  =========================================================================
202    ``{"status": "accepted", "message_id": ...}``: the hub's broker has it
400    ``{"error": "invalid_json" | "invalid_envelope" | "unknown_type" |
       "invalid_message", "message": ..., "errors": [{"path", "rule", "message"}]}``
401    ``{"error": "missing_signature" | "malformed_signature" | "stale_timestamp" |
       "bad_signature", ...}``: timestamps older than 5 min or over 1 min ahead fail
409    ``{"error": "replay", "message_id": ...}``: that message id (or that very
       signature) was accepted within the window; a retry of an accepted callback
       may take 409 as success
413    the body is larger than ``max_body_bytes``
503    ``{"error": "hub_unavailable"}`` with ``Retry-After``: retry, same message id
=====  =========================================================================

Whether the hub then applies the report is answered asynchronously: a refusal comes
back to the partner's URL as an ``error.reply`` POST (``in_reply_to`` = the message id).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.webhook import signing
from partner_sdk import messages as m
from partner_sdk.client import REPORT_TYPES, build
from partner_sdk.errors import InvalidMessage, PartnerSDKError

__all__ = [
    "MAX_BODY_BYTES",
    "Callback",
    "CallbackRejected",
    "Forwarder",
    "create_callback_app",
    "parse_callback",
]

log = logging.getLogger(__name__)

#: A document of 20 MiB is about 27 MiB of base64, plus the envelope.
MAX_BODY_BYTES = 28 * 1024 * 1024
_MESSAGE_ID = re.compile(r"^[\x21-\x7e]{1,200}\Z")
_ENVELOPE_KEYS = frozenset({"type", "message_id", "body"})


class Forwarder(Protocol):
    """What forwards a report to the hub: ``PartnerClient.send`` (or a test double)."""

    async def send(self, report: m.Message, *, message_id: str | None = None) -> str: ...


@dataclass(frozen=True)
class Callback:
    type: str
    message_id: str
    report: m.Message

    @property
    def case_id(self) -> str | None:
        return getattr(self.report, "case_id", None)


class CallbackRejected(Exception):
    """A callback body that cannot be forwarded (HTTP 400); ``errors`` say where and why."""

    def __init__(self, code: str, message: str, errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.errors: list[dict[str, str]] = [dict(e) for e in errors]


def _detail(path: str, rule: str, message: str) -> dict[str, str]:
    return {"path": path, "rule": rule, "message": message}


def parse_callback(raw: bytes, *, header_message_id: str | None = None) -> Callback:
    """The report of a callback body; ``CallbackRejected`` saying precisely what is wrong."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CallbackRejected("invalid_json", f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CallbackRejected(
            "invalid_envelope",
            'the body must be an object {"type", "message_id", "body"}',
            [_detail("", "type", "expected an object")],
        )
    errors = [
        _detail(k, "required", f"{k} is required") for k in sorted(_ENVELOPE_KEYS - doc.keys())
    ]
    errors += [
        _detail(k, "additional_properties", f"unknown field {k!r}")
        for k in sorted(doc.keys() - _ENVELOPE_KEYS)
    ]
    mtype, mid, body = doc.get("type"), doc.get("message_id"), doc.get("body")
    if "type" in doc and not isinstance(mtype, str):
        errors.append(_detail("type", "type", "type must be a string"))
    if "message_id" in doc and not (isinstance(mid, str) and _MESSAGE_ID.match(mid)):
        errors.append(
            _detail(
                "message_id",
                "pattern",
                "message_id must be 1 to 200 printable ASCII characters without spaces",
            )
        )
    if "body" in doc and not isinstance(body, dict):
        errors.append(_detail("body", "type", "body must be an object"))
    if errors:
        raise CallbackRejected("invalid_envelope", "the envelope is not valid", errors)
    assert isinstance(mtype, str) and isinstance(mid, str) and isinstance(body, dict)
    if header_message_id is not None and header_message_id != mid:
        raise CallbackRejected(
            "invalid_envelope",
            f"header {signing.HEADER_MESSAGE_ID} {header_message_id[:200]!r} differs from "
            f"the body's message_id {mid!r}",
            [_detail("message_id", "const", "must equal the X-OneWindow-Message-Id header")],
        )
    model = REPORT_TYPES.get(mtype)
    if model is None:
        raise CallbackRejected(
            "unknown_type",
            f"{mtype[:64]!r} is not a partner report; expected one of "
            + ", ".join(sorted(REPORT_TYPES)),
            [_detail("type", "enum", "not a partner report type")],
        )
    try:
        report = build(model, body)
    except InvalidMessage as e:
        raise CallbackRejected(
            "invalid_message",
            f"body does not match {mtype}.v1",
            [
                _detail(
                    ".".join(["body", *(str(p) for p in err.get("loc", ()))]),
                    str(err.get("type", "invalid")),
                    str(err.get("msg", "")),
                )
                for err in e.errors
            ]
            or [_detail("body", "invalid", str(e))],
        ) from None
    return Callback(mtype, mid, report)


def _problem(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` bytes (read no further than that)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_callback_app(
    forwarder: Forwarder,
    secrets: Sequence[bytes | str],
    *,
    partner_id: str = "",
    guard: signing.ReplayGuard | None = None,
    clock: Callable[[], float] = time.time,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_age: float = signing.MAX_AGE,
    max_future: float = signing.MAX_FUTURE,
    path: str = "/callbacks",
) -> Starlette:
    """The ASGI app serving ``POST <path>`` (and ``GET /healthz``)."""
    if not secrets:
        raise ValueError("the callback endpoint needs the partner's shared secret")
    replay = guard or signing.ReplayGuard(window=max_age + max_future)

    async def callbacks(request: Request) -> JSONResponse:
        raw = await _read(request, max_body_bytes)
        if raw is None:
            return _problem(413, "too_large", f"the body exceeds {max_body_bytes} bytes")
        headers: Mapping[str, str] = request.headers
        try:
            verified = signing.verify(
                secrets, headers, raw, now=clock(), max_age=max_age, max_future=max_future
            )
        except signing.SignatureError as e:
            log.warning("partner %s callback refused: %s: %s", partner_id, e.code, e)
            return _problem(401, e.code, str(e))
        try:
            callback = parse_callback(raw, header_message_id=headers.get(signing.HEADER_MESSAGE_ID))
            header_type = headers.get(signing.HEADER_TYPE)
            if header_type is not None and header_type != callback.type:
                raise CallbackRejected(
                    "invalid_envelope",
                    f"header {signing.HEADER_TYPE} {header_type[:64]!r} differs from the "
                    f"body's type {callback.type!r}",
                    [_detail("type", "const", "must equal the X-OneWindow-Type header")],
                )
        except CallbackRejected as e:
            log.info("partner %s callback refused: %s", partner_id, e)
            return _problem(400, e.code, e.message, errors=e.errors)
        mid = callback.message_id
        try:
            replay.reserve(mid, verified.signature, now=clock())
        except signing.Replay as e:
            return _problem(409, "replay", str(e), message_id=mid)
        try:
            await forwarder.send(callback.report, message_id=mid)
        except PartnerSDKError as e:
            replay.release(mid, verified.signature)
            log.error(
                "partner %s: %s %s (case %s) not forwarded to the hub: %s",
                partner_id,
                callback.type,
                mid,
                callback.case_id,
                e,
            )
            response = _problem(503, "hub_unavailable", "the hub could not be reached; retry")
            response.headers["Retry-After"] = "5"
            return response
        except BaseException:
            replay.release(mid, verified.signature)
            raise
        log.info(
            "partner %s: %s %s (case %s) forwarded",
            partner_id,
            callback.type,
            mid,
            callback.case_id,
        )
        return JSONResponse({"status": "accepted", "message_id": mid}, status_code=202)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "partner_id": partner_id})

    return Starlette(
        routes=[
            Route(path, callbacks, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
