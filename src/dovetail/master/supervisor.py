"""The supervisor loop: bind, fork, watch, restart, reload, drain.

The master never runs an event loop and never reads network input: it binds the listening
sockets (so privileged ports work when started as root), forks one process per worker with the
socket inherited, and then only waits for signals. Workers create their event loop after the fork.

Each worker reports through a pipe when its service serves. A service whose first worker dies
before that cannot start (a file it cannot read, a lock another process holds): the master stops
and exits non-zero with the worker's reason instead of restarting it for ever, and says
"daemon started" only once every service serves.

Signals: SIGCHLD → reap and restart with exponential backoff (a service that served once and then
crash-loops is throttled while the others keep serving); SIGHUP → re-read the config and restart only services
whose settings changed, keeping the listening sockets (and have every TLS listener load the certificate
store again); SIGTERM/SIGINT → workers stop accepting
and finish in-flight work within ``server.shutdown_grace``; a second SIGTERM kills them at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config as config_mod
from ..config import Config, split_hostport
from ..log import configure_from, flush, get_logger, log_files, reopen
from ..status import pid_path, write_status
from .pidfile import PidFile
from .runners import RUNNERS
from .services import ServiceSpec, service_specs
from .worker import Readiness, worker_main

log = get_logger("master")

CRASH_WINDOW = 60.0  # seconds
CRASH_LIMIT = 5  # abnormal exits within the window before a service is throttled
THROTTLE_FOR = 60.0
HEALTHY_AFTER = 30.0  # a worker alive this long resets its backoff
EXIT_IDLE = 75  # worker exit status: left because max_idle passed (start again on demand)
EXIT_MAX_USE = 76  # worker exit status: served max_use connections (replace at once)


@dataclass
class Worker:
    service: str
    index: int
    pid: int = 0
    started: float = 0.0
    restarts: int = 0
    failures: int = 0
    last_exit: str = ""
    due: float = 0.0  # when to (re)start, 0 = not scheduled
    idle: bool = False  # exited for max_idle; started again on the next connection
    retiring: bool = False  # replaced by a reload; not restarted
    ready_fd: int = -1  # read end of the pipe the worker reports its start on
    report: bytes = b""  # what it reported: ``ready``, or why it could not start
    ready: bool = False


@dataclass
class Service:
    spec: ServiceSpec
    sockets: list[socket.socket] = field(default_factory=list)  # every listening socket of the service
    groups: list[list[socket.socket]] = field(default_factory=list)  # per listen address: one, or one per worker
    workers: list[Worker] = field(default_factory=list)
    deaths: list[float] = field(default_factory=list)
    throttled_until: float = 0.0
    must_start: bool = False  # started with the master: its first worker must serve, or the master stops
    served: bool = False  # a worker of it reported ready at least once


def regroup(group: list[socket.socket], count: int) -> list[socket.socket]:
    """An address's listening sockets resized to ``count`` on reload: surplus ones closed, missing ones
    bound into the same ``SO_REUSEPORT`` group. A socket bound without ``SO_REUSEPORT`` cannot be joined:
    it stays the one shared socket until the next start (``reuse_port`` switched on by a reload)."""
    if count == len(group):
        return group
    if count < len(group):
        for sock in group[count:]:
            sock.close()
        return group[:count]
    first = group[0]
    if first.family == socket.AF_UNIX or not first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        log.warning("reload: reuse_port applies at the next start; the workers share one socket until then",
                    address=str(first.getsockname()))
        return group
    host, port = first.getsockname()[:2]
    added: list[socket.socket] = []
    try:
        for _ in range(count - len(group)):
            added.append(_listening(_tcp_socket(host, port, reuse_port=True)))
    except OSError:
        for sock in added:
            sock.close()
        raise
    return group + added


def worker_share(svc: Service, index: int) -> list[socket.socket]:
    """The sockets worker ``index`` accepts on, in ``listen`` order: its own of each per-worker group,
    the shared one otherwise."""
    return [group[index % len(group)] for group in svc.groups]


def listen_backlog() -> int:
    """The kernel's cap on a listen queue (``net.core.somaxconn``): a larger backlog is cut to it anyway,
    and a smaller one drops connections a flood makes wait while the workers are busy."""
    try:
        return max(128, int(Path("/proc/sys/net/core/somaxconn").read_text().strip()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def raise_open_files() -> None:
    """Lift the soft limit on open files to the hard one (workers inherit it): an MX worker holds up to
    ``smtp.max_connections`` sockets plus its files, past Debian's default soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bind_unix_socket(path: str) -> socket.socket:
    """A listening unix socket at ``path`` (a stale socket file left by an earlier run is replaced), mode
    0666: who may connect is decided by the folder it is in, as for Postfix's and Dovecot's sockets."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


def _tcp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def _listening(sock: socket.socket) -> socket.socket:
    sock.listen(listen_backlog())
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


def bind_socket(address: str) -> socket.socket:
    """A listening TCP socket (or a unix one for ``unix:/path``), bound by the master and inherited by workers."""
    if address.startswith("unix:"):
        return bind_unix_socket(address[5:])
    host, port = split_hostport(address)
    try:
        return _listening(_tcp_socket(host, port))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None


def bind_sockets(address: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one TCP address, one per worker (``SO_REUSEPORT``: the kernel spreads
    connections over them); one shared socket for ``count`` 1 or a unix address.

    A plain bind comes first: SO_REUSEPORT would let these sockets join another process's group on the
    same port (another server run by the same user) and silently share its connections; the plain bind
    fails on any socket bound there instead, with the usual "address in use"."""
    if count <= 1 or address.startswith("unix:"):
        return [bind_socket(address)]
    host, port = split_hostport(address)
    group: list[socket.socket] = []
    try:
        probe = _tcp_socket(host, port)
        port = probe.getsockname()[1]  # port 0: every socket of the group on the port the kernel chose
        probe.close()
        for _ in range(count):
            group.append(_listening(_tcp_socket(host, port, reuse_port=True)))
    except OSError as exc:
        for sock in group:
            sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
    return group


class Master:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run_dir = cfg.data_dir / "run"
        self.pidfile = PidFile(pid_path(cfg.data_dir))
        self.services: dict[str, Service] = {}
        self.retired: list[Worker] = []
        self.signals: list[int] = []
        self.stopping_since: float = 0.0
        self.started = time.time()
        self._status_at = 0.0
        self.announced = False  # "daemon started" said (every service served once)
        self.exit_code = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        if self.pidfile.fd is None:
            self.pidfile.acquire()
        try:
            return self._run()
        finally:
            self.pidfile.release()
            for svc in self.services.values():
                for s in svc.sockets:
                    s.close()

    def _run(self) -> int:
        raise_open_files()
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        self._wake_fds = (rfd, wfd)
        for name, spec in service_specs(self.cfg).items():
            self._add_service(name, spec)
            self.services[name].must_start = spec.enabled and bool(self.services[name].workers)
        while True:
            self._handle_signals()
            self._read_reports()
            self._reap()
            if self.stopping_since:
                if not self._live_pids():
                    log.info("daemon stopped")
                    self._write_status()
                    return self.exit_code
                if time.monotonic() - self.stopping_since > self.cfg["server.shutdown_grace"] + 5:
                    log.warning("shutdown grace expired, killing workers")
                    self._kill_all(signal.SIGKILL)
            else:
                self._start_due()
                self._announce()
            self._write_status()
            self._wait(self._next_timeout())

    def _announce(self) -> None:
        """Say "daemon started" (and tell systemd) once every service started with the master serves."""
        if self.announced or any(svc.must_start and not svc.served for svc in self.services.values()):
            return
        self.announced = True
        self._notify_systemd("READY=1")
        log.info("daemon started", services=",".join(n for n, s in self.services.items() if s.spec.enabled),
                 data_dir=str(self.cfg.data_dir))

    def _cannot_start(self, svc: Service, reason: str) -> None:
        """A service that never served: stop everything and leave with its reason (no restart loop).
        Said once: the other workers of the service usually fail the same way."""
        if self.exit_code == 1 and self.stopping_since:
            return
        log.error("service cannot start, stopping", service=svc.spec.name, error=reason)
        self.exit_code = 1
        if not self.stopping_since:
            self.stopping_since = time.monotonic()
            self._notify_systemd("STOPPING=1")
            self._kill_all(signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def _wait(self, timeout: float) -> None:
        rfds = [self._wake_fds[0], *self._report_fds()]
        idle_socks = {}
        if not self.stopping_since:
            for svc in self.services.values():
                if svc.spec.enabled and svc.workers and all(w.idle for w in svc.workers):
                    for s in svc.sockets:
                        idle_socks[s.fileno()] = svc
        try:
            ready, _, _ = select.select(rfds + list(idle_socks), [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:  # a worker's report pipe is read by _read_reports
            if fd == self._wake_fds[0]:
                try:
                    while os.read(fd, 512):
                        pass
                except BlockingIOError:
                    pass
            elif fd in idle_socks:
                svc = idle_socks[fd]
                log.info("connection pending, starting on-demand service", service=svc.spec.name)
                for w in svc.workers:
                    w.idle, w.due = False, time.monotonic()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        dues = [w.due for svc in self.services.values() for w in svc.workers if w.due and not w.pid]
        if self.stopping_since:
            return 0.2
        return max(0.0, min([1.0, *[d - now for d in dues]]))

    # --- services and workers ----------------------------------------------------------------------

    def _add_service(self, name: str, spec: ServiceSpec, groups: list[list[socket.socket]] | None = None) -> None:
        svc = Service(spec=spec)
        if spec.enabled:
            if groups is None:
                groups = []
                try:
                    for address in spec.listen:
                        groups.append(bind_sockets(address, spec.sockets_per_address))
                except OSError:
                    for group in groups:
                        for sock in group:
                            sock.close()
                    raise
            svc.groups = groups
            svc.sockets = [sock for group in groups for sock in group]
            now = time.monotonic()
            svc.workers = [Worker(service=name, index=i, due=now) for i in range(spec.workers)]
        self.services[name] = svc

    def _report_fds(self) -> list[int]:
        return [w.ready_fd for svc in self.services.values() for w in svc.workers if w.ready_fd >= 0]

    def _read_reports(self) -> None:
        for svc in self.services.values():
            for w in svc.workers:
                self._read_report(svc, w)

    def _read_report(self, svc: Service, w: Worker) -> None:
        """Take what a starting worker wrote (non-blocking); its pipe closes after ``ready`` or at exit."""
        while w.ready_fd >= 0:
            try:
                data = os.read(w.ready_fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                w.report += data
                if w.report.startswith(b"ready\n"):
                    w.ready = svc.served = True
                continue
            os.close(w.ready_fd)
            w.ready_fd = -1

    def _start_due(self) -> None:
        now = time.monotonic()
        for svc in self.services.values():
            if not svc.spec.enabled or svc.throttled_until > now:
                continue
            for w in svc.workers:
                if not w.pid and w.due and w.due <= now and not w.idle:
                    self._spawn(svc, w)

    def _spawn(self, svc: Service, w: Worker) -> None:
        if w.ready_fd >= 0:
            os.close(w.ready_fd)
            w.ready_fd = -1
        report_r, report_w = os.pipe()
        os.set_blocking(report_r, False)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            readiness = Readiness(report_w)
            try:
                os.close(report_r)
                code = worker_main(self.cfg, svc.spec, RUNNERS[svc.spec.name], worker_share(svc, w.index),
                                   w.index, self._inherited_fds(svc, w.index), readiness)
            except BaseException as exc:  # noqa: BLE001 - a child must never return into the master loop
                try:
                    readiness.failed(f"{type(exc).__name__}: {exc}")
                    log.error("worker failed", service=svc.spec.name, error=repr(exc))
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                with contextlib.suppress(BaseException):
                    flush()  # the lines held for the loop's last turn; os._exit runs no atexit handlers
                os._exit(code)
        os.close(report_w)
        w.pid, w.started, w.due = pid, time.monotonic(), 0.0
        w.ready_fd, w.report, w.ready = report_r, b"", False
        log.info("worker started", service=svc.spec.name, pid=pid, worker=w.index)

    def _inherited_fds(self, keep: Service, index: int) -> list[int]:
        """File descriptors the child must close: other services' sockets and its own service's sockets of
        other workers, the pid lock, the wake pipe, the other workers' report pipes."""
        share = {s.fileno() for s in worker_share(keep, index)}
        fds = [s.fileno() for svc in self.services.values() for s in svc.sockets
               if svc is not keep or s.fileno() not in share]
        if self.pidfile.fd is not None:
            fds.append(self.pidfile.fd)
        fds.extend(self._wake_fds)
        fds.extend(self._report_fds())
        return fds

    def _live_pids(self) -> list[int]:
        pids = [w.pid for svc in self.services.values() for w in svc.workers if w.pid]
        return pids + [w.pid for w in self.retired if w.pid]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited(pid, status)

    def _exited(self, pid: int, status: int) -> None:
        now = time.monotonic()
        if os.WIFSIGNALED(status):
            how = f"killed by signal {os.WTERMSIG(status)}"
            code = -os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
            how = f"exit status {code}"
        for w in list(self.retired):
            if w.pid == pid:
                self.retired.remove(w)
                if w.ready_fd >= 0:
                    os.close(w.ready_fd)
                    w.ready_fd = -1
                log.info("retired worker exited", service=w.service, pid=pid, status=how)
                return
        for svc in self.services.values():
            for w in svc.workers:
                if w.pid != pid:
                    continue
                w.pid, w.last_exit = 0, how
                self._read_report(svc, w)  # the pipe holds its reason when it died starting
                if self.stopping_since:
                    log.info("worker stopped", service=svc.spec.name, pid=pid, status=how)
                    return
                if svc.must_start and not svc.served:
                    said = w.report.decode(errors="replace").strip()
                    self._cannot_start(svc, said if said and said != "ready" else f"worker {how} before serving")
                    return
                if code == EXIT_IDLE:
                    log.info("worker idle, exited", service=svc.spec.name, pid=pid)
                    w.idle = True
                    w.due = 0.0
                    return
                if code in (0, EXIT_MAX_USE):
                    log.info("worker exited, replacing", service=svc.spec.name, pid=pid, status=how)
                    w.restarts += 1
                    w.due = now
                    return
                if now - w.started > HEALTHY_AFTER:
                    w.failures = 0
                w.failures += 1
                w.restarts += 1
                delay = min(0.25 * 2 ** (w.failures - 1), 30.0)
                w.due = now + delay
                svc.deaths = [t for t in svc.deaths if now - t < CRASH_WINDOW] + [now]
                log.warning("worker died", service=svc.spec.name, pid=pid, status=how,
                            restart_in=f"{delay:.2f}s")
                if len(svc.deaths) >= CRASH_LIMIT:
                    svc.throttled_until = now + THROTTLE_FOR
                    svc.deaths.clear()
                    log.error("service is crash-looping, throttled", service=svc.spec.name,
                              deaths=CRASH_LIMIT, window=f"{CRASH_WINDOW:g}s", throttled_for=f"{THROTTLE_FOR:g}s")
                return

    def _kill_all(self, sig: int) -> None:
        for pid in self._live_pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # --- signals --------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self.stopping_since:
                    log.warning("second stop signal, killing workers now")
                    self._kill_all(signal.SIGKILL)
                else:
                    log.info("stopping: draining workers", grace=f"{self.cfg['server.shutdown_grace']:g}s")
                    self.stopping_since = time.monotonic()
                    self._notify_systemd("STOPPING=1")
                    self._kill_all(signal.SIGTERM)
            elif sig == signal.SIGHUP and not self.stopping_since:
                self._reload()
                self._reopen_logs()
            elif sig == signal.SIGUSR1:
                self._reopen_logs()

    def _reopen_logs(self) -> None:
        """After logrotate moved the file: open it again here, hand it to the service user, tell the workers."""
        reopen()
        if os.geteuid() == 0:
            from ..privileges import lookup_user

            ids = lookup_user(self.cfg["server.user"])
            for path in log_files() if ids is not None else ():
                uid, gid = ids or (-1, -1)
                try:
                    os.chown(path, uid, gid)
                except OSError as exc:
                    log.error("cannot hand the log file to the service user", file=str(path), error=exc.strerror)
        self._kill_all(signal.SIGUSR1)
        log.info("log file reopened", file=",".join(str(p) for p in log_files()) or "-")

    def _reload(self) -> None:
        try:
            cfg = config_mod.load(self.cfg.data_dir)
            cfg.overrides = dict(self.cfg.overrides)
            cfg.values.update(cfg.overrides)
            specs = service_specs(cfg)
        except config_mod.ConfigError as exc:
            log.error("reload refused, keeping the running configuration", error=str(exc))
            return
        self.cfg = cfg
        self._reload_certificates()
        try:
            configure_from(cfg)
        except OSError as exc:
            log.error("reload: cannot open the log file, logging to stderr only", file=str(exc.filename),
                      error=exc.strerror)
        changed = []
        for name, spec in specs.items():
            old = self.services.get(name)
            if old is not None and old.spec == spec:
                continue
            changed.append(name)
            keep = None
            if old is not None and old.spec.listen == spec.listen and len(old.groups) == len(spec.listen):
                # The same addresses: keep the listening sockets (no connection refused during a reload),
                # only as many per address as the new worker count needs. A fresh bind would fail here:
                # the retiring workers still hold the old sockets.
                try:
                    keep = [regroup(group, spec.sockets_per_address) for group in old.groups]
                except OSError as exc:
                    log.error("reload: cannot add listening sockets", service=name, error=str(exc))
            if old is not None:
                for w in old.workers:
                    if w.pid:
                        w.retiring = True
                        self.retired.append(w)
                        os.kill(w.pid, signal.SIGTERM)
                if keep is None:
                    for s in old.sockets:
                        s.close()
            try:
                self._add_service(name, spec, groups=keep)
            except OSError as exc:
                log.error("reload: service cannot listen", service=name, error=str(exc))
                self.services[name] = Service(spec=ServiceSpec(name=name, enabled=False))
        log.info("reloaded", changed=",".join(changed) or "nothing")

    def _reload_certificates(self) -> None:
        """SIGHUP also makes every TLS listener load the certificate store again (files replaced by hand)."""
        from ..certs.store import CertStore

        try:
            CertStore.for_service(self.cfg.data_dir / "tls", self.cfg["server.user"]).bump()
        except OSError as exc:
            log.error("reload: cannot tell the listeners to reload the certificates", error=str(exc))

    # --- status ---------------------------------------------------------------------------------

    def _write_status(self) -> None:
        now = time.monotonic()
        if now - self._status_at < 0.5:
            return
        self._status_at = now
        data = {
            "pid": os.getpid(), "started": self.started, "stopping": bool(self.stopping_since),
            "warnings": [w for w in (config_mod.hostname_warning(self.cfg.hostname),) if w],
            "services": {
                name: {
                    **svc.spec.to_dict(),
                    "throttled": svc.throttled_until > now,
                    "workers": [{"index": w.index, "pid": w.pid or None, "restarts": w.restarts,
                                 "uptime": round(now - w.started, 1) if w.pid else None,
                                 "last_exit": w.last_exit, "idle": w.idle} for w in svc.workers],
                } for name, svc in self.services.items()
            },
        }
        write_status(self.cfg.data_dir, data)

    @staticmethod
    def _notify_systemd(state: str) -> None:
        """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
        addr = os.environ.get("NOTIFY_SOCKET")
        if not addr:
            return
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(addr)
                s.sendall(state.encode())
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                print(f"sd_notify failed: {exc}", file=sys.stderr)

