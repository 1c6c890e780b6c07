"""OneWindow partner SDK: receive case assignments from the hub, report on the cases, and
exchange their documents.

``PartnerClient`` (asyncio) and ``SyncPartnerClient`` (blocking) connect with the
partner's own AMQP user; the message models are the hub's contract v1
(``partner_sdk.messages``); every exception derives from ``PartnerSDKError``.
"""

from partner_sdk.client import (
    Delivery,
    DeliveryStream,
    DownloadedDocument,
    HubMessage,
    PartnerClient,
    RecentIds,
)
from partner_sdk.errors import (
    ConnectionFailed,
    DownloadFailed,
    DownloadTimeout,
    HubError,
    InvalidMessage,
    PartnerSDKError,
    PublishFailed,
)
from partner_sdk.messages import (
    ActivityKind,
    ActivityOutcome,
    CaseAccepted,
    CaseActivity,
    CaseAssigned,
    CaseChange,
    CaseClosed,
    CaseDeclined,
    CaseDispute,
    CaseLegalStep,
    CasePayment,
    CasePromise,
    CaseRecalled,
    CaseUpdated,
    CloseCode,
    DocumentAdded,
    DocumentContent,
    DocumentKind,
    DocumentRequested,
    ErrorDetail,
    ErrorReply,
    Installment,
    Message,
    Phase,
    SettlementDecided,
    SettlementProposed,
)
from partner_sdk.sync import SyncDelivery, SyncPartnerClient

__version__ = "0.1.0"

__all__ = [
    "ActivityKind",
    "ActivityOutcome",
    "CaseAccepted",
    "CaseActivity",
    "CaseAssigned",
    "CaseChange",
    "CaseClosed",
    "CaseDeclined",
    "CaseDispute",
    "CaseLegalStep",
    "CasePayment",
    "CasePromise",
    "CaseRecalled",
    "CaseUpdated",
    "CloseCode",
    "ConnectionFailed",
    "Delivery",
    "DeliveryStream",
    "DocumentAdded",
    "DocumentContent",
    "DocumentKind",
    "DocumentRequested",
    "DownloadFailed",
    "DownloadTimeout",
    "DownloadedDocument",
    "ErrorDetail",
    "ErrorReply",
    "HubError",
    "HubMessage",
    "Installment",
    "InvalidMessage",
    "Message",
    "PartnerClient",
    "PartnerSDKError",
    "Phase",
    "PublishFailed",
    "RecentIds",
    "SettlementDecided",
    "SettlementProposed",
    "SyncDelivery",
    "SyncPartnerClient",
]
