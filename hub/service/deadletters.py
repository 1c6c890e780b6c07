"""Dead letters: the messages ``hub.dead`` holds, and putting them back.

A message reaches ``hub.dead`` when the broker dead-letters it: a consumer refused it
past ``x-delivery-limit`` deliveries (reason ``delivery_limit``: a poison message), or a
partner rejected it without requeue (``rejected``). Nothing in ``hub.dead`` is consumed
automatically: an operator looks (``hubctl dead list``), mends the cause, and replays
(``hubctl dead replay``).

Replaying republishes a letter, with its message id and properties and without its
``x-death`` headers, to the exchange and routing key it was first published with; the
letter leaves ``hub.dead`` only once the broker confirmed the copy. The hub deduplicates
by message id, so replaying a letter whose first attempt did take effect changes nothing.
A letter a partner published carries that partner's ``user_id``: the broker accepts the
copy only from an AMQP user tagged ``impersonator``, otherwise the letter stays and the
replay says why.

The reading and the republishing themselves are ``hub.infra.dead_letters.DeadLetters``;
this module chooses which letters to replay and reports on each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["DeadLetterQueue", "DeadLetterService", "Letter", "ReplayReport"]


class Letter(Protocol):
    """What this module needs of a dead letter."""

    @property
    def id(self) -> str: ...

    @property
    def message_id(self) -> str | None: ...


T = TypeVar("T", bound=Letter)


class DeadLetterQueue(Protocol[T]):
    """``hub.dead``: peek at letters without taking them, replay one by its letter id."""

    async def peek(self, limit: int = 100) -> list[T]: ...

    async def replay(self, connection: Any, wanted: str, *, by: str, scan: int = 10_000) -> T: ...


@dataclass
class ReplayReport(Generic[T]):
    """What a replay did, letter by letter."""

    replayed: list[T] = field(default_factory=list)
    #: message ids asked for that ``hub.dead`` does not hold
    missing: list[str] = field(default_factory=list)
    #: letters the broker (or the queue) refused, and why; they stay in ``hub.dead``
    refused: list[tuple[T, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.refused


class DeadLetterService(Generic[T]):
    """List and replay dead letters, on behalf of ``by`` (recorded on each copy)."""

    def __init__(self, queue: DeadLetterQueue[T], connection: Any, *, by: str) -> None:
        self.queue = queue
        self.connection = connection
        self.by = by

    async def list(self, limit: int = 100) -> list[T]:
        """The first ``limit`` letters of ``hub.dead``; they stay in it."""
        return await self.queue.peek(limit)

    async def replay(
        self, message_ids: Sequence[str] | None = None, *, limit: int = 10_000
    ) -> ReplayReport[T]:
        """Replay every letter carrying one of ``message_ids`` (each copy of it, when a
        message died twice), or, with ``None``, every letter (up to ``limit``) that is in
        ``hub.dead`` now: letters that die again meanwhile wait for the next replay."""
        letters = await self.queue.peek(limit)
        if message_ids is None:
            chosen = letters
            missing: list[str] = []
        else:
            wanted = dict.fromkeys(message_ids)
            chosen = [letter for letter in letters if letter.message_id in wanted]
            found = {letter.message_id for letter in chosen}
            missing = [mid for mid in wanted if mid not in found]
        report: ReplayReport[T] = ReplayReport(missing=missing)
        for letter in chosen:
            try:
                report.replayed.append(
                    await self.queue.replay(self.connection, letter.id, by=self.by)
                )
            except Exception as e:  # the letter stays in hub.dead; say why, go on
                report.refused.append((letter, str(e) or repr(e)))
        return report
