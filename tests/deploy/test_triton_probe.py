"""deploy/triton/probe.py, the Triton readiness/liveness probe, on a real tritonserver: it passes on
a healthy server, and fails when a Python-backend stub has died, which Triton's own health
endpoints do not show (the reason the Kubernetes probes and the compose healthcheck use it)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import psutil
import pytest

from deploy.triton import probe
from tests.conftest import fresh_stack_settings, running_stack

pytestmark = pytest.mark.slow


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_probe_catches_a_dead_python_backend_stub(repo_copy, tmp_path_factory, capsys):
    with running_stack(fresh_stack_settings(tmp_path_factory, model_repository=repo_copy)) as stack:
        s = stack.settings
        base = f"http://{s.host}:{s.triton_http_port}"
        assert probe.main(["ready", "--url", base]) == 0
        assert probe.main(["live", "--url", base]) == 0
        server = psutil.Process(stack._read_record("triton").pid)
        stubs = [p for p in server.children(recursive=True)
                 if any(f"/{probe.FUSION}/" in arg for arg in p.cmdline())]
        assert len(stubs) == 1, [p.cmdline()[:2] for p in server.children(recursive=True)]
        stubs[0].kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not gone(stubs[0]):
            time.sleep(0.1)  # the server, not this process, reaps it: it may stay a zombie
        assert gone(stubs[0])
        # Triton itself still says everything is fine...
        for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{probe.FUSION}/ready",
                     f"/v2/models/{probe.ENSEMBLE}/ready"):
            assert status(base + path) == 200, path
        capsys.readouterr()
        # ...the probe does not.
        assert probe.main(["ready", "--url", base]) == 1
        assert probe.main(["live", "--url", base]) == 1
        out = capsys.readouterr().out
        assert "oanet_fusion did not answer the probe from its stub" in out and "not healthy" in out


def test_probe_fails_when_nothing_listens():
    from deploy.embedded.stack import free_port

    assert probe.main(["ready", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
