"""``dovetail screen``: what the MX knows of a client address (postscreen's log lines and cache, as a command).

``show IP`` prints one section per kind of state; each section is a function of its own in
``SECTIONS`` (name, function returning rows), so more MX state (rate limits, greylisting) joins the
same command by adding a function. ``flush [IP]`` forgets the screening verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .context import Context, emit_json, fail

screen_app = typer.Typer(help="The MX's screening state of a client address (like postscreen's cache).",
                         no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LookupOpt = Annotated[bool, typer.Option("--lookup", help="Also ask the DNSBL/DNSWL sites now.")]

Section = Callable[[Context, str, bool], dict[str, Any]]


def _when(ts: float) -> str | None:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else None


def _cache_file(c: Context) -> Path:
    from ..intake.screen.cache import cache_path

    return cache_path(c.layout.run)


@contextlib.contextmanager
def _cache(c: Context):  # noqa: ANN202
    """The workers' cache file, or None when no worker made one yet (the CLI does not create it: run as root,
    it would be root's). Files SQLite makes beside it stay the service user's."""
    from ..intake.screen.cache import ScreenCache

    path = _cache_file(c)
    if not path.exists():
        yield None
        return
    owner = path.stat()
    cache = ScreenCache(path)
    try:
        yield cache
    finally:
        cache.close()
        for extra in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):
                st = extra.stat()
                if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                    os.chown(extra, owner.st_uid, owner.st_gid)


def _networks_matching(ip: str, networks: list[str]) -> list[str]:
    from ..mailauth.networks import in_networks, parse_networks

    return [str(n) for n in parse_networks(networks) if in_networks(ip, [n])]


def screening_section(c: Context, ip: str, lookup: bool) -> dict[str, Any]:
    """Allow/deny match, the cached verdict and DNSBL score (and, with ``--lookup``, the score now)."""
    cfg = c.config
    out: dict[str, Any] = {"allowlisted": _networks_matching(ip, cfg["mx.screen.allow"]) or None,
                           "denylisted": _networks_matching(ip, cfg["mx.screen.deny"]) or None}
    with _cache(c) as cache:
        entry = cache.get(ip) if cache is not None else None
    if entry is None:
        out["cache"] = None
    else:
        out["cache"] = {"verdict": entry.verdict, "detail": entry.detail or None, "last_seen": _when(entry.seen),
                        "passes_tests_until": _when(entry.pass_until),
                        "dnsbl_score": entry.score, "dnsbl_score_until": _when(entry.dnsbl_until)}
    out["dnsbl_threshold"] = cfg["mx.screen.dnsbl_threshold"]
    if lookup:
        out["dnsbl_now"] = _lookup_now(c, ip)
    return out


def _lookup_now(c: Context, ip: str) -> dict[str, Any]:
    from ..intake.screen.dnsbl import lookup
    from ..intake.screen.sites import parse_sites
    from ..mailauth.dns import Resolver

    cfg = c.config
    try:
        sites = parse_sites(cfg["mx.screen.dnsbl_sites"])
    except ValueError as exc:
        fail(f"mx.screen.dnsbl_sites: {exc}")
    if not sites:
        return {"score": 0, "listed_by": [], "note": "mx.screen.dnsbl_sites is empty"}
    result = asyncio.run(lookup(Resolver(cfg["dns.nameservers"], cfg["dns.timeout"]), sites, ip))
    return {"score": result.total, "listed_by": result.hits, "ignored_error_codes": result.ignored}


def rates_section(c: Context, ip: str, lookup: bool) -> dict[str, Any]:
    """The client's and its network's rates per minute as the MX workers counted them, with the limits."""
    from ..intake.ratelimit import rate_state

    return dict(rate_state(c.config, ip))


def greylist_section(c: Context, ip: str, lookup: bool) -> dict[str, Any]:
    """The greylist's entries for the client's network: its client record and its triplets."""
    from ..intake.greylist import greylist_state

    entries = greylist_state(c.config, ip, c.engine)
    return {f"{e['kind']} {n}": e for n, e in enumerate(entries, 1)} or {"entries": None}


SECTIONS: list[tuple[str, Section]] = [("screening", screening_section), ("rate limits", rates_section),
                                       ("greylist", greylist_section)]


def _address(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        fail(f"{ip!r} is not an IP address")


def _print(value: Any, indent: str = "  ") -> None:
    for key, item in value.items():
        if isinstance(item, dict):
            print(f"{indent}{key}:")
            _print(item, indent + "  ")
        elif isinstance(item, list):
            print(f"{indent}{key}: {', '.join(map(str, item)) if item else '-'}")
        else:
            print(f"{indent}{key}: {'-' if item is None else item}")


@screen_app.command("show")
def screen_show(ctx: typer.Context, ip: str, lookup: LookupOpt = False, as_json: JsonOpt = False) -> None:
    """What the MX knows of IP: allow/deny match, screening verdict, DNSBL score."""
    c: Context = ctx.obj
    address = _address(ip)
    shown = {name: section(c, address, lookup) for name, section in SECTIONS}
    if as_json:
        emit_json({"ip": address, **shown})
        return
    print(f"client [{address}]")
    for name, rows in shown.items():
        print(f"{name}:")
        _print(rows)


@screen_app.command("flush")
def screen_flush(ctx: typer.Context, ip: Annotated[str | None, typer.Argument()] = None) -> None:
    """Forget the screening verdict of IP (or of every client): it is tested again at its next connection."""
    c: Context = ctx.obj
    c.require_init()
    address = _address(ip) if ip is not None else None
    with _cache(c) as cache:
        gone = cache.flush(address) if cache is not None else 0
    print(f"{gone} screening cache entr{'y' if gone == 1 else 'ies'} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(screen_app, name="screen")
