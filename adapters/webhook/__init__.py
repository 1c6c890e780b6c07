"""The HTTP webhook adapter: hub messages as signed POSTs to the partner's URL, the
partner's reports back as signed callbacks on ``POST /callbacks``.

- ``signing``: HMAC-SHA256 signatures over ``"<timestamp>.<body>"``, replay protection;
- ``delivery``: the POSTs to the partner, retried with exponential backoff and jitter;
- ``callbacks``: the ASGI (Starlette) app that verifies and forwards callbacks;
- ``adapter``: ``WebhookAdapter``, both directions under the partner's own AMQP user;
- ``server``: an embedded uvicorn server for the callback app.
"""

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.callbacks import (
    Callback,
    CallbackRejected,
    create_callback_app,
    parse_callback,
)
from adapters.webhook.delivery import (
    DeliveryFailed,
    DeliveryResult,
    RetryPolicy,
    WebhookSender,
    envelope,
)
from adapters.webhook.server import EmbeddedServer, parse_listen
from adapters.webhook.signing import (
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_TYPE,
    Replay,
    ReplayGuard,
    SignatureError,
    sign,
    signed_headers,
    verify,
)

__all__ = [
    "HEADER_MESSAGE_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "HEADER_TYPE",
    "Callback",
    "CallbackRejected",
    "DeliveryFailed",
    "DeliveryResult",
    "EmbeddedServer",
    "Replay",
    "ReplayGuard",
    "RetryPolicy",
    "SignatureError",
    "WebhookAdapter",
    "WebhookSender",
    "create_callback_app",
    "envelope",
    "parse_callback",
    "parse_listen",
    "sign",
    "signed_headers",
    "verify",
]
