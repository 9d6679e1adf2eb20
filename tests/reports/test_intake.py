"""The report intake over a real database (SQLite and PostgreSQL) and real Maildirs: routing of the rua
addresses, storing per domain and day, dedupe, the tenant wall, and malformed mail kept aside."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail import config
from dovetail.datadir import Layout
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.replies.handover import Delivered
from dovetail.reports.intake import ReportIntake, local_delivery
from dovetail.reports.store import ReportStore
from dovetail.storage import open_storage
from dovetail.storage.api import DeliveryId

from . import samples


@pytest.fixture
def world(data_dir: Path) -> Iterator[tuple[object, Directory, Path]]:
    engine = make_engine(config.load(data_dir).database_url)
    migrate(engine)
    d = Directory(engine)
    for t in ("acme", "beta"):
        d.tenant_add(t)
    d.domain_add("acme.example", "acme")
    d.domain_add("acme-shop.example", "acme")
    d.domain_add("beta.example", "beta")
    yield engine, d, Layout(data_dir).mail
    engine.dispose()


def test_rua_addresses_route_to_the_tenants_report_intake(world) -> None:
    engine, d, mail = world
    resolver = Resolver(d, mail)
    for local in ("dmarc-reports", "tls-reports"):
        res = resolver.resolve(f"{local}@acme.example")
        assert res.ok, res.reason
        (target,) = res.mailboxes
        assert target.maildir == mail / "acme" / "_reports" and target.tenant == "acme"
    assert resolver.resolve("dmarc-reports@beta.example").mailboxes[0].maildir == mail / "beta" / "_reports"
    assert resolver.resolve("nobody@acme.example").status == "unknown"
    d.mailbox_add("dmarc-reports@acme.example", None)  # a hand-made mailbox of that name wins
    resolver.invalidate()
    assert resolver.resolve("dmarc-reports@acme.example").mailboxes[0].local_part == "dmarc-reports"


def test_reports_are_stored_per_domain_and_day_once(world) -> None:
    engine, _d, _mail = world
    intake = ReportIntake(engine)
    out = intake.process("acme", "dmarc-reports@acme.example", samples.google_dmarc_mail())
    assert (out.dmarc, out.duplicates, out.problems) == (1, 0, [])
    assert intake.process("acme", "dmarc-reports@acme.example", samples.microsoft_dmarc_mail()).dmarc == 1
    again = intake.process("acme", "dmarc-reports@acme.example", samples.google_dmarc_mail())
    assert (again.dmarc, again.duplicates) == (0, 1)  # the same report id from the same reporter
    assert intake.process("acme", "tls-reports@acme.example", samples.google_tls_mail()).tls == 1
    assert intake.process("acme", "tls-reports@acme.example", samples.google_tls_mail()).duplicates == 1

    figures = ReportStore(engine).dmarc(["acme.example"])
    (day,) = figures["days"]
    assert day == {"day": samples.DAY, "domain": "acme.example", "reports": 2, "messages": 24, "passed": 16,
                   "fail": 8}
    by_ip = {s["source_ip"]: s for s in figures["sources"]}
    assert by_ip["192.0.2.10"]["messages"] == 16 and by_ip["192.0.2.10"]["reporters"] == ["Enterprise Outlook",
                                                                                          "google.com"]
    assert by_ip["2001:db8::25"]["dispositions"] == {"quarantine": 5}
    tls = ReportStore(engine).tls(["acme.example"])
    assert tls["days"] == [{"day": samples.DAY, "domain": "acme.example", "reports": 1, "success": 120,
                            "failure": 3}]
    assert tls["failures"] == [{"result_type": "certificate-expired", "count": 2},
                               {"result_type": "starttls-not-supported", "count": 1}]
    assert ReportStore(engine).rejects() == []


def test_a_report_about_another_tenants_domain_is_refused(world) -> None:
    engine, _d, _mail = world
    intake = ReportIntake(engine)
    out = intake.process("acme", "dmarc-reports@acme.example", samples.google_dmarc_mail("beta.example"), "k1")
    assert out.stored == 0 and "not a domain of tenant acme" in out.problems[0]
    assert ReportStore(engine).dmarc()["reports"] == []
    (reject,) = ReportStore(engine).rejects()
    assert (reject["tenant"], reject["message_key"]) == ("acme", "k1")
    # a sibling domain of the same tenant is fine (one rua address may collect for several domains)
    assert intake.process("acme", "dmarc-reports@acme.example", samples.google_dmarc_mail("acme-shop.example")).dmarc


@pytest.mark.parametrize("attachment, subtype, name, reason", [
    (samples.zipped("r.xml", b"<" + b"a" * 30_000_000), "zip", "bomb.zip", "decompresses to more than"),
    (gzip.compress(b"<!DOCTYPE x [<!ENTITY a 'a'>]><feedback>&a;</feedback>"), "gzip", "r.xml.gz", "unsafe XML"),
    (b"<feedback>" + b"<x>" * 100 + b"</x>" * 100 + b"</feedback>", "xml", "r.xml", "deeper"),
    (b"{\"organization-name\": 1", "tlsrpt+json", "r.json", "malformed JSON"),
], ids=["zip-bomb", "entity", "deep", "json"])
def test_malformed_reports_are_kept_aside_never_raised(world, attachment: bytes, subtype: str, name: str,
                                                         reason: str) -> None:
    engine, _d, _mail = world
    raw = samples.report_mail("dmarc-reports@acme.example", "x@y.example", "r", attachment, "application", subtype,
                              name)
    out = ReportIntake(engine).process("acme", "dmarc-reports@acme.example", raw, "kept")
    assert out.stored == 0 and reason in out.problems[0]
    (reject,) = ReportStore(engine).rejects()
    assert reason in reject["reason"]


def test_hand_over_reads_the_delivered_copy(world) -> None:
    """What qmgr does after the Maildir delivery: the stored copy is read back and stored as figures."""
    engine, d, mail = world
    hand_over = local_delivery(engine, mail)
    target = Resolver(d, mail).resolve("tls-reports@acme.example").mailboxes[0]
    store = open_storage(target.maildir, create=False)
    delivered = store.deliver(iter([samples.google_tls_mail()]), delivery_id=DeliveryId("Q1", 0, 0.0))
    item = Delivered("acme", target.address, target.maildir, delivered.key)
    assert hand_over.wants(item)
    asyncio.run(hand_over([item]))
    assert ReportStore(engine).tls()["days"][0]["success"] == 120
    # a mailbox that is no report intake is left alone
    other = Delivered("acme", "bob@acme.example", mail / "acme" / "acme.example" / "bob", delivered.key)
    assert not hand_over.wants(other)
    asyncio.run(hand_over([other]))
    assert len(ReportStore(engine).tls()["reports"]) == 1
    assert store.read_delivered(delivered.key) is not None  # the message itself stays in the intake


def test_a_report_naming_the_domain_as_u_label_is_stored_under_its_a_label(world) -> None:
    engine, d, _mail = world
    d.domain_add("bücher.example", "acme")
    out = ReportIntake(engine).process("acme", "dmarc-reports@xn--bcher-kva.example",
                                       samples.google_dmarc_mail("Bücher.example"))
    assert out.dmarc == 1, out.problems
    assert ReportStore(engine).dmarc(["xn--bcher-kva.example"])["days"][0]["messages"] == 15
