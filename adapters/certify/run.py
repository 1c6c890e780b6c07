"""Running the certification with one of the three drivers, adapters included.

``certify(hub, partner_id, url, via=...)`` is what ``hubctl certify`` runs:

- ``sdk``: the partner's side is ``PartnerClient`` on ``url``;
- ``webhook``: a ``WebhookAdapter`` on ``url`` (the partner's AMQP user) delivers to a
  local HTTP server playing the partner, which calls back, both on free localhost ports
  and sharing a fresh secret;
- ``files``: a ``FileAdapter`` on ``url`` works a drop folder (a temporary one unless
  given) in which the driver plays the partner, with the partner's mapping (or a minimal
  certification mapping); quarantined rows are recorded in the hub's MongoDB.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Final, Literal

from adapters.certify.drivers import Driver, FileDriver, SdkDriver, WebhookDriver
from adapters.certify.hubside import DEFAULT_COUNTRY, CertificationHub
from adapters.certify.suite import Certification, CertificationReport
from adapters.files.adapter import FileAdapter
from adapters.files.mapping import StatusMapping, parse_mapping
from adapters.files.quarantine import MongoQuarantineLog
from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.delivery import RetryPolicy, WebhookSender
from hub.bootstrap import Hub
from partner_sdk.client import PartnerClient

__all__ = ["CERT_MAPPING", "FileRig", "Via", "WebhookRig", "certify"]

Via = Literal["sdk", "webhook", "files"]

#: The codes the certification needs, for a file partner without a mapping of its own.
CERT_MAPPING: Final = """
codes:
  ACC: {type: case.accepted}
  TEL1: {type: case.activity, kind: call, outcome: right_party_contact}
  DOC: {type: document.added, kind: letter}
  CLP: {type: case.closed, close_code: paid}
"""


class WebhookRig(WebhookDriver):
    """The webhook driver with the webhook adapter between it and the hub."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        partner_id: str | None = None,
        fail_first: int = 0,
        policy: RetryPolicy | None = None,
    ) -> None:
        client = PartnerClient(url, partner_id, namespace=namespace)
        super().__init__(client.partner_id, secrets.token_hex(32), fail_first=fail_first)
        self.client = client
        self.policy = policy or RetryPolicy(attempts=5, base=0.2, cap=2.0)
        self.adapter: WebhookAdapter | None = None

    async def start(self) -> None:
        await super().start()
        sender = WebhookSender(self.url, self.secret, policy=self.policy)
        self.adapter = WebhookAdapter(self.client, sender, self.secret, poll_s=0.2)
        try:
            await self.adapter.start()
        except BaseException:
            await super().stop()
            raise
        self.callback_url = self.adapter.callback_url

    async def stop(self) -> None:
        try:
            if self.adapter is not None:
                await self.adapter.stop()
        finally:
            await super().stop()


class FileRig(FileDriver):
    """The file driver with the file adapter between it and the hub."""

    def __init__(
        self,
        url: str,
        hub: Hub,
        drop: Path | str,
        mapping: StatusMapping,
        *,
        namespace: str = "",
        partner_id: str | None = None,
    ) -> None:
        client = PartnerClient(url, partner_id, namespace=namespace)
        super().__init__(client.partner_id, drop, mapping)
        self.adapter = FileAdapter(
            client,
            drop,
            mapping,
            MongoQuarantineLog(hub.store.db),
            poll_s=0.2,
            settle_s=0.0,
        )

    async def start(self) -> None:
        await super().start()
        await self.adapter.start()

    async def stop(self) -> None:
        try:
            await self.adapter.stop()
        finally:
            await super().stop()


async def certify(
    hub: Hub,
    partner_id: str,
    url: str,
    *,
    via: Via = "sdk",
    namespace: str | None = None,
    drop: Path | None = None,
    mapping: StatusMapping | None = None,
    country: str = DEFAULT_COUNTRY,
    within: float = 30.0,
    force: bool = False,
) -> CertificationReport:
    """Run the suite for ``partner_id`` (AMQP ``url``) through ``via``."""
    ns = hub.settings.namespace if namespace is None else namespace
    temporary: Path | None = None
    driver: Driver
    if via == "sdk":
        driver = SdkDriver(url, namespace=ns, partner_id=partner_id)
    elif via == "webhook":
        driver = WebhookRig(url, namespace=ns, partner_id=partner_id)
    elif via == "files":
        if drop is None:
            drop = temporary = Path(tempfile.mkdtemp(prefix=f"cert-{partner_id}-"))
        driver = FileRig(
            url,
            hub,
            drop,
            mapping or parse_mapping(CERT_MAPPING, source="certification mapping"),
            namespace=ns,
            partner_id=partner_id,
        )
    else:
        raise ValueError(f"via must be sdk, webhook or files, not {via!r}")
    try:
        suite = Certification(CertificationHub(hub, country=country), driver, within=within)
        return await suite.run(partner_id, force=force)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
