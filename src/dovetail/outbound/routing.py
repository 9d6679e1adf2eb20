"""Which transport rule applies to one recipient of one message: the precedence table, as a pure function.

First match wins, in this order:

1. recipient domain, exact   ``partner.example``    as Postfix's ``transport_maps``
2. recipient subdomains      ``.partner.example``   nearest parent first; not the domain itself
3. sender address            ``ceo@acme.example``   as ``sender_dependent_relayhost_maps``
4. sender domain             ``acme.example``       (``@acme.example`` there); one of ours
5. tenant                    ``acme``               the message's tenant, else the sender domain's
6. default                   ``*``                  as ``relayhost``
7. no rule                                          straight to the recipient's MX

Why this order: in Postfix the transport table overrules ``sender_dependent_relayhost_maps``, which
overrules ``relayhost``; a destination that must be reached one particular way (a partner behind a
VPN relay, a provider that only takes our mail through its own gateway) needs that route whoever
sends. A wildcard ``.example.com`` matches subdomains only, as in transport(5) without
``parent_domain_matches_subdomains``, so ``example.com`` and ``.example.com`` can differ. The ``*``
entry plays ``relayhost``'s part, the default, and comes after the sender and tenant rules: Postfix's
``*`` in transport_maps would instead shadow every sender-dependent relay, which nobody who writes
a tenant rule wants.

No I/O here: the caller hands in normalised names and the table's keys, so the order can be tested
on its own (and is, with hypothesis).
"""

from __future__ import annotations

from collections.abc import Container, Iterator

# (scope, match) keys, as stored in the transports table
Key = tuple[str, str]

SCOPES = ("recipient", "sender", "domain", "tenant", "default")

_DESCRIPTIONS = {
    "sender": "sender address",
    "domain": "sender domain",
    "tenant": "tenant",
    "default": "default",
}


def describe(scope: str, match: str) -> str:
    """What kind of rule a key is, in words: ``recipient domain``, ``recipient subdomains``, ..."""
    if scope == "recipient":
        return "recipient subdomains" if match.startswith(".") else "recipient domain"
    return _DESCRIPTIONS.get(scope, scope)


def candidates(sender: str, recipient_domain: str, tenant: str | None) -> Iterator[Key]:
    """Every key that could apply, most specific first.

    ``sender`` is a normalised address or empty (the null sender), ``recipient_domain`` an A-label or
    empty (a sender-side question such as which relay a domain's mail leaves through), ``tenant`` the
    normalised tenant name or None.
    """
    if recipient_domain:
        yield ("recipient", recipient_domain)
        labels = recipient_domain.split(".")
        for i in range(1, len(labels) - 1):  # ".example.com", never the bare top-level ".com"
            yield ("recipient", "." + ".".join(labels[i:]))
    if sender:
        yield ("sender", sender)
        domain = sender.rpartition("@")[2]
        if domain:
            yield ("domain", domain)
    if tenant:
        yield ("tenant", tenant)
    yield ("default", "*")


def choose(table: Container[Key], sender: str, recipient_domain: str, tenant: str | None) -> Key | None:
    """The key of the rule that applies, or None for straight to the recipient's MX."""
    return next((key for key in candidates(sender, recipient_domain, tenant) if key in table), None)
