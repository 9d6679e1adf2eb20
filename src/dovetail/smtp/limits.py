"""Limits on everything an SMTP peer controls: sizes, counts and times. Defaults follow Postfix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BareLfMode = Literal["normalize", "reject"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-listener limits.

    ``bare_lf``: ``"normalize"`` (Postfix's ``smtpd_forbid_bare_newline = normalize``, its 3.9 default)
    accepts a line ending in a bare LF and stores it as CRLF, but only ``<CR><LF>.<CR><LF>`` ends DATA,
    so ``<LF>.<LF>`` smuggling never splits a message. ``"reject"`` answers ``550 5.5.2 Error: bare <LF>
    received`` and disconnects, as Postfix's ``reject`` does. Bare LF inside a BDAT chunk is left alone:
    chunks are counted octets, not lines, so they cannot be smuggled through.
    """

    max_message_size: int = 50 * 1024 * 1024  # message_size_limit (octets, after dot-unstuffing)
    max_recipients: int = 1000  # smtpd_recipient_limit
    max_command_line: int = 2048  # octets incl. CRLF; RFC 5321's 512 grows with SIZE/DSN/SMTPUTF8 params
    max_auth_line: int = 12288  # SASL responses are longer than commands
    max_line_length: int = 65536  # one message line incl. CRLF; 0 disables
    max_errors: int = 20  # smtpd_hard_error_limit: then 421 4.7.0 and disconnect
    soft_error_limit: int = 10  # smtpd_soft_error_limit: past this many errors each error reply waits...
    error_sleep: float = 1.0  # ...this long (smtpd_error_sleep_time), a tarpit for address harvesters
    max_junk_commands: int = 100  # smtpd_junk_command_limit: NOOP/RSET/VRFY/HELP beyond this count as errors
    max_connections: int = 1000  # per server (per worker process)
    max_connections_per_ip: int = 50  # smtpd_client_connection_count_limit
    idle_timeout: float = 300.0  # smtpd_timeout: max wait for one complete command line
    data_timeout: float = 300.0  # max silence while message data flows
    max_data_time: float = 1800.0  # max total time for one message's data
    tls_handshake_timeout: float = 30.0
    chunk_size: int = 64 * 1024  # DataChunk / sink write size
    read_buffer_high: int = 256 * 1024  # pause reading above this many unparsed octets
    bare_lf: BareLfMode = "normalize"
    # Stress mode (Postfix's): past ``stress_threshold`` x ``max_connections`` (0: never) the command idle
    # timeout becomes ``stress_idle_timeout`` and the error limit ``stress_max_errors``; at the cap, a new
    # connection takes the slot of the oldest one that has not sent MAIL FROM.
    stress_threshold: float = 0.0
    stress_idle_timeout: float = 10.0
    stress_max_errors: int = 1
    max_connections_per_network: int = 0  # per /24 (IPv4) or /64 (IPv6); 0: no limit

    def __post_init__(self) -> None:
        if self.bare_lf not in ("normalize", "reject"):
            raise ValueError(f"bare_lf must be 'normalize' or 'reject', not {self.bare_lf!r}")
        if self.max_command_line < 64 or self.chunk_size < 512:
            raise ValueError("max_command_line >= 64 and chunk_size >= 512 are required")
        if not 0.0 <= self.stress_threshold <= 1.0:
            raise ValueError("stress_threshold must lie between 0 and 1")
