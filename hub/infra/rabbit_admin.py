"""Partners' RabbitMQ users, through the management HTTP API.

Each partner gets its own AMQP user whose name IS the partner id: the hub authorises a
report by the message's ``user_id`` property, and RabbitMQ only lets a publisher set
``user_id`` to the name of the user it connected as. Least privilege on the vhost:

- configure ``^$``: it declares nothing (it declares its queue passively);
- write ``^<ns>partners\\.in$``: it publishes only to ``partners.in``...
- ...and, by a topic permission on that exchange, only with routing keys ``<id>.…``;
- read ``^<ns>partner\\.<id>$``: it consumes only its own queue.

The management API is spoken with ``httpx``; its errors are translated to
``BrokerAdminError``.

BrokerAdminError         the management API refused a request or could not be reached
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
from aio_pika.connection import make_url

from hub.config import Settings
from hub.infra import topology
from hub.infra.mongo import MongoPartnerDirectory
from hub.infra.topology import Topology
from partner_sdk.messages import PARTNER_ID_PATTERN

__all__ = [
    "BrokerAdminError",
    "PartnerPermissions",
    "RabbitAdmin",
    "check_partner_id",
    "partner_permissions",
    "set_partner_active",
    "vhost_of",
]

log = logging.getLogger(__name__)

_PARTNER_ID = re.compile(PARTNER_ID_PATTERN.removesuffix("$") + r"\Z")


class BrokerAdminError(Exception):
    """The management API refused a request (``status``) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PartnerPermissions:
    """What a partner's user may do on the vhost and on the ``partners.in`` exchange."""

    configure: str
    write: str
    read: str
    topic_exchange: str
    topic_write: str
    topic_read: str


def partner_permissions(topo: Topology, partner_id: str) -> PartnerPermissions:
    return PartnerPermissions(
        configure="^$",
        write=f"^{re.escape(topo.partners_in)}$",
        read=f"^{re.escape(topo.partner_queue(partner_id))}$",
        topic_exchange=topo.partners_in,
        topic_write=f"^{re.escape(partner_id)}\\.",
        topic_read="^$",
    )


def vhost_of(amqp_url: str) -> str:
    """The vhost of an AMQP URL: its path, percent-decoded; none or ``/`` is ``/``."""
    path = urllib.parse.urlsplit(amqp_url).path
    if path in ("", "/"):
        return "/"
    return urllib.parse.unquote(path[1:])


def check_partner_id(partner_id: str) -> str:
    if not _PARTNER_ID.match(partner_id):
        raise ValueError(
            f"partner id {partner_id!r} must match {PARTNER_ID_PATTERN} "
            "(lower-case letters, digits and '-', 2 to 32 characters)"
        )
    return partner_id


class RabbitAdmin:
    """Provisions partners' users over the management API and declares their queues."""

    def __init__(
        self,
        management_url: str,
        amqp_url: str,
        topo: Topology,
        *,
        timeout: float = 10.0,
    ) -> None:
        parts = urllib.parse.urlsplit(management_url)
        self._auth = "Basic " + base64.b64encode(
            f"{urllib.parse.unquote(parts.username or 'guest')}:"
            f"{urllib.parse.unquote(parts.password or 'guest')}".encode()
        ).decode("ascii")
        netloc = parts.hostname or "127.0.0.1"
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self.base = f"{parts.scheme or 'http'}://{netloc}{parts.path.rstrip('/')}/api"
        self.amqp_url = amqp_url
        self.topology = topo
        self.vhost = vhost_of(amqp_url)
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> RabbitAdmin:
        topo = Topology(settings.namespace, settings.delivery_limit)
        return cls(settings.amqp_management_url, settings.amqp_url, topo)

    # -- HTTP ----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": self._auth}
        if method == "DELETE" and path.startswith("/connections/"):
            headers["X-Reason"] = "partner disabled by the hub coordinator"
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.request(
                    method, self.base + path, json=body, headers=headers
                )
        except httpx.HTTPError as e:
            raise BrokerAdminError(f"{method} {path}: management API unreachable: {e}") from e
        if response.status_code >= 400:
            raise BrokerAdminError(
                f"{method} {path}: HTTP {response.status_code} {response.text[:300]}",
                status=response.status_code,
            )
        return response.json() if response.content else None

    async def _delete(self, path: str) -> bool:
        """DELETE; False when there was nothing to delete."""
        try:
            await self._request("DELETE", path)
        except BrokerAdminError as e:
            if e.status == 404:
                return False
            raise
        return True

    def _q(self, value: str) -> str:
        return urllib.parse.quote(value, safe="")

    # -- partners ------------------------------------------------------------------------

    def partner_url(self, partner_id: str, password: str) -> str:
        """The AMQP URL a partner connects with: the hub's broker, the partner's user."""
        parts = urllib.parse.urlsplit(self.amqp_url)
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{self._q(partner_id)}:{self._q(password)}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(
            (parts.scheme or "amqp", netloc, "/" + self._q(self.vhost), "", "")
        )

    async def provision_partner(self, partner_id: str, password: str) -> str:
        """Create (or update) the partner's user with least privilege and declare its
        queue; returns the AMQP URL the partner connects with. Idempotent."""
        check_partner_id(partner_id)
        if not password:
            raise ValueError("a partner's password must not be empty")
        await self._request(
            "PUT", f"/users/{self._q(partner_id)}", {"password": password, "tags": ""}
        )
        await self.grant_partner(partner_id)
        log.info("partner %s: broker user provisioned on vhost %s", partner_id, self.vhost)
        return self.partner_url(partner_id, password)

    async def grant_partner(self, partner_id: str) -> None:
        """(Re)apply the partner's least-privilege permissions to its existing user and
        declare its queue, leaving its password as it is (re-enables a disabled one)."""
        check_partner_id(partner_id)
        perms = partner_permissions(self.topology, partner_id)
        user, vhost = self._q(partner_id), self._q(self.vhost)
        await self.declare_partner_queue(partner_id)
        await self._request(
            "PUT",
            f"/permissions/{vhost}/{user}",
            {"configure": perms.configure, "write": perms.write, "read": perms.read},
        )
        await self._request(
            "PUT",
            f"/topic-permissions/{vhost}/{user}",
            {
                "exchange": perms.topic_exchange,
                "write": perms.topic_write,
                "read": perms.topic_read,
            },
        )

    async def declare_partner_queue(self, partner_id: str) -> None:
        """``partner.<id>`` bound to ``partners.out``, declared as the hub's user."""
        connection = aio_pika.Connection(make_url(self.amqp_url))
        try:  # closed also when connecting fails, so nothing is left to the GC
            await connection.connect()
            async with connection.channel() as channel:
                await topology.declare_partner(channel, self.topology, partner_id)
        finally:
            await connection.close()

    async def user_exists(self, partner_id: str) -> bool:
        try:
            await self._request("GET", f"/users/{self._q(partner_id)}")
        except BrokerAdminError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def connections_of(self, partner_id: str) -> list[str]:
        """Names of the open connections of the partner's user (the management API
        learns of a new connection within its statistics interval, a few seconds)."""
        rows = await self._request("GET", "/connections?columns=name,user,vhost")
        return [
            str(r["name"])
            for r in rows or []
            if r.get("user") == partner_id and r.get("vhost", self.vhost) == self.vhost
        ]

    async def close_connections(self, partner_id: str) -> int:
        closed = 0
        for name in await self.connections_of(partner_id):
            if await self._delete(f"/connections/{self._q(name)}"):
                closed += 1
        return closed

    async def disable_partner(
        self,
        partner_id: str,
        *,
        directory: MongoPartnerDirectory | None = None,
        settle_s: float = 0.0,
    ) -> int:
        """Revoke the partner's rights on the vhost (it can no longer connect), close
        its open connections and, with ``directory``, mark it inactive so that routing
        passes it over. ``settle_s`` keeps looking for connections that long, for ones
        the management API has not reported yet. Returns the connections closed."""
        if directory is not None:
            await set_partner_active(directory, partner_id, False)
        user, vhost = self._q(partner_id), self._q(self.vhost)
        await self._delete(f"/permissions/{vhost}/{user}")
        await self._delete(f"/topic-permissions/{vhost}/{user}")
        closed = await self.close_connections(partner_id)
        deadline = asyncio.get_running_loop().time() + settle_s
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(1.0, settle_s))
            closed += await self.close_connections(partner_id)
        log.info("partner %s disabled: %d connection(s) closed", partner_id, closed)
        return closed

    async def remove_partner(self, partner_id: str) -> bool:
        """Delete the partner's user (RabbitMQ closes its connections); False if none."""
        removed = await self._delete(f"/users/{self._q(partner_id)}")
        if removed:
            log.info("partner %s: broker user removed", partner_id)
        return removed


async def set_partner_active(
    directory: MongoPartnerDirectory, partner_id: str, active: bool
) -> bool:
    """Mark a partner (in)active in the directory; False when there is no such partner."""
    await directory.refresh()
    profile = next((p for p in await directory.profiles() if p.partner_id == partner_id), None)
    if profile is None:
        return False
    if profile.active != active:
        await directory.upsert(dataclasses.replace(profile, active=active))
    return True
