"""Which processes a PID file makes ours: `stop_service` must never leave a live server of ours
behind (a wall-clock start time that moved, a server that died leaving its Python stubs) and
never signal a process that merely reuses a recorded pid. Plain sleeping processes stand in for
the servers, so nothing here waits on Tansu or Triton."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from deploy.embedded.stack import TRITON, EmbeddedStack, ServiceRecord, start_ticks

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def stack(stack_settings_factory) -> EmbeddedStack:
    stack = EmbeddedStack(stack_settings_factory())
    stack.pid_dir.mkdir(parents=True)
    return stack


@pytest.fixture
def spawned():
    """spawned(argv) -> Popen in a session of its own; every one is killed at the end."""
    started: list[subprocess.Popen] = []

    def spawn(argv: list[str]) -> subprocess.Popen:
        started.append(subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, text=True))
        return started[-1]

    yield spawn
    for process in started:
        process.kill()
        process.wait()


def _record(stack: EmbeddedStack, pid: int, argv: list[str], **changes) -> None:
    values = asdict(ServiceRecord(TRITON, pid, psutil.Process(pid).create_time(), argv, {}, "log", {}, start_ticks(pid)))
    stack.pid_file(TRITON).write_text(json.dumps({**values, **changes}))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start ticks come from /proc")
def test_a_server_whose_wall_clock_start_moved_a_second_is_still_stopped(stack, spawned):
    # /proc/stat btime is an integer: a clock slewed across a second boundary moves psutil's
    # create_time by exactly 1 s, which the old 1 s tolerance took for a recycled pid.
    server = spawned(SLEEPER)
    _record(stack, server.pid, SLEEPER, create_time=psutil.Process(server.pid).create_time() + 1.0)
    assert stack.is_running(TRITON)
    assert stack.stop_service(TRITON)
    assert server.wait(timeout=10) is not None and not stack.pid_file(TRITON).exists()


def test_a_record_of_an_older_version_is_stopped_by_its_command_line(stack, spawned):
    server = spawned(SLEEPER)
    _record(stack, server.pid, SLEEPER, create_time=psutil.Process(server.pid).create_time() + 1.0, start_ticks=None)
    assert stack.stop_service(TRITON)
    assert server.wait(timeout=10) is not None


def test_a_recycled_pid_is_never_signalled(stack, spawned):
    stranger = spawned(SLEEPER)
    ticks = start_ticks(stranger.pid)
    _record(stack, stranger.pid, ["tritonserver", "--http-port=1"], create_time=1.0,
            start_ticks=None if ticks is None else ticks - 1)
    assert not stack.is_running(TRITON)
    assert not stack.stop_service(TRITON)
    assert stranger.poll() is None and not stack.pid_file(TRITON).exists()


def test_what_a_dead_server_left_in_its_session_is_stopped(stack, spawned):
    # Triton dies (std::bad_alloc): its Python stubs, same session, outlive it.
    leader = spawned([sys.executable, "-c", "import subprocess, sys, time\n"
                      f"stub = subprocess.Popen({SLEEPER!r})\nprint(stub.pid, flush=True)\ntime.sleep(120)"])
    stub = int(leader.stdout.readline())
    _record(stack, leader.pid, SLEEPER)
    leader.kill()
    leader.wait()
    assert not _gone(stub) and not stack.is_running(TRITON)
    assert not stack.stop_service(TRITON)  # the server was not running...
    deadline = time.monotonic() + 10
    while not _gone(stub) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(stub)  # ...and what it left is stopped all the same
    assert not stack.pid_file(TRITON).exists()
