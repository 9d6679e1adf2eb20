"""MTA-STS policy hosting (RFC 8461 §3.3): ``GET /.well-known/mta-sts.txt`` on ``mta-sts.<domain>``.

Senders fetch the policy of a domain from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``; the
``mta-sts.<domain>`` record ``dovetail dns`` publishes points that name at us. The route is chosen by
the Host header: a domain we serve gets its policy (the text whose hash is the ``id=`` of its
``_mta-sts`` record, so what is served and what DNS announces never disagree), any other name a 404.
No login and no CSRF: the senders asking are other mail servers. The router is mounted before every
other one, so the UI's pages and redirects never stand in front of it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..directory import DirectoryError
from .context import WebContext, get_ctx
from .integrations import dns_planner

router = APIRouter(include_in_schema=False)

PREFIX = "mta-sts."
POLICY_PATH = "/.well-known/mta-sts.txt"


def host_domain(host: str) -> str | None:
    """The domain of an ``mta-sts.<domain>[:port]`` Host header, else None."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal is no mta-sts name
        return None
    name = name.rsplit(":", 1)[0].rstrip(".")
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        return None
    return name[len(PREFIX):]


def _not_found() -> Response:
    return Response("no MTA-STS policy is served for this name\n", status_code=404, media_type="text/plain")


@router.get(POLICY_PATH)
def policy(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    domain = host_domain(request.headers.get("host", ""))
    if domain is None:
        return _not_found()
    try:
        info = ctx.directory.domain_get(domain)
    except DirectoryError:
        return _not_found()
    if not info.enabled:
        return _not_found()
    body = dns_planner(ctx.cfg, ctx.engine).mta_sts_policy(info.name)
    return Response(body, media_type="text/plain", headers={"Cache-Control": "max-age=300"})
