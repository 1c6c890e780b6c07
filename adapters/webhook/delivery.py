"""Delivering the hub's messages to a partner's URL: signed JSON POSTs, retried with backoff.

The POST body is an envelope, the same shape as the partner's callbacks::

    {"type": "case.assigned", "message_id": "asg:C-...-A1", "body": {...the message...}}

Retry policy (``RetryPolicy``):

- a 2xx answer is a delivery; so is 409 (the partner's own replay protection saying it
  already has this message id: a copy of one it received);
- a network error, a timeout, 408, 429 or any 5xx is retried; before attempt ``n + 1``
  the sender waits a random time in ``[0, min(cap, base * 2**(n-1))]`` ("full jitter",
  so that many adapters retrying do not hit the partner in step), or the ``Retry-After``
  seconds the partner asked for (at most ``cap``);
- any other 4xx is permanent (the partner refuses the message: retrying cannot help);
- after ``attempts`` tries, or a permanent refusal, ``DeliveryFailed`` is raised: the
  adapter then rejects the AMQP message, which goes to the hub's dead-letter queue.
  Nothing is dropped silently.

Every attempt is signed afresh (a new timestamp) and keeps the message id, so the
partner can recognise a retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from adapters.webhook import signing

__all__ = [
    "DeliveryFailed",
    "DeliveryResult",
    "RetryPolicy",
    "WebhookSender",
    "envelope",
]

log = logging.getLogger(__name__)

USER_AGENT = "onewindow-webhook-adapter/1"


def envelope(message_type: str, message_id: str, body: bytes) -> bytes:
    """``{"type", "message_id", "body"}`` around a message's JSON, which is kept byte for byte."""
    head = json.dumps({"type": message_type, "message_id": message_id})[:-1]
    return f'{head}, "body": '.encode() + body + b"}"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter (seconds)."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0:
            raise ValueError("attempts must be >= 1, base and cap >= 0")

    def backoff(self, failed: int, rand: float) -> float:
        """The wait after the ``failed``-th failed attempt; ``rand`` is uniform in [0, 1)."""
        return float(rand * min(self.cap, self.base * 2.0 ** (failed - 1)))


@dataclass(frozen=True)
class DeliveryResult:
    status: int
    attempts: int


class DeliveryFailed(Exception):
    """The partner did not take the message: ``permanent`` (a 4xx) or attempts exhausted."""

    def __init__(self, message: str, *, message_id: str, attempts: int, permanent: bool) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.attempts = attempts
        self.permanent = permanent


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    return None  # an HTTP date is rare from an API; the backoff applies


class WebhookSender:
    """Signs and POSTs messages to ``url``, retrying as the module docstring says."""

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        client: httpx.AsyncClient | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the partner's URL must be http(s), not {url!r}")
        signing.sign(secret, 0, b"")  # refuses an empty secret now, not at the first message
        self.url = url
        self.secret = secret
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def deliver(self, message_type: str, message_id: str, body: bytes) -> DeliveryResult:
        """POST one message (``body`` is its JSON); ``DeliveryFailed`` if the partner did not
        take it."""
        payload = envelope(message_type, message_id, body)
        problem = ""
        for attempt in range(1, self.policy.attempts + 1):
            headers = signing.signed_headers(
                self.secret,
                payload,
                timestamp=int(self.clock()),
                message_id=message_id,
                message_type=message_type,
            )
            wait: float | None = None
            try:
                response = await self.client.post(self.url, content=payload, headers=headers)
            except httpx.TransportError as e:  # connect, read, write, timeouts
                problem = f"{type(e).__name__}: {e}"
            else:
                status = response.status_code
                if 200 <= status < 300 or status == 409:
                    log.debug("delivered %s %s: HTTP %d", message_type, message_id, status)
                    return DeliveryResult(status, attempt)
                problem = f"HTTP {status} {response.text[:200]!r}"
                if not _retryable(status):
                    raise DeliveryFailed(
                        f"partner refused {message_type} {message_id}: {problem}",
                        message_id=message_id,
                        attempts=attempt,
                        permanent=True,
                    )
                wait = _retry_after(response)
            if attempt == self.policy.attempts:
                break
            delay = self.policy.backoff(attempt, self.rand())
            if wait is not None:
                delay = min(self.policy.cap, max(delay, wait))
            log.warning(
                "delivery of %s %s to %s failed (attempt %d/%d: %s); retrying in %.2f s",
                message_type,
                message_id,
                self.url,
                attempt,
                self.policy.attempts,
                problem,
                delay,
            )
            await self.sleep(delay)
        raise DeliveryFailed(
            f"{message_type} {message_id} not delivered after {self.policy.attempts} "
            f"attempt(s): {problem}",
            message_id=message_id,
            attempts=self.policy.attempts,
            permanent=False,
        )
