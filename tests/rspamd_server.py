"""A private rspamd for the tests: its own config dir, runtime and database dirs, loopback ports.

The system's /etc/rspamd provides the rules; ``local.d`` overrides turn off everything that would
leave the machine (fuzzy storage, RBLs, remote maps, Redis) and point DNS at the tests' loopback
server. Two workers listen on free loopback ports: the normal worker (``/checkv2``) and the proxy
worker in milter mode (self-scanning). A cold start used to spend half a minute compiling the
public-suffix list: the tests give rspamd a short one. The Hyperscan databases are kept in a cache
directory under /var/tmp, keyed by nothing but the rules, so later starts skip their compile too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

CACHE = Path(os.environ.get("DOVETAIL_TEST_RSPAMD_CACHE", "/var/tmp/dovetail-test-rspamd-hs"))
OFF = ("fuzzy_check", "rbl", "surbl", "asn", "emails", "dcc", "multimap", "phishing", "redis", "history_redis",
       "neural", "greylist", "ratelimit", "replies", "url_redirector", "metadata_exporter", "clickhouse", "elastic",
       "mx_check", "reputation", "ip_score", "dmarc_report", "whitelist", "rspamd_update", "maillist",
       "external_services", "antivirus", "once_received", "bayes_expiry", "dkim_signing", "arc")

TLDS = ("com", "net", "org", "test", "example", "invalid", "localhost", "local", "co.uk", "de", "io")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RspamdServer:
    """``with RspamdServer(root, dns_port) as r: r.url, r.milter``."""

    def __init__(self, root: Path, dns_port: int) -> None:
        self.root = root
        self.dns_port = dns_port
        self.normal_port = _free_port()
        self.proxy_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.normal_port}"

    @property
    def milter(self) -> str:
        return f"inet:127.0.0.1:{self.proxy_port}"

    def _write_config(self) -> None:
        local = self.root / "local.d"
        for sub in ("local.d", "db", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        (self.root / "rspamd.conf").write_text(f"""
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{self.normal_port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{self.proxy_port}";
    milter = yes;
    self_scan = yes;
    timeout = 60s;
    count = 1;
    upstream "local" {{ default = yes; self_scan = yes; }}
}}
""")
        # rspamd compiles its whole public-suffix list (~10,000 names) on every cold start: half a minute.
        # The tests' mail only names these suffixes.
        tlds = self.root / "tlds.dat"
        tlds.write_text("\n".join(TLDS) + "\n")
        (local / "options.inc").write_text(f"""
hs_cache_dir = "{CACHE}";
url_tld = "{tlds}";
local_addrs = [];
dns {{ nameserver = ["127.0.0.1:{self.dns_port}"]; timeout = 1s; retransmits = 1; }}
""")
        for module in OFF:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        (local / "redis.conf").write_text("enabled = false;\n")
        # the milter path adds its verdict headers to every message, from loopback clients too
        (local / "milter_headers.conf").write_text(
            'use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];\n'
            "skip_local = false;\nskip_authenticated = false;\n")

    def start(self, timeout: float = 240.0) -> RspamdServer:
        self._write_config()
        binary = shutil.which("rspamd") or "/usr/bin/rspamd"
        r = self.root
        args = [binary, "-f", "-c", str(r / "rspamd.conf"), "--var", "CONFDIR=/etc/rspamd",
                "--var", f"LOCAL_CONFDIR={r}", "--var", f"DBDIR={r / 'db'}", "--var", f"RUNDIR={r / 'run'}",
                "--var", f"LOGDIR={r / 'log'}"]
        if os.geteuid() == 0:
            args.insert(2, "-i")  # stay root: the test's own files, no _rspamd user needed
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=(r / "log" / "stderr").open("wb"),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}: {self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rspamd not ready after {timeout} s: {self.log_tail()}")

    def _ready(self) -> bool:
        try:
            if httpx.get(f"{self.url}/ping", timeout=1).text.strip() != "pong":
                return False
            with socket.create_connection(("127.0.0.1", self.proxy_port), timeout=1):
                return True
        except (httpx.HTTPError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "log" / "rspamd.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        err = self.root / "log" / "stderr"
        text += err.read_text(errors="replace") if err.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> RspamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
