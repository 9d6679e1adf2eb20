"""Builders of inbound test messages."""

from __future__ import annotations


def reply(*, frm: str = "anna@client.example", to: str = "sales@acme.example", subject: str = "Re: Quick question",
          in_reply_to: str | None = None, references: str | None = None, message_id: str = "<r1@client.example>",
          body: str = "Sounds good, let's talk Tuesday.\n", extra: str = "",
          date: str = "Mon, 05 Jan 2026 10:00:00 +0000") -> bytes:
    head = [f"From: Anna <{frm}>", f"To: {to}", f"Subject: {subject}", f"Date: {date}", f"Message-ID: {message_id}"]
    if in_reply_to:
        head.append(f"In-Reply-To: {in_reply_to}")
    if references:
        head.append(f"References: {references}")
    if extra:
        head.append(extra.rstrip("\n"))
    head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()
