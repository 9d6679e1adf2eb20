"""The envelope of a queued message and the per-recipient delivery state.

These are plain dataclasses with a JSON form; the queue file stores the envelope once as written at
intake and applies later status records on top (see ``qfile``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

RecipientStatus = Literal["pending", "sent", "bounced"]
NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


@dataclass
class QueueRecipient:
    """One envelope recipient: its address, DSN parameters and where its delivery stands.

    ``status`` is ``pending`` until a final outcome (``sent`` or ``bounced``); a temporary failure
    leaves it ``pending`` and records ``dsn_code``/``reason`` of the last attempt.
    """

    address: str
    original: str | None = None
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    status: RecipientStatus = "pending"
    dsn_code: str | None = None
    reason: str | None = None
    relay: str | None = None
    done_at: float | None = None
    notified: bool = False
    index: int = 0

    def wants(self, event: str) -> bool:
        """Whether a DSN for ``event`` (FAILURE, DELAY, SUCCESS) should go to the sender.

        Without NOTIFY the RFC 3461 default applies: failures and delays, not successes.
        """
        if self.notify is None:
            return event in ("FAILURE", "DELAY")
        return event in self.notify

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"a": self.address}
        if self.original is not None:
            data["o"] = self.original
        if self.notify is not None:
            data["n"] = list(self.notify)
        if self.orcpt is not None:
            data["r"] = self.orcpt
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], index: int) -> QueueRecipient:
        notify = data.get("n")
        return cls(
            address=_str(data["a"]),
            original=_opt_str(data.get("o")),
            notify=tuple(_str(v) for v in notify) if notify is not None else None,
            orcpt=_opt_str(data.get("r")),
            index=index,
        )


@dataclass
class Envelope:
    """What SMTP learned about a message besides its bytes."""

    sender: str
    recipients: list[QueueRecipient]
    ret: str | None = None
    envid: str | None = None
    client_address: str | None = None
    client_name: str | None = None
    helo: str | None = None
    protocol: str | None = None
    arrival: float = field(default_factory=time.time)
    tls: str | None = None
    auth_user: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    size: int = 0
    attempts: int = 0
    next_attempt: float = 0.0
    last_reason: str | None = None
    delay_warned: bool = False

    def __post_init__(self) -> None:
        for i, rcpt in enumerate(self.recipients):
            rcpt.index = i
        if self.ret is not None and self.ret not in ("FULL", "HDRS"):
            raise ValueError(f"bad RET value {self.ret!r}")
        for rcpt in self.recipients:
            if rcpt.notify is not None:
                bad = set(rcpt.notify) - NOTIFY_VALUES
                if bad or ("NEVER" in rcpt.notify and len(rcpt.notify) > 1):
                    raise ValueError(f"bad NOTIFY value {rcpt.notify!r}")

    def pending(self) -> list[QueueRecipient]:
        return [r for r in self.recipients if r.status == "pending"]

    def to_json(self) -> dict[str, Any]:
        """The intake part of the envelope; delivery state travels in status records."""
        data: dict[str, Any] = {"sender": self.sender}
        for key in _INTAKE_FIELDS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.extra:
            data["extra"] = dict(self.extra)
        data["recipients"] = [r.to_json() for r in self.recipients]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Envelope:
        rcpts = data["recipients"]
        if not isinstance(rcpts, list):
            raise ValueError("recipients is not a list")
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise ValueError("extra is not an object")
        return cls(
            sender=_str(data["sender"]),
            recipients=[QueueRecipient.from_json(r, i) for i, r in enumerate(rcpts)],
            ret=_opt_str(data.get("ret")),
            envid=_opt_str(data.get("envid")),
            client_address=_opt_str(data.get("client_address")),
            client_name=_opt_str(data.get("client_name")),
            helo=_opt_str(data.get("helo")),
            protocol=_opt_str(data.get("protocol")),
            arrival=float(data.get("arrival", 0.0)),
            tls=_opt_str(data.get("tls")),
            auth_user=_opt_str(data.get("auth_user")),
            extra={_str(k): _str(v) for k, v in extra.items()},
        )


_INTAKE_FIELDS = ("ret", "envid", "client_address", "client_name", "helo", "protocol", "arrival", "tls", "auth_user")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)
