"""A synchronous facade of ``PartnerClient`` for scripts without an event loop.

The client runs on an event loop in a background thread; every call here submits to it
and waits for the result::

    with SyncPartnerClient("amqp://acme-de:secret@hub.example/") as client:
        while (delivery := client.next_delivery(timeout=30)) is not None:
            if isinstance(delivery.message, CaseAssigned):
                client.accept(delivery.message.case_id)
            delivery.ack()

The methods take the same arguments, return the same values and raise the same
exceptions as their ``PartnerClient`` namesakes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from partner_sdk.client import Delivery, DownloadedDocument, HubMessage, PartnerClient
from partner_sdk.errors import ConnectionFailed

__all__ = ["SyncDelivery", "SyncPartnerClient"]

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[PartnerClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncPartnerClient, P], R]:
    def call(self: SyncPartnerClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._connected(), *args, **kwargs))

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class SyncDelivery:
    """A ``Delivery`` settled from the calling thread."""

    def __init__(self, owner: SyncPartnerClient, delivery: Delivery) -> None:
        self._owner = owner
        self.delivery = delivery

    @property
    def message(self) -> HubMessage:
        return self.delivery.message

    @property
    def message_id(self) -> str:
        return self.delivery.message_id

    @property
    def case_id(self) -> str | None:
        return self.delivery.case_id

    def __repr__(self) -> str:
        return f"<SyncDelivery {self.delivery.type} {self.message_id} case={self.case_id}>"

    def raise_for_error(self) -> None:
        self.delivery.raise_for_error()

    def ack(self) -> None:
        self._owner._run(self.delivery.ack())

    def reject(self, *, requeue: bool = False) -> None:
        self._owner._run(self.delivery.reject(requeue=requeue))


class SyncPartnerClient:
    """``PartnerClient`` for synchronous code. Use it as a context manager (or call
    ``connect()`` and ``disconnect()``); ``timeout`` bounds every call, in seconds."""

    def __init__(
        self,
        url: str,
        partner_id: str | None = None,
        *,
        namespace: str = "",
        prefetch: int = 16,
        timeout: float = 60.0,
    ) -> None:
        self._args: tuple[str, str | None, str, int] = (url, partner_id, namespace, prefetch)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: PartnerClient | None = None

    def __enter__(self) -> SyncPartnerClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    @property
    def partner_id(self) -> str:
        return self._connected().partner_id

    def connect(self) -> None:
        if self._client is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="onewindow-partner-sdk", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        url, partner_id, namespace, prefetch = self._args

        async def start() -> PartnerClient:
            client = PartnerClient(url, partner_id, namespace=namespace, prefetch=prefetch)
            await client.connect()
            return client

        try:
            self._client = self._run(start())
        except BaseException:
            self._stop_loop()
            raise

    def disconnect(self) -> None:
        client, self._client = self._client, None
        try:
            if client is not None:
                self._run(client.disconnect())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=self.timeout)
        if not thread.is_alive():
            loop.close()

    def _connected(self) -> PartnerClient:
        if self._client is None:
            raise ConnectionFailed("the client is not connected: use `with` or connect()")
        return self._client

    def _run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        if self._loop is None:
            coro.close()
            raise ConnectionFailed("the client is not connected: use `with` or connect()")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def next_delivery(self, timeout: float | None = None) -> SyncDelivery | None:
        """The next delivery, or ``None`` if none arrives within ``timeout`` seconds
        (``None``: wait as long as it takes)."""
        client = self._connected()
        limit = None if timeout is None else timeout + self.timeout
        delivery = self._run(client.next_delivery(timeout), timeout=limit)
        return None if delivery is None else SyncDelivery(self, delivery)

    def download_document(
        self,
        case_id: str,
        document_id: str,
        *,
        timeout: float = 60.0,
        message_id: str | None = None,
    ) -> DownloadedDocument:
        client = self._connected()
        call = client.download_document(
            case_id, document_id, timeout=timeout, message_id=message_id
        )
        return self._run(call, timeout=timeout + self.timeout)

    download_document.__doc__ = PartnerClient.download_document.__doc__

    accept = _blocking(PartnerClient.accept)
    decline = _blocking(PartnerClient.decline)
    report_activity = _blocking(PartnerClient.report_activity)
    report_promise = _blocking(PartnerClient.report_promise)
    report_payment = _blocking(PartnerClient.report_payment)
    propose_settlement = _blocking(PartnerClient.propose_settlement)
    report_dispute = _blocking(PartnerClient.report_dispute)
    report_legal_step = _blocking(PartnerClient.report_legal_step)
    close = _blocking(PartnerClient.close)
    upload_document = _blocking(PartnerClient.upload_document)
    send = _blocking(PartnerClient.send)
