"""Pebble, Let's Encrypt's ACME test server, started by a test on loopback ports.

Its HTTPS listener gets a certificate from a throwaway CA (trustme) that only the test trusts; it asks
the test's loopback DNS server for the names it validates, and connects for HTTP-01 and TLS-ALPN-01 to
the ports the test names (the web listener's). ``PEBBLE_VA_NOSLEEP`` skips its random validation
delays, ``PEBBLE_WFE_NONCEREJECT=0`` its random bad-nonce answers.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import trustme

from ..support import require_tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pebble:
    def __init__(self, workdir: Path, dns: str, http_port: int, tls_port: int) -> None:
        require_tool("pebble")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dns, self.http_port, self.tls_port = dns, http_port, tls_port
        self.port = _free_port()
        self.management_port = _free_port()
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_bundle = workdir / "pebble-wfe-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        server.private_key_pem.write_to_path(str(workdir / "wfe-key.pem"))
        server.cert_chain_pems[0].write_to_path(str(workdir / "wfe-cert.pem"))
        self.config = workdir / "pebble.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(workdir / "wfe-cert.pem"), "privateKey": str(workdir / "wfe-key.pem"),
            "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "pebble.log"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> None:
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0",
               "PATH": "/usr/bin:/bin"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([shutil.which("pebble") or "pebble", "-config", str(self.config),
                                          "-dnsserver", self.dns], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("pebble did not listen: " + self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
