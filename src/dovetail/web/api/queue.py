"""The mail queue over the REST API: ``postqueue -p``, ``postcat -q``, ``postsuper -h/-H/-d``, ``postqueue -f``.

The queue is shared by all tenants, so these routes are for admin callers only (403 otherwise).
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from ...config import Config
from ...httpapi.deps import Scope, get_admin_scope
from ...httpapi.problems import Problem
from ...log import log_file
from ...queue import Queue
from ..context import WebContext, get_ctx
from ..pagination import PageParams, page_params, paginate
from . import models as m

router = APIRouter(tags=["queue"])

STORY_BYTES = 8 * 1024 * 1024  # how much of the log tail is searched for a message's story


def queue_of(ctx: WebContext) -> Queue:
    return ctx.queue


def entry_out(entry: Any) -> dict[str, Any]:
    out = asdict(entry)
    out["recipients"] = [{"address": r["address"], "status": r.get("status"), "reason": r.get("reason")}
                         for r in out["recipients"]]
    return out


def _valid_qid(qid: str) -> str:
    from ...queue import is_queue_id

    if not is_queue_id(qid):
        raise Problem(404, "Not Found", "no such queued message")
    return qid


def story(cfg: Config, qid: str, limit: int = 500) -> list[str]:
    """The log lines of one queue id from ``log.file`` (the way ``grep QID mail.log`` works)."""
    path = log_file(cfg.get("log.file") or "", cfg.data_dir)
    if path is None:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - STORY_BYTES))
            data = fh.read()
    except OSError:
        return []
    needle = f"{qid}:".encode()
    lines = [line.decode("utf-8", "replace") for line in data.splitlines() if needle in line]
    return lines[-limit:]


def message_headers(raw: bytes, limit: int = 200) -> list[tuple[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    return [(k, str(v)) for k, v in list(msg.items())[:limit]]


@router.get("/queue", response_model=m.QueuePage)
def list_queue(state: str | None = Query(None, pattern="^(incoming|active|deferred|hold|corrupt)$"),
               q: str | None = Query(None, max_length=320, description="sender or recipient substring"),
               page: PageParams = Depends(page_params), scope: Scope = Depends(get_admin_scope),
               ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    entries = queue_of(ctx).list_messages()
    if state:
        entries = [e for e in entries if e.state == state]
    if q:
        needle = q.lower()
        entries = [e for e in entries if needle in e.sender.lower()
                   or any(needle in r.address.lower() for r in e.recipients)]
    result = paginate(entries, lambda e: e.queue_id, page)
    result["items"] = [entry_out(e) for e in result["items"]]
    return result


@router.get("/queue/{qid}", response_model=m.QueueMessage)
def show_queued(qid: str, scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    shown = _show(ctx, qid)
    out = entry_out(shown.entry)
    out["headers"] = message_headers(shown.message)
    out["log"] = story(ctx.cfg, qid)
    return out


def _show(ctx: WebContext, qid: str) -> Any:
    try:
        return queue_of(ctx).show(_valid_qid(qid))
    except (KeyError, ValueError):
        raise Problem(404, "Not Found", "no such queued message") from None


@router.get("/queue/{qid}/raw", response_class=Response,
            responses={200: {"content": {"message/rfc822": {}}, "description": "the message as queued"}})
def raw_queued(qid: str, scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> Response:
    return Response(_show(ctx, qid).message, media_type="message/rfc822",
                    headers={"Content-Disposition": f'attachment; filename="{qid}.eml"'})


def _act(ctx: WebContext, qid: str, action: str) -> dict[str, int]:
    queue = queue_of(ctx)
    _valid_qid(qid)
    try:
        n = getattr(queue, action)(qid)
    except ValueError:
        raise Problem(404, "Not Found", "no such queued message") from None
    if n == 0:
        raise Problem(404, "Not Found", f"no queued message {qid} to {action}")
    return {"affected": n}


@router.post("/queue/{qid}/hold", response_model=m.QueueAction)
def hold(qid: str, scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _act(ctx, qid, "hold")


@router.post("/queue/{qid}/release", response_model=m.QueueAction)
def release(qid: str, scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _act(ctx, qid, "release")


@router.delete("/queue/{qid}", response_model=m.QueueAction)
def delete(qid: str, scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _act(ctx, qid, "delete")


@router.post("/queue/flush", response_model=m.QueueAction)
def flush(scope: Scope = Depends(get_admin_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return {"affected": queue_of(ctx).flush()}
