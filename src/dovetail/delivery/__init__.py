"""Local delivery agents: virtual mailboxes in Maildir++ (Postfix's virtual(8))."""

from __future__ import annotations

from dovetail.delivery.agent import (
    Deliverable,
    MailboxTarget,
    MaildirConfig,
    MaildirDeliveryAgent,
    RecipientRejected,
    Rejection,
    Resolver,
)

__all__ = [
    "Deliverable",
    "MailboxTarget",
    "MaildirConfig",
    "MaildirDeliveryAgent",
    "RecipientRejected",
    "Rejection",
    "Resolver",
]
