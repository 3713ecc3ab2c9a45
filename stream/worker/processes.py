"""`oanet worker` processes started and stopped by a parent: the demo, the end-to-end bench, tests.

A child gets the parent's effective settings through `OANET_*` variables
(`oanet.settings.settings_env`), runs in a session of its own (a Ctrl-C meant for the parent
does not reach it twice; the parent stops it with SIGTERM, which drains and commits), and
writes its JSON log lines to a file that the parent reads for its state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from oanet.settings import Settings, settings_env

OANET_COMMAND = (sys.executable, "-m", "oanet")


class WorkerProcess:
    """One `oanet worker` child with `settings`; `extra` flags are appended to its command line."""

    def __init__(self, settings: Settings, log_path: Path, *, extra: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, inherit_env: bool = True):
        self.log_path = Path(log_path)
        # Without inherit_env, OANET_* variables of this environment are dropped (tests); PATH,
        # HOME, PYTHONPATH... always pass.
        base = {k: v for k, v in os.environ.items() if inherit_env or not k.startswith("OANET_")}
        child_env = {**base, **settings_env(settings), **(env or {})}
        argv = [*OANET_COMMAND, "worker", "--log-format", "json", *extra]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()/stop()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
                                        env=child_env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines, from libraries, are skipped)."""
        events = []
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return events
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def started(self) -> bool:
        return any(e.get("msg") == "worker started" for e in self.events())

    def assignment(self) -> set[int] | None:
        """Partitions of the latest assignment this worker logged (None: none yet)."""
        assigned = None
        for event in self.events():
            if event.get("msg") == "partitions assigned":
                assigned = {int(p.rsplit("[", 1)[1].rstrip("]")) for p in event["partitions"]}
            elif event.get("msg") == "partitions revoked":
                assigned = set()
        return assigned

    def family_rss(self) -> int:
        """Resident memory of the worker and its children (the OCR processes), in bytes."""
        try:
            parent = psutil.Process(self.pid)
            members = [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                continue
        return total

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM (drain, commit, exit); SIGKILL for the whole session after `timeout_s`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the worker and what it started (its OCR processes)."""
        try:
            members = [psutil.Process(self.pid)]
            members += members[0].children(recursive=True)
        except psutil.Error:
            members = []
        for member in members:
            try:
                member.kill()
            except psutil.Error:
                pass
        self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def last_error(self) -> str | None:
        """The worker's own one-line reason when it failed (the last non-JSON line or error event)."""
        tail = self.log_tail(40).splitlines()
        for line in reversed(tail):
            if line.startswith("oanet worker: error:"):
                return line
        errors = [e for e in self.events() if e.get("level") in ("error", "critical")]
        return errors[-1].get("msg") if errors else None
