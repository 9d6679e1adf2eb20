"""Local delivery agents: virtual mailboxes in Maildir++ (Postfix's virtual(8))."""

from __future__ import annotations

from dovetail.delivery.agent import (
    MailboxTarget,
    MaildirConfig,
    MaildirDeliveryAgent,
    RecipientRejected,
    Rejection,
    Resolver,
)

__all__ = [
    "MailboxTarget",
    "MaildirConfig",
    "MaildirDeliveryAgent",
    "RecipientRejected",
    "Rejection",
    "Resolver",
]
