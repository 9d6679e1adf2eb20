"""Request and response bodies of the REST API (what the OpenAPI schema documents)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=320)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(Strict):
    name: str = Field(min_length=1, max_length=63, examples=["acme"])
    display_name: str = Field("", max_length=200)
    enabled: bool = True


_ENFORCE = ("senders' DMARC reject/quarantine applied to mail for {what}; null: {inherit}")


class TenantPatch(Strict):
    display_name: str | None = Field(None, max_length=200)
    enabled: bool | None = None
    dmarc_enforce: bool | None = Field(None, description=_ENFORCE.format(
        what="the tenant's domains (a domain's own setting comes first)", inherit="follow mx.dmarc_enforce"))


class Tenant(BaseModel):
    name: str
    display_name: str
    enabled: bool
    domains: int = 0
    dmarc_enforce: bool | None = None


class DnsRecord(BaseModel):
    type: str
    name: str
    value: str
    status: str | None = None
    purpose: str | None = None


class DnsStatus(BaseModel):
    configured: bool
    records: list[DnsRecord] = []
    detail: str = ""


class DomainIn(Strict):
    name: str = Field(min_length=1, max_length=253, examples=["example.com"])
    tenant: str | None = Field(None, max_length=63, description="owner; tenant callers may omit it")
    postmaster: str | None = Field(None, max_length=320)
    plus_separator: str = Field("+", min_length=1, max_length=1)
    enabled: bool = True


class DomainPatch(Strict):
    enabled: bool | None = None
    catchall: str | None = Field(None, max_length=320, description="catch-all target; null removes it")
    postmaster: str | None = Field(None, max_length=320)
    plus_separator: str | None = Field(None, min_length=1, max_length=1)
    dmarc_enforce: bool | None = Field(None, description=_ENFORCE.format(
        what="this domain", inherit="follow the tenant's setting, else mx.dmarc_enforce"))
    mta_sts_mode: Literal["testing", "enforce", "none"] | None = Field(
        None, description="mode of the MTA-STS policy served at mta-sts.<domain>")


class CatchAllIn(Strict):
    target: str = Field(min_length=3, max_length=320)


class Domain(BaseModel):
    name: str
    display_name: str
    tenant: str
    enabled: bool
    catchall: str | None
    plus_separator: str
    postmaster: str | None
    dmarc_enforce: bool | None = None
    dmarc_enforce_by: str = "global"
    mta_sts_mode: str = "testing"
    mailboxes: int | None = None
    aliases: int | None = None
    dns: DnsStatus | None = None


class MailboxIn(Strict):
    address: str = Field(min_length=3, max_length=320, examples=["bob@example.com"])
    password: str | None = Field(None, min_length=8, max_length=1024)
    quota: int | str | None = Field(None, description="bytes, or a size such as 2G; 0 is unlimited")
    enabled: bool = True


class MailboxPatch(Strict):
    password: str | None = Field(None, min_length=8, max_length=1024)
    quota: int | str | None = None
    enabled: bool | None = None


class Mailbox(BaseModel):
    address: str
    tenant: str
    quota_bytes: int
    enabled: bool
    usage_bytes: int | None  # None: the tenant's home node could not be asked
    messages: int | None


class AliasIn(Strict):
    source: str = Field(min_length=3, max_length=320, examples=["sales@example.com"])
    targets: list[str] = Field(min_length=1, max_length=1000)


class AliasTargets(Strict):
    targets: list[str] = Field(min_length=1, max_length=1000)


class Alias(BaseModel):
    source: str
    tenant: str
    targets: list[str]


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


class TenantPage(Page):
    items: list[Tenant]


class DomainPage(Page):
    items: list[Domain]


class MailboxPage(Page):
    items: list[Mailbox]


class AliasPage(Page):
    items: list[Alias]


class TokenIn(Strict):
    scope: str = Field("tenant", pattern="^(admin|tenant)$")
    tenant: str | None = Field(None, max_length=63)
    name: str = Field("", max_length=100)


class Token(BaseModel):
    id: int
    name: str
    prefix: str
    scope: str
    tenant: str | None
    created_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class TokenCreated(Token):
    token: str = Field(description="the secret; shown only in this response")


class TokenPage(Page):
    items: list[Token]


class QueueRecipientOut(BaseModel):
    address: str
    status: str | None = None
    reason: str | None = None


class QueueEntryOut(BaseModel):
    queue_id: str
    state: str
    size: int
    arrival: float
    sender: str
    recipients: list[QueueRecipientOut]
    reason: str | None
    next_attempt: float
    attempts: int


class QueuePage(Page):
    items: list[QueueEntryOut]


class QueueMessage(QueueEntryOut):
    headers: list[tuple[str, str]] = []
    log: list[str] = []


class QueueAction(BaseModel):
    affected: int


class Stats(BaseModel):
    minutes: int
    series: dict[str, list[int]]
    last_24h: dict[str, int]
    queue: dict[str, int]
