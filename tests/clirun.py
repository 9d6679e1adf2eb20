"""Run the ``dovetail`` command line from the tests: each verb in a process of its own, forked from a
server that has the heavy libraries imported already.

The suite runs ``dovetail`` thousands of times. A start of the interpreter with SQLAlchemy, pydantic,
cryptography and dnspython costs some 0.6 s of CPU before the verb runs, which on CI's two cores was
a third of the suite. As a forkserver does (``multiprocessing``'s, Android's zygote), one server per
test process imports those libraries once (not Dovetail, not Typer or Rich, which read the
environment when imported) and forks a child per verb. The child takes the verb's working directory,
environment, stdin, stdout and stderr, imports Dovetail's command line and runs its entry point, as the
installed script does, then exits with its status: every verb still starts from a fresh process with
nothing left from the one before. The installed script itself is run as is by the tests of its usage
lines (tests/cli/test_usage_errors.py) and of its lazy imports (tests/cli/test_lazy_verbs.py).

:func:`run` has :func:`subprocess.run`'s shape for the calls the tests make: arguments, ``env``,
``input``, ``timeout``; text output.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

# Imported by the server before it forks: libraries that read nothing from the environment when imported.
PRELOAD = ("sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql",
           "pydantic", "cryptography.x509", "cryptography.hazmat.primitives.asymmetric.rsa", "dns.resolver",
           "dns.message", "httpx", "tomlkit", "structlog", "email.parser", "email.policy", "asyncio")

SERVER = r"""
import atexit, importlib, json, os, sys, threading, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
proto_in = os.fdopen(os.dup(0), "r")
proto_out = os.fdopen(os.dup(1), "w")
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(devnull, 1)
sys.stdout.flush()
sys.stderr.flush()
for line in proto_in:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        proto_in.close()
        proto_out.close()
        code = 1
        try:
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            for fd, path, mode in ((0, req["stdin"], os.O_RDONLY), (1, req["stdout"], os.O_WRONLY),
                                   (2, req["stderr"], os.O_WRONLY)):
                f = os.open(path, mode)
                os.dup2(f, fd)
                os.close(f)
            sys.argv = ["dovetail", *req["args"]]
            try:
                from dovetail.cli.main import entry
                entry()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:  # what the interpreter does at exit: wait for threads, run the exit handlers, flush
                for t in threading.enumerate():
                    if t is not threading.main_thread() and not t.daemon:
                        t.join()
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    proto_out.write(f"{pid}\n")
    proto_out.flush()
    _, status = os.waitpid(pid, 0)
    proto_out.write(f"{os.waitstatus_to_exitcode(status)}\n")
    proto_out.flush()
"""


class ForkServer:
    """One server per test process, started on first use; calls from several threads take turns."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.pending = b""  # read from the server, not yet taken as a line

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            self.pending = b""
            self.proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(PRELOAD)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
            atexit.register(self.close)
        return self.proc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float | None) -> bytes:
        """The server's next line, read from the pipe itself (a buffered reader could hold the second
        line while ``select`` waits for it); empty at the deadline."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.pending:
            if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return b""
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the dovetail fork server exited")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"

    def run(self, args: list[str], env: Mapping[str, str], cwd: str, stdin: str, stdout: str, stderr: str,
            timeout: float | None) -> int:
        with self.lock:
            proc = self._start()
            assert proc.stdin is not None
            req = {"args": args, "env": dict(env), "cwd": cwd, "stdin": stdin, "stdout": stdout, "stderr": stderr}
            proc.stdin.write(json.dumps(req).encode() + b"\n")
            proc.stdin.flush()
            pid = int(self._readline(proc, None))
            deadline = None if timeout is None else time.monotonic() + timeout
            line = self._readline(proc, deadline)
            if not line:
                os.kill(pid, signal.SIGKILL)
                self._readline(proc, None)
                raise subprocess.TimeoutExpired(["dovetail", *args], timeout or 0)
            return int(line)


_SERVER = ForkServer()


def run(args: list[str] | tuple[str, ...], *, env: Mapping[str, str] | None = None, input: str | None = None,
        timeout: float | None = 120, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """``dovetail ARGS`` in a process of its own (see the module docstring): its exit status, stdout
    and stderr as text."""
    with tempfile.TemporaryDirectory(prefix="dovetail-cli-") as tmp:
        paths = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
        Path(paths["stdin"]).write_text(input or "")
        Path(paths["stdout"]).touch()
        Path(paths["stderr"]).touch()
        code = _SERVER.run([str(a) for a in args], os.environ if env is None else env,
                           str(cwd or os.getcwd()), paths["stdin"], paths["stdout"], paths["stderr"], timeout)
        out = Path(paths["stdout"]).read_text(errors="replace")
        err = Path(paths["stderr"]).read_text(errors="replace")
    return subprocess.CompletedProcess(["dovetail", *map(str, args)], code, out, err)
