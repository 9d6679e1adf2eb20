#!/usr/bin/env python3
"""DKIM verification speed: ``dovetail.mailauth.dkimverify.verify_dkim`` against dkimpy's ``dkim.verify``.

    python bench/dkim_verify.py [--seconds 3] [--size 2048]

One core, one process: a message of ``--size`` octets (headers and a text body) signed once with an
RSA-2048 key (relaxed/relaxed, our outbound signer) and, in a second round, with an Ed25519 key, then
verified in a loop for ``--seconds`` each. The key lookup is answered from memory in both (ours: a
``TxtLookup`` returning the record with a TTL, so the parsed key is cached, as with a warm resolver;
dkimpy: a ``dnsfunc`` returning the record), so the numbers are the verification CPU alone: header and
body canonicalisation, hashing, and the public-key operation. Every verification is checked to pass.
"verifications/s" is by the wall clock; "per CPU-second" divides by this process's CPU time, which is
what one core gives when the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dovetail.mailauth.dkimverify import KeyCache, verify_dkim
from dovetail.mailauth.dnserrors import TxtRecords
from dovetail.outbound.dkim import SigningKey, dns_txt_value, sign


def message(size: int) -> bytes:
    head = (b"From: Alice Example <alice@acme.example>\r\nTo: Bob <bob@example.org>\r\n"
            b"Subject: Quarterly numbers for the board meeting\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <bench-1@acme.example>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
    line = b"The quick brown fox jumps over the lazy dog; numbers attached.  \r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def ours(signed: bytes, record: str, seconds: float) -> tuple[float, float]:
    cache = KeyCache()

    async def txt(name: str) -> list[str]:
        return TxtRecords([record], ttl=3600)

    async def loop() -> tuple[float, float]:
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while True:
            results = await verify_dkim(signed, txt, keys=cache)
            assert results[0].result == "pass", results
            n += 1
            if n % 50 == 0 and time.perf_counter() - start >= seconds:
                return n / (time.perf_counter() - start), n / (time.process_time() - cpu)

    return asyncio.run(loop())


def dkimpy(signed: bytes, record: str, seconds: float) -> tuple[float, float]:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record.encode()

    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        assert dkim.verify(signed, dnsfunc=dnsfunc)
        n += 1
        if n % 5 == 0 and time.perf_counter() - start >= seconds:
            return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    msg = message(args.size)
    print(f"message: {len(msg)} octets; {args.seconds:g} s per row, one core")
    print(f"{'verifier':<44} {'verifications/s':>16} {'per CPU-second':>15}")
    for label, private in (("RSA-2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                           ("Ed25519", ed25519.Ed25519PrivateKey.generate())):
        key = SigningKey("acme.example", "bench", "rsa-sha256" if label == "RSA-2048" else "ed25519-sha256",
                         private)
        signed = sign(msg, [key]) + msg
        record = dns_txt_value(private)
        for name, run in (("dovetail verify_dkim", ours), ("dkimpy dkim.verify", dkimpy)):
            wall, cpu = run(signed, record, args.seconds)
            print(f"{name + ', ' + label:<44} {wall:>16.0f} {cpu:>15.0f}", flush=True)


if __name__ == "__main__":
    main()
