"""The web service's part in certificates: HTTP-01 answers, the Certificates page, days to expiry in /metrics."""

from __future__ import annotations

from dovetail.certs.challenges import ChallengeFiles
from dovetail.certs.store import CertStore
from dovetail.datadir import Layout
from dovetail.web import auth

from ..certs.helpers import make_pair
from .conftest import WebEnv
from .test_ui import _login


def test_http01_answers_only_tokens_of_an_order_under_way(web_sqlite: WebEnv) -> None:
    files = ChallengeFiles(Layout(web_sqlite.cfg.data_dir).tls / "acme")
    path = files.http01_put("tok_en-1", "tok_en-1.thumb")
    got = web_sqlite.client.get("/.well-known/acme-challenge/tok_en-1")
    assert got.status_code == 200 and got.text == "tok_en-1.thumb"
    assert got.headers["content-type"].startswith("text/plain")
    files.remove(path)
    assert web_sqlite.client.get("/.well-known/acme-challenge/tok_en-1").status_code == 404
    assert web_sqlite.client.get("/.well-known/acme-challenge/..%2Fstate.json").status_code == 404


def test_certificates_page_and_metrics(web_sqlite: WebEnv) -> None:
    store = CertStore(Layout(web_sqlite.cfg.data_dir).tls)
    store.save("mail.a.example", *make_pair(["mail.a.example", "mta-sts.a.example"], issuer="Pebble Intermediate",
                                            days=90, age=30))
    c = web_sqlite.client
    _login(web_sqlite)
    page = c.get("/certificates")
    assert page.status_code == 200
    assert "mta-sts.a.example" in page.text and "Pebble Intermediate" in page.text and ">59<" in page.text
    metrics = c.get("/metrics", headers=web_sqlite.bearer(web_sqlite.admin_token)).text
    lines = [line for line in metrics.splitlines() if line.startswith("dovetail_cert_days_to_expiry{")]
    assert {line.split("{")[1].split("}")[0] for line in lines} == {'name="mail.a.example"', 'name="mta-sts.a.example"'}
    assert all(59 < float(line.split()[-1]) <= 60 for line in lines)


def test_certificates_page_is_for_admins(web_sqlite: WebEnv) -> None:
    web_sqlite.directory.tenant_add("alpha")
    auth.user_add(web_sqlite.engine, "t@alpha.example", "tenant password 1", role="tenant_admin", tenant="alpha")
    _login(web_sqlite, "tenant password 1", "t@alpha.example")
    assert web_sqlite.client.get("/certificates").status_code == 403
