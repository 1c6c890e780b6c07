"""The partner SDK's public surface is pinned: a change to it is a deliberate, visible edit
here (partners install the SDK; what it exports is a promise)."""

from __future__ import annotations

from partner_sdk import messages

EXPORTED = [
    "ActivityKind",
    "ActivityOutcome",
    "Address",
    "AssignedClaim",
    "BatchReconciled",
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
    "ClaimAmended",
    "ClaimPlaced",
    "ClaimReceipt",
    "ClaimWithdrawn",
    "CloseCode",
    "Debtor",
    "DebtorKind",
    "DocumentAdded",
    "DocumentContent",
    "DocumentKind",
    "DocumentRequested",
    "ErrorDetail",
    "ErrorReply",
    "Installment",
    "MESSAGE_TYPES",
    "Message",
    "PartnerDebtor",
    "Phase",
    "ReceiptStatus",
    "SettlementDecided",
    "SettlementProposed",
    "model_for",
]


def test_exported_members_are_pinned() -> None:
    assert sorted(messages.__all__) == EXPORTED


def test_all_has_no_duplicates() -> None:
    assert len(messages.__all__) == len(set(messages.__all__))


def test_every_exported_member_exists_and_is_public() -> None:
    for name in messages.__all__:
        member = getattr(messages, name)
        if isinstance(member, type):
            assert member.__module__ == messages.__name__, name
    public = {
        name
        for name, value in vars(messages).items()
        if not name.startswith("_")
        and isinstance(value, type)
        and value.__module__ == messages.__name__
    }
    assert public <= set(messages.__all__), public - set(messages.__all__)


def test_every_message_type_is_exported() -> None:
    exported = {id(getattr(messages, name)) for name in messages.__all__}
    for model in messages.MESSAGE_TYPES.values():
        assert id(model) in exported, model.__name__
