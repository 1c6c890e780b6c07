"""Signatures of webhook requests, both ways: HMAC-SHA256 over ``"<timestamp>.<body>"``.

Every request (the hub's deliveries to the partner, the partner's callbacks to the hub)
carries::

    X-OneWindow-Timestamp: 1767225600                  # unix seconds, when it was signed
    X-OneWindow-Signature: v1=<hex HMAC-SHA256(secret, b"1767225600." + body)>
    X-OneWindow-Message-Id: <the message id>
    X-OneWindow-Type: <the message type>

A signature header may hold several ``v1=`` values separated by commas, and a verifier
may hold several secrets: either side can rotate its secret without a flag day. The
check is constant time (``hmac.compare_digest``). A timestamp older than ``max_age``
(5 min) or more than ``max_future`` (1 min) ahead is refused, and ``ReplayGuard``
remembers accepted message ids and signatures for as long as their timestamp would pass,
so a captured request cannot be played again. Pure: time is passed in.

SignatureError            the request is not authentic (HTTP 401)
├── MissingSignature      no timestamp or no signature header
├── MalformedSignature    a header is not in the format above
├── StaleTimestamp        signed too long ago, or in the future
└── BadSignature          no signature matches any secret
Replay                    an accepted message id or signature came again (HTTP 409)
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER_MESSAGE_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "HEADER_TYPE",
    "MAX_AGE",
    "MAX_FUTURE",
    "BadSignature",
    "MalformedSignature",
    "MissingSignature",
    "Replay",
    "ReplayGuard",
    "SignatureError",
    "StaleTimestamp",
    "Verified",
    "compute_signature",
    "sign",
    "signed_headers",
    "verify",
]

HEADER_TIMESTAMP: Final = "X-OneWindow-Timestamp"
HEADER_SIGNATURE: Final = "X-OneWindow-Signature"
HEADER_MESSAGE_ID: Final = "X-OneWindow-Message-Id"
HEADER_TYPE: Final = "X-OneWindow-Type"

SCHEME: Final = "v1"
#: Seconds a signed request stays valid...
MAX_AGE: Final = 300
#: ...and how far ahead of our clock its timestamp may be (clock skew).
MAX_FUTURE: Final = 60

_TIMESTAMP = re.compile(r"^[0-9]{1,12}\Z")
_HEX = re.compile(r"^[0-9a-f]{64}\Z")


class SignatureError(Exception):
    """The request is not authentic; answer 401. ``code`` is a stable machine word."""

    code = "bad_signature"


class MissingSignature(SignatureError):
    code = "missing_signature"


class MalformedSignature(SignatureError):
    code = "malformed_signature"


class StaleTimestamp(SignatureError):
    code = "stale_timestamp"


class BadSignature(SignatureError):
    code = "bad_signature"


class Replay(Exception):
    """A message id or signature accepted within the window came again; answer 409."""

    def __init__(self, message: str, *, message_id: str) -> None:
        super().__init__(message)
        self.message_id = message_id


def _key(secret: bytes | str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def compute_signature(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    return hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """The ``X-OneWindow-Signature`` value: ``v1=<hex>``."""
    return f"{SCHEME}={compute_signature(secret, timestamp, body)}"


def signed_headers(
    secret: bytes | str, body: bytes, *, timestamp: int, message_id: str, message_type: str
) -> dict[str, str]:
    """Every header of a signed request, ``Content-Type`` included."""
    return {
        "Content-Type": "application/json",
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, timestamp, body),
        HEADER_MESSAGE_ID: message_id,
        HEADER_TYPE: message_type,
    }


@dataclass(frozen=True)
class Verified:
    """An authentic request: its timestamp and the signature that matched."""

    timestamp: int
    signature: str


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; HTTP headers are not
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def verify(
    secrets: Sequence[bytes | str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    max_age: float = MAX_AGE,
    max_future: float = MAX_FUTURE,
) -> Verified:
    """Check a request's timestamp and signature against every secret; raise a
    ``SignatureError`` unless one matches."""
    if not secrets:
        raise ValueError("verify needs at least one secret")
    raw_ts = _header(headers, HEADER_TIMESTAMP)
    raw_sig = _header(headers, HEADER_SIGNATURE)
    if not raw_ts or not raw_sig:
        missing = [h for h, v in ((HEADER_TIMESTAMP, raw_ts), (HEADER_SIGNATURE, raw_sig)) if not v]
        raise MissingSignature(f"missing header(s): {', '.join(missing)}")
    raw_ts = raw_ts.strip()
    if not _TIMESTAMP.match(raw_ts):
        raise MalformedSignature(f"{HEADER_TIMESTAMP} must be unix seconds, not {raw_ts[:40]!r}")
    timestamp = int(raw_ts)
    if timestamp < now - max_age:
        raise StaleTimestamp(
            f"signed {int(now - timestamp)} s ago; requests are valid for {int(max_age)} s"
        )
    if timestamp > now + max_future:
        raise StaleTimestamp(
            f"signed {int(timestamp - now)} s in the future; at most {int(max_future)} s of "
            "clock skew is allowed"
        )
    candidates = _candidates(raw_sig)
    expected = [compute_signature(s, timestamp, body) for s in secrets]
    # Compare every pair, so the time taken does not depend on which one matched.
    match: str | None = None
    for candidate in candidates:
        for digest in expected:
            if hmac.compare_digest(candidate, digest):
                match = candidate
    if match is None:
        raise BadSignature("the signature does not match the body and timestamp")
    return Verified(timestamp, match)


def _candidates(header: str) -> list[str]:
    """The ``v1`` hex digests of a signature header (other schemes are ignored)."""
    found: list[str] = []
    for part in header.split(","):
        scheme, sep, value = part.strip().partition("=")
        if not sep:
            raise MalformedSignature(f"{HEADER_SIGNATURE} must be '{SCHEME}=<hex>'")
        value = value.strip().lower()
        if scheme.strip() == SCHEME:
            if not _HEX.match(value):
                raise MalformedSignature(f"a {SCHEME} signature is 64 hex digits")
            found.append(value)
    if not found:
        raise MalformedSignature(f"{HEADER_SIGNATURE} holds no '{SCHEME}=' signature")
    return found


class ReplayGuard:
    """Message ids and signatures accepted within the window (``max_age + max_future``).

    ``reserve`` claims both before the request is handled (a concurrent copy gets
    ``Replay``); ``release`` gives them back when handling failed, so that the sender's
    retry is accepted; once handled they stay until the window has passed, after which
    the timestamp check refuses the same signed request anyway. Bounded: beyond
    ``max_entries`` the oldest are forgotten early.
    """

    def __init__(
        self,
        *,
        window: float = MAX_AGE + MAX_FUTURE,
        max_entries: int = 100_000,
    ) -> None:
        if window <= 0 or max_entries < 1:
            raise ValueError("window and max_entries must be positive")
        self.window = window
        self.max_entries = max_entries
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float) -> None:
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) <= self.max_entries:
                break
            del self._seen[key]

    def _keys(self, message_id: str, signature: str | None) -> list[str]:
        keys = [f"id:{message_id}"]
        if signature:
            keys.append(f"sig:{signature}")
        return keys

    def reserve(self, message_id: str, signature: str | None, *, now: float) -> None:
        """Claim the id and signature; ``Replay`` if either was accepted in the window."""
        self._prune(now)
        keys = self._keys(message_id, signature)
        for key in keys:
            if key in self._seen:
                what = "message id" if key.startswith("id:") else "signature"
                raise Replay(
                    f"{what} of message {message_id} was already received within the last "
                    f"{int(self.window)} s",
                    message_id=message_id,
                )
        for key in keys:
            self._seen[key] = now + self.window

    def release(self, message_id: str, signature: str | None) -> None:
        """Forget a reservation whose handling failed."""
        for key in self._keys(message_id, signature):
            self._seen.pop(key, None)
