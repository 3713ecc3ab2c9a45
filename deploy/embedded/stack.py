"""The embedded stack: start, check and stop a Tansu broker and a tritonserver on one machine.

Both run as detached background processes (their own session, so `down` can stop Triton's
Python-backend stub children with the server). Everything they own lives in one state
directory:

    STATE/pids/<service>.json   pid, process start time, command line, endpoints
    STATE/logs/<service>.log    the process's stdout and stderr
    STATE/runtime/backends/     Triton backend folder with the Python-backend stub in place

A PID file only counts as ours when the process with that pid has the recorded start time,
so a recycled pid is never signalled. The start time compared is the kernel's, in clock ticks
since boot (`start_ticks`), which never changes: the wall-clock start time psutil reports is
those ticks plus /proc/stat's `btime`, an integer that moves a whole second whenever the clock
is slewed across a second boundary, so a live server looked stale to a 1 s tolerance and was
left running while its PID file was removed. Stopping a service also stops what its session
left behind (Triton's Python stubs outlive a crashed server) and, when the record is in doubt,
the process listening on the service's port with the recorded command line.

Over 400 lines on purpose: one lifecycle (start, readiness, status, stop) of two processes that
share a state folder and its pid files; the binaries, errors and set-up check are already apart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from deploy.embedded.binaries import TritonDistribution, tansu_binary
from deploy.embedded.errors import StackError
from oanet.settings import StackSettings
from stream.kafka_clients import any_reachable

BROKER = "broker"
TRITON = "triton"
SERVICES = (BROKER, TRITON)
_LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class ServiceRecord:
    """What a PID file holds."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    endpoints: dict[str, str]
    log: str
    extra: dict[str, str] = field(default_factory=dict)
    start_ticks: int | None = None  # /proc/<pid>/stat starttime; None on records of older versions


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    endpoints: dict[str, str]
    detail: str


class EmbeddedStack:
    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.state_dir = Path(settings.state_dir).absolute()
        self.notices: list[str] = []  # one-line remarks for the user (stale PID files removed...)

    # ---- paths -------------------------------------------------------------------------
    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def runtime_dir(self) -> Path:
        return self.state_dir / "runtime"

    def pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def broker_address(self) -> str:
        return f"{self.settings.host}:{self.settings.broker_port}"

    @property
    def triton_http_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.triton_http_port}"

    # ---- public operations --------------------------------------------------------------
    def up(self, model_repository: Path | None = None, *, with_triton: bool = True) -> list[ServiceStatus]:
        """Start the services that are not running; raise StackError with the reason if one fails."""
        self._ensure_state_dir()
        wanted = [BROKER, TRITON] if with_triton else [BROKER]
        running = [name for name in SERVICES if self._live_record(name) is not None]
        if running:
            if set(running) >= set(wanted):
                raise StackAlreadyRunning(
                    f"the embedded stack is already running ({self._describe_running(running)}); "
                    "see `oanet stack status`, stop it with `oanet stack down`"
                )
            raise StackError(
                f"the embedded stack is partly running ({self._describe_running(running)}); "
                "run `oanet stack down` first"
            )
        repo = self._resolve_repository(model_repository) if with_triton else None
        self._check_ports(wanted)
        started: list[str] = []
        try:
            self._start_broker()
            started.append(BROKER)
            if repo is not None:
                self._start_triton(repo)
                started.append(TRITON)
        except BaseException:
            for name in reversed(started):
                self._stop(name)
            raise
        return self.status()

    def down(self) -> list[str]:
        """Stop our services (Triton first, it may still talk to nothing else); return what was done."""
        self.notices.clear()
        done = []
        for name in reversed(SERVICES):
            record = self._live_record(name)
            if record is None:
                continue
            self._stop(name)
            done.append(f"stopped {name} (pid {record.pid})")
        return done

    def stop_service(self, name: str) -> bool:
        """Stop one of our services and leave the other running (a Triton restart, a broker
        outage); False when it was not running. What a dead one left behind (its session's
        processes, a listener on its port with its command line) is stopped all the same."""
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r} (one of {', '.join(SERVICES)})")
        record = self._read_record(name)
        if record is None:
            return False
        running = self._process_of(record) is not None
        self._stop(name)
        return running

    def is_running(self, name: str) -> bool:
        """Whether the service's recorded process is alive (no health check, no side effect)."""
        record = self._read_record(name)
        return record is not None and self._process_of(record) is not None

    def start_service(self, name: str, model_repository: Path | None = None) -> None:
        """Start one stopped service on its configured ports, as `up` would."""
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r} (one of {', '.join(SERVICES)})")
        self._ensure_state_dir()
        if self._live_record(name) is not None:
            raise StackAlreadyRunning(f"{name} is already running ({self._describe_running([name])})")
        self._check_ports([name])
        if name == BROKER:
            self._start_broker()
        else:
            self._start_triton(self._resolve_repository(model_repository))

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for name in SERVICES:
            record = self._live_record(name)
            if record is None:
                statuses.append(ServiceStatus(name, False, False, None, {}, "not running"))
                continue
            if name == BROKER:
                healthy, detail = self._broker_health(record.endpoints["bootstrap"])
            else:
                healthy, detail = self._triton_health(record.endpoints["http"])
            statuses.append(ServiceStatus(name, True, healthy, record.pid, record.endpoints, detail))
        return statuses

    # ---- state directory and PID files ----------------------------------------------------
    def _ensure_state_dir(self) -> None:
        try:
            for folder in (self.pid_dir, self.log_dir, self.runtime_dir):
                folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.state_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise StackError(
                f"state directory {self.state_dir} is not writable ({exc.strerror or exc}); "
                "choose another with --state-dir or OANET_STACK__STATE_DIR"
            ) from None

    def _read_record(self, name: str) -> ServiceRecord | None:
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            return ServiceRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            self._remove_stale(name, f"unreadable PID file {path}")
            return None

    def _live_record(self, name: str) -> ServiceRecord | None:
        """The service's record if its process is alive and is the one we started."""
        record = self._read_record(name)
        if record is None:
            return None
        if self._process_of(record) is None:
            if self._leftovers(name, record):
                self._stop(name)  # a dead server's stubs or a listener of ours: never leave them running
            self._remove_stale(name, f"pid {record.pid} is no longer running")
            return None
        return record

    def _process_of(self, record: ServiceRecord) -> psutil.Process | None:
        """The record's process when it is alive and the one we started."""
        try:
            process = psutil.Process(record.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            ticks = start_ticks(record.pid)
            if record.start_ticks is not None and ticks is not None:
                ours = ticks == record.start_ticks
            else:  # a record of an older version, or no /proc: wall clock, whose btime may have moved 1 s
                ours = abs(process.create_time() - record.create_time) <= 2.0 or process.cmdline() == record.argv
        except psutil.Error:
            return None
        return process if ours else None

    def _leftovers(self, name: str, record: ServiceRecord) -> list[psutil.Process]:
        """Live processes of a service whose leader is gone or not provably ours: members of the
        session it led (started_new_session: session id = its pid) started after it, and the
        process listening on one of its ports with the recorded command line."""
        found: dict[int, psutil.Process] = {}
        leader_ticks = record.start_ticks
        # A live process on the pid that is not ours recycled it: its session is somebody else's.
        recycled = self._process_of(record) is None and _alive(record.pid)
        for process in [] if recycled else psutil.process_iter():
            try:
                if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(process.pid) == record.pid and (
                        leader_ticks is None or (start_ticks(process.pid) or 0) >= leader_ticks):
                    found[process.pid] = process
            except (psutil.Error, OSError):
                continue
        for pid in _listeners(self.settings.host, list(self._ports(name).values())):
            try:
                process = psutil.Process(pid)
                if process.cmdline() == record.argv:
                    found[pid] = process
            except psutil.Error:
                continue
        return list(found.values())

    def _remove_stale(self, name: str, why: str) -> None:
        self.pid_file(name).unlink(missing_ok=True)
        self.notices.append(f"removed stale PID file of {name} ({why})")

    def _describe_running(self, names: list[str]) -> str:
        return ", ".join(f"{n} pid {self._read_record(n).pid}" for n in names)  # type: ignore[union-attr]

    # ---- checks before starting ----------------------------------------------------------
    def _resolve_repository(self, model_repository: Path | None) -> Path:
        repo = Path(model_repository or self.settings.model_repository).absolute()
        if model_repository is None and not repo.exists():
            # The default repository starts empty; `oanet export` fills it.
            repo.mkdir(parents=True, exist_ok=True)
            self.notices.append(f"created empty model repository {repo} (fill it with `oanet export`)")
        if not repo.is_dir():
            raise StackError(f"model repository not found: {repo} (a folder of models, see `oanet export`)")
        return repo

    def _ports(self, name: str) -> dict[str, int]:
        s = self.settings
        if name == BROKER:
            return {"broker": s.broker_port}
        return {"Triton HTTP": s.triton_http_port, "Triton gRPC": s.triton_grpc_port,
                "Triton metrics": s.triton_metrics_port}

    def _check_ports(self, names: list[str]) -> None:
        for name in names:
            for what, port in self._ports(name).items():
                if not port_is_free(self.settings.host, port):
                    raise StackError(
                        f"port {port} ({what}) on {self.settings.host} is already in use; stop what "
                        "holds it or choose another port with OANET_STACK__* settings (see `oanet config`)"
                    )

    # ---- starting ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], endpoints: dict[str, str],
               extra: dict[str, str] | None = None) -> psutil.Process:
        log_path = self.log_file(name)
        with open(log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            popen = psutil.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                 start_new_session=True, close_fds=True)
        record = ServiceRecord(name, popen.pid, popen.create_time(), argv, endpoints, str(log_path), extra or {},
                               start_ticks(popen.pid))
        self.pid_file(name).write_text(json.dumps(asdict(record), indent=2))
        return popen

    def _start_broker(self) -> None:
        binary = tansu_binary()
        url = f"tcp://{self.broker_address}"
        argv = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        process = self._spawn(BROKER, argv, dict(os.environ), {"bootstrap": self.broker_address})
        self._wait_ready(BROKER, process, lambda: self._broker_health(self.broker_address)[0])

    def _start_triton(self, repo: Path) -> None:
        dist = TritonDistribution.locate()
        backends = self._prepare_backends(dist)
        s = self.settings
        argv = [
            str(dist.server),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--http-address={s.host}", f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.host}", f"--grpc-port={s.triton_grpc_port}",
            f"--metrics-address={s.host}", f"--metrics-port={s.triton_metrics_port}",
            "--allow-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
        ]
        env = dict(os.environ)
        # The Python-backend stub embeds CPython and finds its prefix through `python3` on PATH:
        # our interpreter first makes models see this environment's packages.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(dist.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        endpoints = {
            "http": self.triton_http_url,
            "grpc": f"{s.host}:{s.triton_grpc_port}",
            "metrics": f"http://{s.host}:{s.triton_metrics_port}/metrics",
        }
        process = self._spawn(TRITON, argv, env, endpoints, {"model_repository": str(repo)})
        self._wait_ready(TRITON, process, lambda: self._triton_health(self.triton_http_url)[0])

    def _prepare_backends(self, dist: TritonDistribution) -> Path:
        """A backend folder with the Python stub beside libtriton_python.so, as Triton requires.

        Symlinks keep the wheel's relative library paths ($ORIGIN) working.
        """
        python_dir = self.runtime_dir / "backends" / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        sources = [p for p in dist.python_backend_dir.iterdir() if p.is_file()] + [dist.stub]
        for source in sources:
            link = python_dir / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return python_dir.parent

    def _wait_ready(self, name: str, process: psutil.Process, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited with code {process.returncode} during start-up: "
                    f"{self.failure_summary(name)} (log: {self.log_file(name)})"
                )
            if ready():
                return
            time.sleep(0.25)
        self._stop(name)
        raise StackError(
            f"{name} was not ready within {self.settings.startup_timeout_s:.0f} s: "
            f"{self.failure_summary(name)} (log: {self.log_file(name)})"
        )

    def failure_summary(self, name: str) -> str:
        """The most telling lines at the end of a service's log, as one line."""
        lines = tail_lines(self.log_file(name), 200)
        lines = lines[_last_start_marker(lines):]
        if name == TRITON:
            errors = [ln for ln in lines if ln.startswith("E") or ln.startswith("error:")]
            errors = [ln for ln in errors if "CudaDriverHelper" not in ln and "NVML" not in ln]
            if errors:
                # A Python model's failure repeats its message with the traceback ("\n\nAt:\n ..."
                # escaped in the line): the message alone says what is wrong, and keeps it in view.
                lines = [ln.split("\\n\\nAt:", 1)[0] for ln in errors]
        picked = [ln.strip() for ln in lines[-_LOG_TAIL_LINES:] if ln.strip()]
        return " | ".join(picked)[-2000:] or "no output"

    # ---- health -----------------------------------------------------------------------------
    def _broker_health(self, bootstrap: str) -> tuple[bool, str]:
        try:
            topics = broker_topics(bootstrap, timeout_s=2.0)
        except OSError as exc:
            return False, f"metadata request failed: {exc}"
        return True, f"metadata answers ({len(topics)} topic(s))"

    def _triton_health(self, http_url: str) -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=2.0) as resp:
                ready = resp.status == 200
        except urllib.error.HTTPError as exc:
            return False, f"/v2/health/ready answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return False, f"/v2/health/ready unreachable: {getattr(exc, 'reason', exc)}"
        if not ready:
            return False, "not ready"
        return True, "ready; models: " + (", ".join(triton_models(http_url)) or "none")


    # ---- stopping -----------------------------------------------------------------------------
    def _stop(self, name: str) -> None:
        record = self._read_record(name)
        if record is None:
            return
        process = self._process_of(record)
        group = _session_members(process) if process is not None else []
        group += [p for p in self._leftovers(name, record) if p.pid not in {g.pid for g in group}]
        _signal_all(group, signal.SIGTERM)
        _, alive = psutil.wait_procs(group, timeout=self.settings.stop_timeout_s)
        if alive:
            _signal_all(alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=5)
        if process is None:
            _reap(record.pid)
        self.pid_file(name).unlink(missing_ok=True)


class StackAlreadyRunning(StackError):
    """`up` found every requested service already running."""


def _session_members(leader: psutil.Process) -> list[psutil.Process]:
    """The leader and every process of its session (Triton's Python-backend stubs)."""
    members = [leader]
    try:
        members += leader.children(recursive=True)
    except psutil.Error:
        pass
    return members


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); None
    without /proc or when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # the name in parentheses may hold spaces


def _listeners(host: str, ports: list[int]) -> set[int]:
    """Pids listening on TCP `ports` (empty when the OS will not tell)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {c.pid for c in connections if c.pid and c.status == psutil.CONN_LISTEN and c.laddr
            and c.laddr.port in ports and c.laddr.ip in (host, "0.0.0.0", "::")}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    """Collect a dead child of ours (a server that crashed), so it lingers as no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_all(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.Error:
            pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different TCP ports nothing listens on now. Every socket stays bound until all are
    picked: one at a time, the OS can hand out the same port twice (a test's stack once got
    38497 for two of its four ports)."""
    with contextlib.ExitStack() as bound:
        sockets = [bound.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port_settings(state_dir: Path, model_repository: Path, **overrides) -> StackSettings:
    """Settings of a stack of its own: free ports and its own state directory, so it never
    meets the user's `oanet stack` on the default ports (tests, benchmarks, the demo)."""
    broker, http, grpc, metrics = free_ports(4)
    values = dict(state_dir=state_dir, broker_port=broker, triton_http_port=http, triton_grpc_port=grpc,
                  triton_metrics_port=metrics, model_repository=model_repository)
    return StackSettings(**{**values, **overrides})


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def broker_topics(bootstrap: str, timeout_s: float = 5.0) -> dict[str, int]:
    """Topic -> partition count from a metadata request; OSError if the broker does not answer."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    if not any_reachable([bootstrap], timeout_s):
        raise OSError(f"nothing listens at {bootstrap}")
    try:
        consumer = KafkaConsumer(bootstrap_servers=[bootstrap], request_timeout_ms=int(timeout_s * 1000),
                                 enable_auto_commit=False,
                                 connections_max_idle_ms=int(timeout_s * 1000) + 10_000)
    except KafkaError as exc:
        raise OSError(str(exc)) from None
    try:
        topics = consumer.topics()
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    except KafkaError as exc:
        raise OSError(str(exc)) from None
    finally:
        consumer.close()


def tail_lines(path: Path, count: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            return handle.read().decode("utf-8", "replace").splitlines()[-count:]
    except OSError:
        return []


def _last_start_marker(lines: list[str]) -> int:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("==== "):
            return index + 1
    return 0


def triton_models(http_url: str) -> list[str]:
    """'name:version STATE' for every model in the repository index."""
    request = urllib.request.Request(f"{http_url}/v2/repository/index", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            index = json.loads(resp.read())
    except (OSError, ValueError):
        return []
    return [f"{m['name']}:{m.get('version', '?')} {m.get('state', '?')}" for m in index]
