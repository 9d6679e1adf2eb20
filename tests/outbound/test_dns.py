"""``dovetail dns`` records and their check against a loopback DNS server."""

from __future__ import annotations

import pytest

from dovetail.outbound.dnsrecords import DnsPlanner
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.transports import TransportError, Transports


def planner(world, dns_server) -> DnsPlanner:  # noqa: ANN001
    keys = DkimKeys(world.engine, world.dkim_dir)
    keys.ensure("acme.example")
    return DnsPlanner(keys, Transports(world.engine, check_interval=0), "mx.dovetail.test", dns_server.resolver())


def test_records_cover_mx_spf_dkim_dmarc_mta_sts_tlsrpt(world, dns_server) -> None:
    recs = planner(world, dns_server).dns_records("ACME.example")
    kinds = {(r.name, r.type) for r in recs}
    assert ("acme.example", "MX") in kinds
    assert ("_dmarc.acme.example", "TXT") in kinds
    assert ("_mta-sts.acme.example", "TXT") in kinds
    assert ("_smtp._tls.acme.example", "TXT") in kinds
    dkim = [r for r in recs if "._domainkey." in r.name]
    assert len(dkim) == 2 and {r.value.split(";")[1].strip() for r in dkim} == {"k=rsa", "k=ed25519"}
    spf = next(r for r in recs if r.value.startswith("v=spf1"))
    assert "a:mx.dovetail.test" in spf.value
    assert not any(r.name.startswith("bounce.") for r in recs)
    assert recs[0].zone_line().startswith("acme.example.\t3600\tIN\tMX\t10 mx.dovetail.test.")


def _sts_id(plan: DnsPlanner) -> str:
    (rec,) = [r for r in plan.dns_records("acme.example") if r.name == "_mta-sts.acme.example"]
    assert rec.value.startswith("v=STSv1; id=")
    return rec.value.removeprefix("v=STSv1; id=")


def test_mta_sts_id_follows_the_policy(world, dns_server) -> None:
    plan = planner(world, dns_server)
    first = _sts_id(plan)
    assert first == _sts_id(plan) == _sts_id(planner(world, dns_server))  # printed again: the same id
    assert first.isalnum() and 1 <= len(first) <= 32  # RFC 8461: 1*32(ALPHA / DIGIT)
    keys, transports = plan.keys, plan.transports
    enforce = DnsPlanner(keys, transports, "mx.dovetail.test", mta_sts_mode="enforce")
    other_mx = DnsPlanner(keys, transports, "mx2.dovetail.test")
    assert "mode: enforce" in enforce.mta_sts_policy("acme.example")
    assert "mx: mx2.dovetail.test" in other_mx.mta_sts_policy("acme.example")
    assert len({first, _sts_id(enforce), _sts_id(other_mx)}) == 3
    with pytest.raises(ValueError, match="MTA-STS mode"):
        DnsPlanner(keys, transports, "mx.dovetail.test", mta_sts_mode="strict")


def test_ses_relay_adds_custom_mail_from(world, dns_server) -> None:
    Transports(world.engine).set("tenant", "acme", "relay", host="email-smtp.eu-west-1.amazonaws.com",
                                 port=587, username="AKIA", secret="s3cret", check_host=None)
    recs = planner(world, dns_server).dns_records("acme.example")
    mail_from = [r for r in recs if r.name == "bounce.acme.example"]
    assert {r.type for r in mail_from} == {"MX", "TXT"}
    assert any("feedback-smtp.eu-west-1.amazonses.com" in r.value for r in mail_from)
    assert next(r for r in recs if r.name == "acme.example" and r.type == "TXT").value == \
        "v=spf1 include:amazonses.com ~all"


def test_check_reports_ok_missing_and_wrong(world, dns_server) -> None:
    plan = planner(world, dns_server)
    recs = plan.dns_records("acme.example")
    results = plan.check("acme.example")
    assert all(r.status == "missing" for r in results if r.record.type != "CNAME") and results
    # publish: correct MX, wrong SPF, two DMARC records, the RSA key right and the Ed25519 key wrong
    dns_server.mx("acme.example", "mx.dovetail.test")
    dns_server.txt("acme.example", "v=spf1 include:elsewhere.example -all")
    dns_server.txt("_dmarc.acme.example", "v=DMARC1; p=none")
    dns_server.txt("_dmarc.acme.example", "v=DMARC1; p=reject")
    for r in recs:
        if "._domainkey." in r.name:
            value = r.value if "k=rsa" in r.value else "v=DKIM1; k=ed25519; p=AAAA"
            dns_server.txt(r.name, value)
    dns_server.txt("_mta-sts.acme.example", "v=STSv1; id=1")
    dns_server.a("mta-sts.acme.example", "127.0.0.1")
    by = {(c.record.name, c.record.type, c.record.value.split(";")[1].strip()
           if "DKIM1" in c.record.value else ""): c for c in plan.check("acme.example")}
    get = {k[:2] + ((k[2],) if k[2] else ()): v for k, v in by.items()}
    assert get[("acme.example", "MX")].status == "ok"
    spf = get[("acme.example", "TXT")]
    assert spf.status == "wrong" and "mx" in spf.message
    dmarc = get[("_dmarc.acme.example", "TXT")]
    assert dmarc.status == "wrong" and "exactly one" in dmarc.message
    dkim = {k[2]: v for k, v in by.items() if k[2]}
    assert dkim["k=rsa"].status == "ok"
    assert dkim["k=ed25519"].status == "wrong"
    assert get[("_mta-sts.acme.example", "TXT")].status == "ok"
    assert get[("mta-sts.acme.example", "CNAME")].status == "ok"
    assert get[("_smtp._tls.acme.example", "TXT")].status == "missing"


def test_dane_tlsa_record_of_our_mx_certificate(world, dns_server) -> None:
    import hashlib

    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem = trustme.CA().issue_cert("mx.dovetail.test").cert_chain_pems[0].bytes()
    spki = x509.load_pem_x509_certificate(pem).public_key().public_bytes(Encoding.DER,
                                                                         PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(spki).digest()
    keys = DkimKeys(world.engine, world.dkim_dir)
    plan = DnsPlanner(keys, Transports(world.engine), "mx.dovetail.test", dns_server.resolver(), mx_cert_pem=pem)
    [rec] = [r for r in plan.dns_records("acme.example") if r.type == "TLSA"]
    assert rec.name == "_25._tcp.mx.dovetail.test" and rec.value == f"3 1 1 {digest.hex()}" and not rec.required
    assert plan.check_record(rec).status == "missing"
    dns_server.tlsa(rec.name, 3, 1, 1, b"\x00" * 32)
    assert plan.check_record(rec).status == "wrong"
    dns_server.tlsa(rec.name, 3, 1, 1, digest)  # the next key's record may sit beside it
    assert plan.check_record(rec).status == "ok"
    assert not any(r.type == "TLSA" for r in planner(world, dns_server).dns_records("acme.example"))


def test_check_reports_unreachable_dns_as_error(world, dns_server) -> None:
    plan = planner(world, dns_server)
    dns_server.stop()
    plan.resolver.lifetime = plan.resolver.timeout = 0.3
    results = plan.check("acme.example")
    assert results and all(r.status in ("error", "missing") for r in results)
    assert any(r.status == "error" and "lookup failed" in r.message for r in results)


def test_transport_precedence_and_validation(world) -> None:
    t = Transports(world.engine, check_interval=0)
    assert t.for_sender("alice@acme.example").kind == "mx"
    t.set("default", "*", "relay", host="smarthost.example", port=2525, tls="none", check_host=None)
    t.set("tenant", "acme", "relay", host="tenant.example", port=587, check_host=None)
    t.set("domain", "news.acme.example", "mx")
    t.set("sender", "ceo@acme.example", "relay", host="ceo.example", port=465, tls="implicit",
          check_host=None)
    assert t.for_sender("ceo@acme.example").host == "ceo.example"
    assert t.for_sender("alice@acme.example").host == "tenant.example"
    assert t.for_sender("x@news.acme.example").kind == "mx"
    assert t.for_sender("gina@globex.example").host == "smarthost.example"
    assert t.for_sender("").host == "smarthost.example"
    with pytest.raises(TransportError):
        t.set("domain", "bad domain", "mx")
    with pytest.raises(TransportError):
        t.set("tenant", "acme", "relay", host="x;rm -rf", port=25)
    with pytest.raises(TransportError):
        t.set("tenant", "acme", "relay", host="ok.example", username="u")
    with pytest.raises(TransportError):
        t.set("planet", "x", "mx")
    assert "s3" not in str([x.public() for x in t.list()])
    t.remove("tenant", "acme")
    assert t.for_sender("alice@acme.example").host == "smarthost.example"
