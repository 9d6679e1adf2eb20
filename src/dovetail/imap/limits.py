"""Every size, count and time an IMAP client controls, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Limits of one IMAP service; the defaults follow Dovecot's and RFC 3501's."""

    max_line: int = 64 * 1024
    """Longest command line (without its literals), like Dovecot's imap_max_line_length."""
    max_literal: int = 50 * 1024 * 1024
    """Largest literal once logged in; advertised as APPENDLIMIT."""
    max_literal_unauth: int = 8 * 1024
    """Largest literal before authentication (a LOGIN password, a SASL response)."""
    max_command: int = 64 * 1024 * 1024
    """Largest command, lines and literals together."""
    max_connections_per_user: int = 10
    max_connections_per_ip: int = 50
    idle_timeout: float = 30 * 60.0
    """Autologout after this many seconds without a command (RFC 3501 asks for at least 30 minutes)."""
    unauth_timeout: float = 60.0
    """Autologout before authentication, counted from the last complete command."""
    login_timeout: float = 180.0
    """Longest time from connect to a successful login."""
    write_timeout: float = 300.0
    """Disconnect a client that does not read its responses for this long."""
    max_bad_commands: int = 20
    """BAD responses in one session before the server says BYE."""
    idle_poll: float = 0.25
    """Seconds between mailbox change checks while a client IDLEs."""
    max_idle_time: float = 29 * 60.0
    """Longest IDLE before the server ends it with BYE (clients re-IDLE every 29 minutes)."""
    max_auth_attempts: int = 3
    """Failed logins in one connection before BYE."""
    auth_fail_base_delay: float = 0.2
    """First delay after a failed login; it doubles with each failure of the same user or IP."""
    auth_fail_max_delay: float = 15.0
    auth_fail_lockout: int = 10
    """Recent failures of one user or IP after which logins answer NO [UNAVAILABLE]."""
    auth_fail_window: float = 300.0
    """Seconds a failure counts toward the penalty."""
