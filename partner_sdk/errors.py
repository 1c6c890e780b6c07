"""Exceptions of the partner SDK, branched by what the caller should do.

PartnerSDKError
├── InvalidMessage     the report does not satisfy the contract; nothing was sent: fix it
├── PublishFailed      the broker did not confirm the report: retry with the same message_id
├── ConnectionFailed   could not connect (address, credentials, permissions): check settings
├── HubError           the hub refused a report or request with an ``error.reply``: see
│                      ``.reply``
└── DownloadFailed     a download brought no document (content not matching its sha256):
    │                  retry, a download is safe to repeat
    └── DownloadTimeout    no answer in time (also a ``TimeoutError``): retry

A retry of a ``PublishFailed`` report with the same ``message_id`` is safe: the hub
applies a message id at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from partner_sdk.messages import ErrorReply

__all__ = [
    "ConnectionFailed",
    "DownloadFailed",
    "DownloadTimeout",
    "HubError",
    "InvalidMessage",
    "PartnerSDKError",
    "PublishFailed",
]


class PartnerSDKError(Exception):
    """Root of every exception the SDK raises."""


class InvalidMessage(PartnerSDKError, ValueError):
    """A report failed validation against the contract; nothing was sent.

    ``errors`` lists the problems as pydantic reports them (``loc``, ``msg``, ``type``).
    """

    def __init__(
        self, message_type: str, message: str, errors: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        super().__init__(f"{message_type}: {message}")
        self.message_type = message_type
        self.errors: list[Mapping[str, Any]] = list(errors)


class PublishFailed(PartnerSDKError):
    """The broker did not confirm a report (nack, unroutable, timeout, connection lost).

    The report may or may not have reached the hub: publish it again with the same
    ``message_id`` (the hub applies it once).
    """

    def __init__(self, message: str, *, message_id: str, message_type: str) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.message_type = message_type


class ConnectionFailed(PartnerSDKError):
    """The client could not connect to the broker or open the partner's queue."""


class HubError(PartnerSDKError):
    """The hub refused a report or request: ``reply`` is the ``error.reply`` it sent back."""

    def __init__(self, reply: ErrorReply) -> None:
        where = f" on case {reply.case_id}" if reply.case_id else ""
        super().__init__(
            f"hub refused {reply.in_reply_to_type or 'message'} {reply.in_reply_to}{where}: "
            f"{reply.code}: {reply.message}"
        )
        self.reply = reply

    @property
    def code(self) -> str:
        return self.reply.code


class DownloadFailed(PartnerSDKError):
    """A download brought no document; asking again is safe (a read changes nothing)."""

    def __init__(self, message: str, *, message_id: str, case_id: str, document_id: str) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.case_id = case_id
        self.document_id = document_id


class DownloadTimeout(DownloadFailed, TimeoutError):
    """The hub did not answer a download in time (busy, or the request or its answer is
    held up); asking again is safe."""
