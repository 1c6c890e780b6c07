"""Certification: the scenarios a partner or an adapter runs against a hub before going live.

- ``suite``: the scenarios and their verdicts (``Certification``, ``CertificationReport``);
- ``drivers``: the partner's side, through the SDK, the webhook adapter or the file adapter;
- ``hubside``: the test case placed through the hub and what the hub recorded;
- ``run``: ``certify(...)``, what ``hubctl certify`` runs.
"""

from adapters.certify.drivers import (
    Assignment,
    Driver,
    FileDriver,
    Refusal,
    SdkDriver,
    WebhookDriver,
)
from adapters.certify.hubside import CERT_ENTITY_PREFIX, CertificationHub, SetupError
from adapters.certify.run import CERT_MAPPING, FileRig, Via, WebhookRig, certify
from adapters.certify.suite import (
    SCENARIOS,
    Certification,
    CertificationReport,
    ScenarioResult,
)

__all__ = [
    "CERT_ENTITY_PREFIX",
    "CERT_MAPPING",
    "SCENARIOS",
    "Assignment",
    "Certification",
    "CertificationHub",
    "CertificationReport",
    "Driver",
    "FileDriver",
    "FileRig",
    "Refusal",
    "ScenarioResult",
    "SdkDriver",
    "SetupError",
    "Via",
    "WebhookDriver",
    "WebhookRig",
    "certify",
]
