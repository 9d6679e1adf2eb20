"""The master's preload runs every module but the held ones (the web stack, ACME, the CLI), whose code
it keeps for the workers that need them: a worker forked from it carries no FastAPI, pydantic, Jinja,
uvicorn or acme, and a held module still imports, from memory, where the package cannot be read."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import dovetail.cli.main, dovetail.serve
from dovetail.master import preload
ran = preload.preload()
import dovetail.master.supervisor, dovetail.master.runners
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(preload.HELD_LIBRARIES))
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
held = sorted(preload.HELD_CODE.code)
# What a web worker does after the fork: the held code runs from memory, not from the package's folder.
sys.path_importer_cache.clear()
import dovetail.web.app, dovetail.certs.renew
out = {"ran": ran, "held": held, "loaded": loaded, "rss_kb": rss,
       "app_loader": type(dovetail.web.app.__spec__.loader).__name__,
       "app_file": dovetail.web.app.__file__, "fastapi_after": "fastapi" in sys.modules}
print(json.dumps(out))
"""


def test_the_master_holds_the_web_stack_back_and_a_worker_can_still_run_it() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert "dovetail.web.app" in out["held"] and "dovetail.certs.order" in out["held"]
    assert "dovetail.web.assetfiles" in out["ran"] and "dovetail.imap.server" in out["ran"]
    assert "dovetail.maildir.storage" in out["ran"] and not any(n.startswith("dovetail.web.api") for n in out["ran"])
    assert out["app_loader"] == "HeldCode" and out["app_file"].endswith("dovetail/web/app.py")
    assert out["fastapi_after"]
    # What an IMAP worker inherits from the master (it was some 120 MB with the web stack).
    assert out["rss_kb"] < 95 * 1024, out["rss_kb"]
