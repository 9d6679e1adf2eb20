"""Configuration: one TOML file in the data directory, every key with a default.

The key registry below is the single source of truth: `dovetail init` writes it out commented
(like ``postconf -d``), ``dovetail config show`` prints what differs from it (like ``postconf -n``)
and ``dovetail config set`` validates against it before touching the file. tomlkit is used for
editing so an operator's comments and layout survive ``config set``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

CONFIG_NAME = "dovetail.toml"


class ConfigError(ValueError):
    """A config value was refused; the message names the key, the value and why."""

    def __init__(self, key: str, value: object, why: str) -> None:
        super().__init__(f"{key} = {value!r}: {why}")
        self.key, self.value, self.why = key, value, why


# --- value parsers -----------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``50M`` (binary units, as Postfix and Dovecot use)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10485760 or 10M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmgtKMGT]?)i?[bB]?\s*", str(value))
    if not m:
        raise ValueError("expected a size such as 10485760 or 10M")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``300s``, ``5d``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, 300s, 5m, 5d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwSMHDW]?)\s*", str(value))
    if not m:
        raise ValueError("expected a duration such as 300, 300s, 5m, 5d")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def parse_hostport(value: object) -> str:
    """``host:port`` (``[v6]:port`` for IPv6); an empty string disables the listener."""
    text = str(value).strip()
    if text == "":
        return ""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
    if not m:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:2525 or [::1]:2525")
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ValueError("port must be 1-65535")
    return text


def parse_listen(value: object) -> str:
    """A listener address: ``host:port`` as :func:`parse_hostport`, or ``unix:/absolute/path`` for a unix
    socket (lmtpd, as Postfix's ``lmtp:unix:`` and Dovecot's lmtp unix_listener)."""
    text = str(value).strip()
    if text.lower().startswith("unix:"):
        path = text[5:]
        if not path.startswith("/") or len(path.encode()) > 100:
            raise ValueError("expected unix:/absolute/path (at most 100 bytes)")
        return "unix:" + path
    return parse_hostport(text)


def split_hostport(value: str) -> tuple[str, int]:
    """Split a validated ``host:port`` into its parts."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"yes", "true", "on", "1"}:
        return True
    if text in {"no", "false", "off", "0"}:
        return False
    raise ValueError("expected yes/no or true/false")


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_str(value: object) -> str:
    return str(value)


def _cluster_secret(value: object) -> str:
    text = str(value).strip()
    if text and len(text) < 16:
        raise ValueError("cluster.secret: use at least 16 characters (e.g. openssl rand -hex 32)")
    return text


def _parse_networks(value: object) -> list[str]:
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not a network such as 10.0.0.0/8") from None
    return out


def _parse_addresses(value: object) -> list[str]:
    """IP addresses, as a list or a comma/space separated string."""
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_address(str(item).strip())))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    return out


def _parse_domain_list(value: object) -> list[str]:
    """Domain names (IDN accepted, kept as lowercase A-labels), as a list or a comma/space separated string."""
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        text = str(item).strip().rstrip(".").lower()
        try:
            text = text.encode("idna").decode("ascii") if not text.isascii() else text
        except UnicodeError:
            raise ValueError(f"{item!r} is not a domain name") from None
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,62}\.)*[a-z0-9_-]{1,63}", text) or "." not in text:
            raise ValueError(f"{item!r} is not a domain name such as lists.example.org")
        out.append(text)
    return out


def _parse_nameservers(value: object) -> list[str]:
    """``ip``, ``ip:port`` or ``[v6]:port`` items, as a list or a comma/space separated string."""
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        text = str(item).strip()
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?|([0-9a-fA-F:]+)", text)
        try:
            if not m:
                raise ValueError
            ipaddress.ip_address(m.group(1) or m.group(3) or m.group(5))
            port = int(m.group(2) or m.group(4) or 53)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"{text!r} is not a nameserver such as 192.0.2.53, 127.0.0.1:5353 or [::1]:53") from None
        out.append(text)
    return out


def _dnsbl_filter_ok(text: str) -> bool:
    """Four octets, each a number, ``[a..b]`` or ``[a;b;c]``, all within 0-255 (the MX parses them the same)."""
    parts = re.findall(r"\[[^\]]*\]|[^.]+", text)
    if len(parts) != 4 or "".join(parts).count("[") != "".join(parts).count("]"):
        return False
    for part in parts:
        inner = part[1:-1] if part.startswith("[") and part.endswith("]") else part
        if ".." in inner:
            low, _, high = inner.partition("..")
            if not (low.isdigit() and high.isdigit() and int(low) <= int(high) <= 255):
                return False
        elif not all(v.isdigit() and int(v) <= 255 for v in inner.split(";")):
            return False
    return True


def _parse_dnsbl_sites(value: object) -> list[str]:
    """postscreen's ``domain[=filter][*weight]`` items (the filter's octets are checked when the MX starts)."""
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        text = str(item).strip()
        m = re.fullmatch(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:=([0-9.\[\];]+))?(?:\*-?\d+)?", text)
        if not m or (m.group(1) and not _dnsbl_filter_ok(m.group(1))):
            raise ValueError(f"{text!r} is not a DNSBL site such as zen.spamhaus.org*3 or "
                             "bl.example=127.0.0.[2..11]*2")
        out.append(text)
    return out


def _fraction(value: object) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number between 0 and 1, e.g. 0.7") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError("expected a number between 0 and 1, e.g. 0.7")
    return number


def _one_of(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return text

    return parse


def _at_least(parse: Callable[[object], Any], low: float) -> Callable[[object], Any]:
    def checked(value: object) -> Any:
        result = parse(value)
        if result < low:
            raise ValueError(f"must be at least {low:g}")
        return result

    return checked


def _parse_milters(value: object) -> list[str]:
    """``inet:host:port`` / ``unix:/path`` items, as a list or a comma/space separated string."""
    items = value if isinstance(value, list) else [v for v in re.split(r"[,\s]+", str(value)) if v]
    out = []
    for item in items:
        text = str(item).strip()
        rest = text[5:] if text.startswith("inet:") else None
        if text.startswith("unix:/") and len(text) > 6:
            out.append(text)
            continue
        m = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d+)", rest or "")
        if not m or not 0 < int(m.group(3)) < 65536:
            raise ValueError(f"{text!r} is not a milter such as inet:127.0.0.1:11332 or unix:/run/milter.sock")
        out.append(text)
    return out


def _http_url(value: object) -> str:
    text = str(value).strip()
    if not text:
        return ""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11333")
    return text.rstrip("/")


def _nats_url(value: object) -> str:
    """Empty (off), or a ``nats://`` / ``tls://`` server URL with a host."""
    text = str(value).strip()
    if not text:
        return ""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("nats", "tls") or not parsed.hostname:
        raise ValueError("must be a nats:// or tls:// URL, e.g. nats://127.0.0.1:4222")
    return text


def _subject_prefix(value: object) -> str:
    """NATS subject tokens separated by dots: letters, digits, '-' and '_' (no wildcards or spaces)."""
    text = str(value).strip().strip(".")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", text):
        raise ValueError("must be subject tokens such as dovetail or acme.mail.events (no *, > or spaces)")
    return text


def _public_url(value: object) -> str:
    """An http(s) base URL with a host and no query, fragment or credentials; the trailing slash dropped."""
    text = str(value).strip()
    if text == "":
        return ""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an https:// (or http://) URL such as https://mail.example.com")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("the base URL takes no query or fragment")
    if parts.username is not None or any(c.isspace() for c in text):
        raise ValueError("the base URL takes no user name, password or spaces")
    return text.rstrip("/")


def _link_lifetime(value: object) -> float:
    seconds = parse_duration(value)
    if seconds < 30 * 86400:  # CAN-SPAM: an opt-out must work for 30 days after the message is sent
        raise ValueError("must be at least 30d")
    return seconds


_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
               "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_DEST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DEST_PATTERN = re.compile(rf"(?:\*\.)?{_DEST_LABEL}(?:\.{_DEST_LABEL})+")
DESTINATION_SETTINGS = ("concurrency", "rate")


def parse_rate(value: object) -> tuple[int, float] | None:
    """``N/unit`` (unit s, min, h or d, optionally ``N/30s``-style with a count) → (messages, seconds);
    empty or ``0`` means no limit (None). A rate below zero is refused."""
    if value is None or isinstance(value, bool):
        raise ValueError("expected a rate such as 600/min, 10/s or 5000/h (empty: no limit)")
    text = str(value).strip().lower().replace(" ", "")
    if text in ("", "0", "none"):
        return None
    m = re.fullmatch(r"(-?\d+)/(\d*)([a-z]+)", text)
    if not m or m.group(3) not in _RATE_UNITS:
        raise ValueError("expected a rate such as 600/min, 10/s or 5000/h (empty: no limit)")
    count = int(m.group(1))
    if count < 0:
        raise ValueError("a rate cannot be below zero")
    span = int(m.group(2) or 1) * _RATE_UNITS[m.group(3)]
    if span <= 0:
        raise ValueError("the time unit must be longer than zero")
    return (count, span) if count else None


def parse_destination_pattern(value: object) -> str:
    """A destination pattern: a domain (``gmail.com``: mail to that recipient domain) or ``*.suffix``
    (``*.google.com``: recipient domains or MX hosts under that suffix)."""
    text = str(value).strip().lower().rstrip(".")
    if not _DEST_PATTERN.fullmatch(text) or len(text) > 253:
        raise ValueError(f"destination {value!r}: expected a domain such as gmail.com or a pattern such as "
                         "*.google.com")
    return text


def _parse_destinations(value: object) -> dict[str, dict[str, Any]]:
    """The ``[outbound.destinations."PATTERN"]`` tables: per pattern a ``concurrency`` (at least 1)
    and/or a ``rate`` (see :func:`parse_rate`)."""
    if not isinstance(value, dict):
        raise ValueError('expected tables such as [outbound.destinations."gmail.com"] with concurrency and rate')
    out: dict[str, dict[str, Any]] = {}
    for raw_pattern, table in value.items():
        pattern = parse_destination_pattern(raw_pattern)
        if not isinstance(table, dict):
            raise ValueError(f"destination {raw_pattern!r}: expected a table with concurrency and/or rate")
        unknown = sorted(set(table) - set(DESTINATION_SETTINGS))
        if unknown:
            raise ValueError(f"destination {raw_pattern!r}: unknown setting {unknown[0]!r} "
                             f"(known: {', '.join(DESTINATION_SETTINGS)})")
        entry: dict[str, Any] = {}
        if "concurrency" in table:
            conc = table["concurrency"]
            if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
                raise ValueError(f"destination {raw_pattern!r}: concurrency {conc!r} must be a whole number "
                                 "of at least 1")
            entry["concurrency"] = conc
        if "rate" in table:
            try:
                parse_rate(table["rate"])
            except ValueError as exc:
                raise ValueError(f"destination {raw_pattern!r}: rate {table['rate']!r}: {exc}") from None
            entry["rate"] = str(table["rate"]).strip()
        if pattern in out:
            raise ValueError(f"destination {raw_pattern!r} is given twice")
        out[pattern] = entry
    return out


def _rate_value(value: object) -> str:
    parse_rate(value)
    return str(value).strip()


def _database_url(value: object) -> str:
    text = str(value).strip()
    if text and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", text):
        raise ValueError("expected empty (SQLite in the data directory), sqlite:///PATH or postgresql://...")
    return text


@dataclass(frozen=True)
class Key:
    """One config key: dotted name, default, parser/validator and a one-line description."""

    name: str
    default: Any
    parse: Callable[[object], Any]
    doc: str


def _k(name: str, default: Any, parse: Callable[[object], Any], doc: str) -> Key:
    return Key(name, default, parse, doc)


_size = parse_size
_dur = parse_duration
_int1 = _at_least(_parse_int, 1)
_int0 = _at_least(_parse_int, 0)

KEYS: list[Key] = [
    _k("server.hostname", "", _parse_str, "name in the SMTP greeting, HELO, Received: headers and the MX/SPF "
       "records `dovetail dns` prints (empty: this machine's FQDN)"),
    _k("server.user", "dovetail", _parse_str, "unprivileged user the workers run as when started as root"),
    _k("server.shutdown_grace", "30s", _dur, "on stop, time given to transactions and commands in flight"),
    _k("listen.smtp", "127.0.0.1:2525", parse_hostport, "MX listener (production: 0.0.0.0:25)"),
    _k("listen.submission", "127.0.0.1:2587", parse_hostport, "submission listener with STARTTLS (587)"),
    _k("listen.submissions", "", parse_hostport, "submission listener with implicit TLS (465); empty: off"),
    _k("listen.imap", "127.0.0.1:1143", parse_hostport, "IMAP listener (143)"),
    _k("listen.imaps", "", parse_hostport, "IMAP listener with implicit TLS (993); empty: off"),
    _k("listen.lmtp", "", parse_listen, "LMTP listener of a mailbox node, HOST:PORT or unix:/PATH (Postfix's "
       "lmtp:inet:/lmtp:unix: nexthop; 24 is LMTP's port); empty: off"),
    _k("listen.http", "127.0.0.1:8025", parse_hostport, "web admin and REST API"),
    _k("listen.https", "", parse_hostport,
       "web listener with TLS (443): SNI picks each name's certificate; TLS-ALPN-01 answered here; empty: off"),
    _k("listen.transfer", "", parse_hostport, "transfer endpoint of a mailbox node (HTTP, cluster.secret "
       "required): a tenant move on another node pulls this node's Maildirs from here; empty: off"),
    _k("database.url", "", _database_url, "empty: SQLite dovetail.db in the data directory; or postgresql://..."),
    _k("node.name", "", _parse_str, "this installation's name in the cluster's node list (`dovetail node add`); "
       "empty on a single installation"),
    _k("cluster.secret", "", _cluster_secret, "shared by every node of a cluster (the same value on every node; "
       "e.g. `openssl rand -hex 32`): signs the logins a node proxies to a mailbox's home node (IMAP), which "
       "trusts them only with the same secret and from a node's address, and authenticates node-to-node "
       "requests (tenant moves, see listen.transfer); empty: logins homed on another node are refused and no "
       "node-to-node requests"),
    _k("log.level", "info", _one_of("debug", "info", "warning", "error"), "lowest level logged"),
    _k("log.file", "log/dovetail.log", _parse_str,
       "also log to this file, relative to the data directory (\"-\": stderr only); reopened on SIGHUP/SIGUSR1"),
    _k("log.format", "text", _one_of("text", "json"), "text lines like mail.log, or JSON"),
    _k("tls.cert", "tls/cert.pem", _parse_str, "certificate chain, relative to the data directory"),
    _k("tls.key", "tls/key.pem", _parse_str, "private key, relative to the data directory"),
    _k("directory.cache_check_interval", "1s", _dur, "how often workers look for directory changes"),
    _k("directory.alias_depth_limit", 20, _int1, "maximal alias expansion depth (loop guard)"),
    _k("directory.default_postmaster", "", _parse_str,
       "where postmaster@/abuse@ go when a domain has no mailbox, alias or --postmaster for them"),
    _k("directory.default_quota", "0", _size, "quota of new mailboxes (0: unlimited)"),
    _k("auth.trusted_networks", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "clients that count as secure: plaintext AUTH/LOGIN allowed without TLS"),
    _k("smtp.max_message_size", "50M", _size, "largest message accepted (552 5.3.4 beyond)"),
    _k("smtp.max_recipients", 1000, _int1, "recipients per message (452 4.5.3 beyond)"),
    _k("smtp.max_line_length", 65536, _at_least(_parse_int, 1000), "longest DATA line accepted"),
    _k("smtp.max_command_length", 2048, _at_least(_parse_int, 512), "longest command line accepted"),
    _k("smtp.hard_error_limit", 20, _int1,
       "errors in one session before 421 4.7.0 and disconnect [smtpd_hard_error_limit]"),
    _k("smtp.soft_error_limit", 10, _int1,
       "errors in one session after which each error reply waits smtp.error_sleep (tarpit) [smtpd_soft_error_limit]"),
    _k("smtp.error_sleep", "1s", _dur, "delay of each error reply past smtp.soft_error_limit [smtpd_error_sleep_time]"),
    _k("smtp.max_connections", 1000, _int1, "concurrent SMTP connections per worker"),
    _k("smtp.max_connections_per_ip", 50, _int1, "concurrent SMTP connections per client IP (per smtpd worker)"),
    _k("smtp.idle_timeout", "300s", _at_least(_dur, 1), "cut off a client silent for this long"),
    _k("smtp.data_timeout", "600s", _at_least(_dur, 1), "longest DATA transfer"),
    _k("smtp.bare_lf", "normalize", _one_of("normalize", "reject"),
       "bare LF in DATA: store as CRLF (normalize) or answer 550 5.5.2 and disconnect (reject)"),
    _k("smtp.over_quota", "defer", _one_of("defer", "reject"), "452 4.2.2 (defer) or 552 5.2.2 (reject)"),
    _k("lmtp.allowed_networks", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "TCP clients lmtpd serves (LMTP has no authentication); others get 421 before the greeting"),
    # The queue's LMTP client (to mailbox nodes, and lmtp transport rules), as Postfix's lmtp(8).
    _k("lmtp.destination_concurrency", 20, _int1,
       "LMTP connections in use at once to one mailbox node or lmtp nexthop [lmtp_destination_concurrency_limit]"),
    _k("lmtp.connection_cache_time", "30s", _dur, "how long an idle LMTP connection is kept open for the next "
       "delivery to the same node (keep it below the node's smtp.idle_timeout; 0: a connection per delivery) "
       "[lmtp_connection_cache_time_limit]"),
    _k("queue.minimal_backoff", "300s", _at_least(_dur, 1), "first retry delay of a deferred message"),
    _k("queue.maximal_backoff", "4000s", _at_least(_dur, 1), "longest retry delay"),
    _k("queue.maximal_lifetime", "5d", _dur, "deferred messages bounce after this long"),
    _k("queue.bounce_lifetime", "5d", _dur, "lifetime of bounce messages"),
    _k("queue.delivery_concurrency", 20, _int1, "parallel deliveries"),
    # Per-destination shaping of outbound delivery (Postfix's smtp_destination_* limits). A destination
    # is a recipient domain, or the pattern of [outbound.destinations."PATTERN"] that matches it or its MX.
    _k("outbound.destination_concurrency", 20, _int1,
       "parallel SMTP sessions per destination [default_destination_concurrency_limit]"),
    _k("outbound.destination_rate", "", _rate_value,
       "deliveries per time unit per destination, e.g. 600/min (empty: no limit) [smtp_destination_rate_delay]"),
    _k("outbound.rate_wait_max", "10s", _dur,
       "longest a delivery waits for its turn under a rate limit; beyond it the mail is deferred (4.7.0)"),
    _k("outbound.throttle_pause", "60s", _at_least(_dur, 1),
       "first pause of a destination that answers 421 or 4.7.x; doubles while it keeps answering so"),
    _k("outbound.throttle_pause_max", "1h", _at_least(_dur, 1), "longest pause of a throttling destination"),
    _k("outbound.destinations", {}, _parse_destinations,
       'overrides per destination: [outbound.destinations."gmail.com"] concurrency = 10, rate = "600/min"'),
    # Outbound DANE (RFC 7672): trusts the AD bit of the resolver's answers, so it needs a local validating resolver.
    _k("outbound.dane", "off", _one_of("off", "on"),
       "honour TLSA records of MX hosts whose DNS answers the resolver validated (AD bit); off by default "
       "because the default resolver may not validate DNSSEC [smtp_tls_security_level = dane]"),
    _k("outbound.dane_resolver", [], _parse_nameservers,
       "validating resolver(s) for outbound MX, address and TLSA lookups when outbound.dane is on (ip, ip:port); "
       "empty: dns.nameservers. Must be local (127.0.0.1, e.g. unbound): its AD bit is believed as it is"),
    _k("imap.max_connections_per_user", 20, _int1, "concurrent IMAP sessions per user (across the imapd workers)"),
    _k("imap.max_connections_per_ip", 50, _int1, "concurrent IMAP sessions per client IP (across the imapd workers)"),
    _k("imap.autologout", "30m", _at_least(_dur, 60), "idle authenticated sessions are logged out"),
    _k("imap.max_literal_size", "50M", _size, "largest APPEND (APPENDLIMIT)"),
    # Sender authentication at the MX and the process-wide DNS resolver it shares with outbound MX lookups.
    _k("dns.nameservers", [], _parse_nameservers,
       "DNS servers every lookup of the process asks (ip, ip:port or [v6]:port); empty: the system resolver"),
    _k("dns.timeout", "5s", _at_least(_dur, 0.1),
       "a DNS lookup without an answer after this long is a temporary error (temperror)"),
    _k("mx.sender_auth", True, _parse_bool,
       "check SPF, DKIM and DMARC of incoming mail and add Authentication-Results (off: neither)"),
    _k("mx.sender_auth_exempt", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "clients whose mail the MX does not authenticate (local relays and filters); forged A-R are renamed anyway"),
    _k("mx.dmarc_enforce", True, _parse_bool,
       "apply senders' DMARC reject (550 5.7.1) and quarantine (Junk folder) for domains whose own and tenant's "
       "setting say nothing: `dovetail domain set D --dmarc-enforce`, `dovetail tenant set T --dmarc-enforce`"),
    _k("mx.arc_trusted_sealers", [], _parse_domain_list,
       "ARC sealers (d= domains, e.g. lists.example.org) whose dmarc=pass in a valid ARC chain keeps a DMARC "
       "fail from being enforced (policy.override=arc); empty: no override"),
    _k("mx.auth_temperror", "accept", _one_of("accept", "defer"),
       "a DMARC verdict that DNS could not give (temperror) for a sender publishing reject/quarantine: "
       "accept the message, or answer 451 4.7.5 so the sender retries"),
    # Content filtering at the end of DATA: milters (Postfix's smtpd_milters) and rspamd's HTTP protocol.
    _k("mx.milters", [], _parse_milters,
       "content filters spoken to with the milter protocol, in order: inet:host:port or unix:/path [smtpd_milters]"),
    _k("mx.milter_default_action", "tempfail", _one_of("accept", "reject", "tempfail"),
       "what a message gets when a milter is down, slow or answers garbage: 451 4.7.1 (tempfail), 550 5.7.1 "
       "(reject) or accepted unfiltered (accept) [milter_default_action]"),
    _k("mx.milter_connect_timeout", "30s", _at_least(_dur, 0.1), "connecting to a milter [milter_connect_timeout]"),
    _k("mx.milter_command_timeout", "30s", _at_least(_dur, 0.1),
       "a milter's answer to each envelope and header step [milter_command_timeout]"),
    _k("mx.milter_content_timeout", "300s", _at_least(_dur, 0.1),
       "a milter's answer to body chunks and end of message [milter_content_timeout]"),
    _k("mx.rspamd_url", "", _http_url,
       "rspamd's normal worker, e.g. http://127.0.0.1:11333 (empty: rspamd not asked); verdicts become X-Spam-* "
       "headers, an A-R spam= entry and the tenant's spam action"),
    _k("mx.rspamd_timeout", "20s", _at_least(_dur, 0.1), "longest wait for rspamd's verdict on one message"),
    _k("mx.rspamd_default_action", "tempfail", _one_of("accept", "reject", "tempfail"),
       "what a message gets when rspamd is down or slow: 451 4.7.1, 550 5.7.1 or accepted unfiltered"),
    # Direct delivery at the MX: local recipients committed into their Maildirs before 250, no queue file.
    _k("mx.direct_delivery", True, _parse_bool,
       "deliver a message whose recipients are all mailboxes of this node into their Maildirs before answering "
       "250, as lmtpd does (off: every message goes through the queue)"),
    # The MX's stress mode and screening stage (postscreen), both in front of the SMTP session. (Keys of
    # [mx] stay before those of [mx.screen]: the commented default file has one [mx] table.)
    _k("mx.stress_threshold", 0.7, _fraction,
       "stress mode past this share of smtp.max_connections: shorter timeouts, idle clients closed first (0: off)"),
    _k("mx.stress_idle_timeout", "10s", _at_least(_dur, 1), "command idle timeout under stress"),
    _k("mx.stress_error_limit", 1, _int1, "errors in one session before disconnect, under stress"),
    _k("mx.max_connections_per_network", 100, _int0,
       "concurrent MX connections per /24 (IPv4) or /64 (IPv6), per smtpd worker (0: no limit)"),
    # Abuse defence at the MX's commands, counted across the smtpd workers (Postfix's anvil limits,
    # smtpd_soft/hard_error_limit and a postgrey-style greylist). Rates are per minute; 0 turns one off.
    _k("mx.rate.connections_per_ip", 60, _int0,
       "connections per minute from one client IP; beyond: 421 4.7.0 [smtpd_client_connection_rate_limit]"),
    _k("mx.rate.connections_per_network", 300, _int0,
       "connections per minute from one /24 (IPv4) or /64 (IPv6); beyond: 421 4.7.0"),
    _k("mx.rate.messages_per_ip", 100, _int0,
       "MAIL FROM per minute from one client IP; beyond: 450 4.7.1 [smtpd_client_message_rate_limit]"),
    _k("mx.rate.messages_per_network", 300, _int0, "MAIL FROM per minute from one /24 or /64; beyond: 450 4.7.1"),
    _k("mx.rate.recipients_per_ip", 1000, _int0,
       "RCPT TO per minute from one client IP; beyond: 450 4.7.1 [smtpd_client_recipient_rate_limit]"),
    _k("mx.rate.exempt", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "clients no MX rate limit counts (local relays, filters, benchmarks); authenticated sessions neither"),
    _k("mx.greylist.enabled", False, _parse_bool,
       "greylist mail to every domain (451 4.7.1 at RCPT until the client retries); per tenant/domain: "
       "`dovetail tenant|domain set NAME --greylist on|off|inherit`"),
    _k("mx.greylist.delay", "5m", _dur, "a retry of the same (network, sender, recipient) passes after this long"),
    _k("mx.greylist.retry_window", "2d", _at_least(_dur, 60),
       "a triplet not retried within this long is forgotten (postgrey's --retry-window)"),
    _k("mx.greylist.max_age", "35d", _at_least(_dur, 60),
       "triplets and auto-allowed clients not seen for this long are forgotten (postgrey's --max-age)"),
    _k("mx.greylist.auto_allow_clients", 5, _int0,
       "a client network passes greylisting after this many successful retries (0: never) "
       "[postgrey --auto-whitelist-clients]"),
    _k("mx.greylist.exempt", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "clients never greylisted (trusted networks, local relays); authenticated sessions neither"),
    # The screening stage (postscreen) in front of the SMTP session.
    _k("mx.screen.allow", ["127.0.0.0/8", "::1/128"], _parse_networks,
       "clients that skip screening (no greet wait, no DNSBL): local relays and filters; loopback by default"),
    _k("mx.screen.deny", [], _parse_networks, "clients refused at connect (554 5.7.1, logged DENYLISTED)"),
    _k("mx.screen.greet_wait", "6s", _dur,
       "a new client sees `220-` and this much silence; one that talks meanwhile is a PREGREET (0: no test)"),
    _k("mx.screen.pregreet_action", "reject", _one_of("reject", "drop"),
       "a client that talked before the banner: answered 550 5.5.1 Protocol error, or dropped without a word"),
    _k("mx.screen.dnsbl_sites", [], _parse_dnsbl_sites,
       'DNSBL/DNSWL sites in postscreen\'s syntax, e.g. ["zen.spamhaus.org*3", '
       '"list.dnswl.org=127.0.[0..255].[1..3]*-5"] (empty: no lookups)'),
    _k("mx.screen.dnsbl_threshold", 1, _parse_int, "a client whose summed DNSBL weights reach this is refused"),
    _k("mx.screen.dnsbl_action", "reject", _one_of("reject", "defer"),
       "a client over the DNSBL threshold: 550 5.7.1 (reject) or 421 4.7.1 (defer)"),
    _k("mx.screen.cache_ttl", "1d", _dur, "a client that passed skips the greet wait and DNSBL for this long"),
    _k("mx.screen.dnsbl_ttl", "1h", _dur, "a client's DNSBL score is reused for this long"),
    _k("mx.screen.cache_size", 100000, _int1, "clients the screening cache (run/screen.sqlite) keeps at most"),
    _k("web.public_url", "", _public_url,
       "public base URL of the web listener, e.g. https://mail.example.com (empty: bulk mail carries only the "
       "mailto: List-Unsubscribe, no RFC 8058 one-click link)"),
    _k("web.unsubscribe_link_lifetime", "365d", _link_lifetime,
       "how long a one-click unsubscribe link works after the message was sent (at least 30d)"),
    _k("forwarding.srs", True, _parse_bool,
       "mail an alias forwards to another domain leaves with an SRS0/SRS1 envelope sender of the alias's domain"),
    _k("forwarding.srs_max_age", "21d", _at_least(_dur, 86400),
       "how long a bounce to an SRS address is routed back (older ones are refused 550 5.7.1)"),
    _k("forwarding.arc_seal", True, _parse_bool,
       "forwarded mail is ARC-sealed (RFC 8617) with the DKIM key of the alias's domain, when it has one"),
    _k("events.nats_url", "", _nats_url,
       "NATS server events are published to for endpoints added as `nats:` (nats://host:4222, tls://...); "
       "empty: off"),
    _k("events.nats_stream", "DOVETAIL_EVENTS", _parse_str, "JetStream stream the events go to (created when missing)"),
    _k("events.nats_subject_prefix", "dovetail", _subject_prefix,
       "events are published to <prefix>.<tenant>.<event type>, e.g. dovetail.acme.reply.received"),
    _k("replies.webhook_allow_private", False, _parse_bool,
       "let webhooks target loopback, private and link-local addresses (default: refused, against SSRF)"),
    # --- certificates (ACME, RFC 8555) ---
    _k("acme.directory_url", "https://acme-v02.api.letsencrypt.org/directory", _parse_str,
       "ACME directory of the CA (Let's Encrypt staging: https://acme-staging-v02.api.letsencrypt.org/directory)"),
    _k("acme.email", "", _parse_str, "contact address of the ACME account (expiry notices from the CA)"),
    _k("acme.ca_bundle", "", _parse_str,
       "PEM file of CA roots trusted for the ACME directory's HTTPS (a test CA); empty: the system's"),
    _k("acme.challenge", "http-01", _one_of("http-01", "tls-alpn-01", "dns-01"),
       "challenge answered by default: http-01 (port 80), tls-alpn-01 (port 443) or dns-01 (acme.dns01_hook)"),
    _k("acme.http01_listen", "", parse_hostport,
       "extra plain-HTTP listener of the web service for HTTP-01 (production: 0.0.0.0:80, bound by the master)"),
    _k("acme.http01_port", 80, _at_least(_parse_int, 1),
       "port the CA connects to for HTTP-01 (the pre-order self-check asks the same port)"),
    _k("acme.dns01_hook", "", _parse_str,
       "command run for DNS-01 as HOOK add|remove DOMAIN VALUE: publish/withdraw TXT _acme-challenge.DOMAIN"),
    _k("acme.public_addresses", [], _parse_addresses,
       "this server's public IPs; a name is ordered only if its A/AAAA records are among them "
       "(empty: an HTTP-01 self-check instead)"),
    _k("acme.auto", False, _parse_bool,
       "the certs service also obtains missing certificates: the server hostname and, per enabled domain, "
       "mail.<domain> and mta-sts.<domain>"),
    _k("acme.autoconfig", False, _parse_bool, "with acme.auto, also autoconfig.<domain> for each domain"),
    _k("acme.check_interval", "1h", _at_least(_dur, 1),
       "how often the certs service looks for certificates to obtain or renew (renewal at 2/3 of lifetime)"),
    _k("acme.retry_base", "10m", _at_least(_dur, 1),
       "first retry delay after a failed order; doubles per failure up to acme.retry_max"),
    _k("acme.retry_max", "1d", _at_least(_dur, 1), "longest retry delay after failed orders"),
]

KEY_INDEX: dict[str, Key] = {k.name: k for k in KEYS}


def _lookup(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


_TABLE_KEYS = frozenset({"outbound.destinations"})


def _flatten(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in doc.items():
        dotted = f"{prefix}{name}"
        if dotted in _TABLE_KEYS:  # a table valued key: its sub-tables are named by patterns, not keys
            yield dotted, value
        elif isinstance(value, dict) and not dotted.startswith("services.") and dotted != "services":
            yield from _flatten(value, dotted + ".")
        elif dotted == "services" and isinstance(value, dict):
            for svc, table in value.items():
                yield f"services.{svc}", table
        else:
            yield dotted, value


@dataclass
class Config:
    """The effective configuration of one data directory: defaults overlaid with dovetail.toml."""

    data_dir: Path
    values: dict[str, Any] = field(default_factory=dict)
    explicit: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # from the command line; survive reloads

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def path(self, key: str) -> Path:
        """A path-valued key resolved against the data directory."""
        return self.data_dir / self.values[key]

    @property
    def hostname(self) -> str:
        return self.values["server.hostname"] or machine_hostname()

    @property
    def database_url(self) -> str:
        return self.values["database.url"] or f"sqlite:///{(self.data_dir / 'dovetail.db').resolve()}"


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def machine_hostname() -> str:
    """This machine's name, the default of ``server.hostname``: ``socket.getfqdn()``, or
    ``socket.gethostname()`` when that finds only a loopback name (``127.0.0.1 localhost vm`` in
    /etc/hosts makes getfqdn() answer ``localhost`` on a host called ``vm``)."""
    fqdn = socket.getfqdn().rstrip(".")
    if fqdn and fqdn.lower() not in _LOOPBACK_NAMES:
        return fqdn
    return socket.gethostname().rstrip(".") or fqdn or "localhost"


def hostname_warning(hostname: str) -> str | None:
    """Why ``hostname`` will not do as the name the world sees, or None when it looks like one."""
    if hostname.lower() in _LOOPBACK_NAMES:
        why = "is a loopback name"
    elif "." not in hostname.strip("."):
        why = "has no dot"
    else:
        return None
    return (f"server.hostname {hostname!r} {why}: the SMTP greeting, the HELO name and the MX/SPF records "
            "`dovetail dns` prints use it; set the mail name with "
            "`dovetail config set server.hostname=mail.example.com`")


def validate(key: str, raw: object) -> Any:
    """Parse one value for ``key``; raises ConfigError naming key, value and why."""
    spec = KEY_INDEX.get(key)
    if spec is None:
        raise ConfigError(key, raw, "unknown key (see `dovetail config show --all`)")
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ConfigError(key, raw, str(exc)) from None


def load(data_dir: Path) -> Config:
    """Read ``<data_dir>/dovetail.toml`` (missing file: all defaults); refuse bad values."""
    path = data_dir / CONFIG_NAME
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomlkit.parse(path.read_text()).unwrap()
        except tomlkit.exceptions.ParseError as exc:
            raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    cfg = Config(data_dir=data_dir)
    for spec in KEYS:
        cfg.values[spec.name] = spec.parse(spec.default)
    for dotted, raw in _flatten(doc):
        if dotted.startswith("services."):
            cfg.extra[dotted] = raw
            continue
        cfg.values[dotted] = validate(dotted, raw)
        cfg.explicit[dotted] = raw
    if not cfg.values["server.hostname"]:  # the default, resolved here so `config show --all` prints it
        cfg.values["server.hostname"] = machine_hostname()
    return cfg


def default_file_text() -> str:
    """The commented config written by ``dovetail init``: every key with its default."""
    lines = [
        "# Dovetail configuration. Every key has a default; uncomment to change one.",
        "# `dovetail config show` prints what differs from the defaults, `--all` everything.",
        "# `dovetail config set key=value` edits this file and validates the value.",
    ]
    section = None
    for spec in KEYS:
        sect, _, name = spec.name.rpartition(".")
        if sect != section:
            lines += ["", f"[{sect}]"]
            section = sect
        lines.append(f"# {spec.doc}")
        if spec.name in _TABLE_KEYS:  # a table of tables: an example, since its default is empty
            lines += [f'# [{spec.name}."gmail.com"]', "# concurrency = 10", '# rate = "600/min"']
            continue
        lines.append(f"# {name} = {tomlkit.item(spec.default).as_string()}")
    return "\n".join(lines) + "\n"


def set_value(data_dir: Path, key: str, raw: str) -> Any:
    """Validate and write ``key = raw`` into dovetail.toml, keeping the file's comments."""
    spec = KEY_INDEX.get(key)
    if spec is None:
        raise ConfigError(key, raw, "unknown key (see `dovetail config show --all`)")
    parsed = validate(key, raw)
    path = data_dir / CONFIG_NAME
    doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    # Store the operator's spelling ("50M", "5d") when it parses, the typed value otherwise.
    stored: Any
    if isinstance(spec.default, bool):
        stored = parsed
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
        stored = parsed
    elif isinstance(spec.default, list):
        stored = parsed
    else:
        stored = raw
    sect, _, name = key.rpartition(".")
    table = doc
    for part in sect.split("."):
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    table[name] = stored
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.replace(tmp, path)
    return parsed


def render_value(value: Any) -> str:
    """A value as TOML would spell it, for ``config show`` (tables inline, on one line)."""
    return _inline(value).as_string() if isinstance(value, dict) else tomlkit.item(value).as_string()


def _inline(table: dict[str, Any]) -> Any:
    out = tomlkit.inline_table()
    for key, value in table.items():
        out[key] = _inline(value) if isinstance(value, dict) else value
    return out
