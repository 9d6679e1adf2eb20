"""Request and response bodies of the outbound and replies-source routes (what the OpenAPI schema documents).

Kept apart from :mod:`models` (the directory's bodies) so each area's schema reads on its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from .models import Strict

LIMIT_MAX = 1_000_000_000  # INTEGER columns: 32 bits on PostgreSQL


# --- transports --------------------------------------------------------------------------------

class TransportIn(Strict):
    relay: str | None = Field(None, max_length=300, examples=["[smtp.example.net]:587"],
                              description="HOST:PORT, [HOST]:PORT or relay:[HOST]:PORT of a smarthost; "
                                          "null: straight to the recipient's MX")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = Field(None, max_length=320, description="relay AUTH user (with secret)")
    secret: str | None = Field(None, max_length=1024, description="relay AUTH secret, stored sealed")
    dns_check: bool = Field(True, description="refuse a relay whose name does not resolve from here; false "
                                              "stores it anyway (transport set --no-dns-check)")


class TransportOut(BaseModel):
    scope: str
    match: str
    rule: str = Field(description="what the rule matches, in words")
    transport: str = Field(description="relay:[host]:port or mx")
    kind: str
    host: str | None
    port: int | None
    tls: str
    username: str | None
    secret_set: bool


class TransportList(BaseModel):
    items: list[TransportOut]


class RouteRule(BaseModel):
    scope: str
    match: str
    kind: str


class RouteOut(BaseModel):
    sender: str
    recipient: str
    tenant: str | None
    transport: str = Field(description="relay:[host]:port, mx, or virtual (delivered here)")
    kind: str | None = None
    host: str | None = None
    port: int | None = None
    tls: str | None = None
    username: str | None = None
    rule: RouteRule | None
    why: str


# --- DKIM --------------------------------------------------------------------------------------

class DkimKeyOut(BaseModel):
    domain: str
    selector: str
    algorithm: str
    state: str = Field(description="published, active or retiring")
    status: str = Field(description="the state, or 'active (unreadable: <reason>)'")
    problem: str | None = Field(description="why the services cannot load the private key, if they cannot")
    record: str = Field(description="the TXT record's name to publish")
    txt: str = Field(description="the TXT record's value")
    created_at: dt.datetime | None = None


class DkimKeyList(BaseModel):
    items: list[DkimKeyOut]


class DkimChange(BaseModel):
    domain: str
    action: str
    changed: list[DkimKeyOut] = Field(description="the keys the action made, activated or withdrew")
    keys: list[DkimKeyOut] = Field(description="the domain's keys afterwards")
    next_step: str = ""


# --- send limits -------------------------------------------------------------------------------

class SendLimitsIn(Strict):
    per_minute: int = Field(0, ge=0, le=LIMIT_MAX, description="messages per minute; 0: unlimited")
    per_day: int = Field(0, ge=0, le=LIMIT_MAX, description="recipients per UTC day; 0: unlimited")


class SendLimitsOut(BaseModel):
    tenant: str
    per_minute: int
    per_day: int
    sent_today: int


# --- SMTP credentials --------------------------------------------------------------------------

class SmtpCredentialIn(Strict):
    tenant: str | None = Field(None, max_length=63, description="owner; tenant callers may omit it")
    description: str = Field("", max_length=200)


class SmtpCredentialOut(BaseModel):
    username: str
    tenant: str
    description: str
    created_at: dt.datetime | None = None


class SmtpCredentialCreated(SmtpCredentialOut):
    secret: str = Field(description="shown only now: it is stored hashed")


class SmtpCredentialList(BaseModel):
    items: list[SmtpCredentialOut]


# --- replies inboxes and IMAP sources ----------------------------------------------------------

class ReplyInboxIn(Strict):
    address: str = Field(min_length=3, max_length=320, examples=["replies@example.com"])


class ReplyInbox(BaseModel):
    tenant: str
    address: str


class ReplyInboxList(BaseModel):
    items: list[ReplyInbox]


class ImapSourceIn(Strict):
    tenant: str | None = Field(None, max_length=63, description="owner; tenant callers may omit it")
    name: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(993, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024, description="stored sealed; never shown again")
    folder: str = Field("INBOX", min_length=1, max_length=500)


class ImapSourceOut(BaseModel):
    id: int
    tenant: str
    name: str
    host: str
    port: int
    tls: str
    username: str
    folder: str
    enabled: bool
    last_error: str | None
    last_uid: int | None = Field(description="the last message taken in, by UID; null before the first sync")
    synced_at: dt.datetime | None
    created_at: dt.datetime | None = None


class ImapSourceList(BaseModel):
    items: list[ImapSourceOut]
