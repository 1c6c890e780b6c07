"""Domain errors. Each says what the sender did wrong; none is a failure of the hub.

DomainError
├── IllegalTransition   the case's state does not allow the command
├── NotAssignee         the sender is not the partner the case is assigned to
├── UnknownCase         no such case
├── UnknownDocument     the case has no such document
├── UnknownLegalStep    the country's catalog has no such legal step
└── InvalidCommand      the command is well-formed but makes no sense (e.g. wrong currency)
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of the refusals the hub answers with an error reply; the state is unchanged."""

    code = "illegal_transition"

    def __init__(self, message: str, *, case_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.case_id = case_id


class IllegalTransition(DomainError):
    code = "illegal_transition"


class NotAssignee(DomainError):
    code = "not_assignee"


class UnknownCase(DomainError):
    code = "unknown_case"


class UnknownDocument(DomainError):
    code = "unknown_document"


class InvalidCommand(DomainError):
    code = "invalid_message"


class UnknownLegalStep(DomainError):
    code = "unknown_legal_step"
