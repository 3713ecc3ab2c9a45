"""The worker, replay, verdicts and kcat-proxy commands: help and flags-to-settings."""

from __future__ import annotations

import os

import pytest

from oanet.cli import build_parser
from oanet.flags import settings_from_args


@pytest.mark.parametrize("argv", [["worker"], ["replay"], ["verdicts"], ["stack", "kcat-proxy"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0 and "usage: oanet" in capsys.readouterr().out


def test_worker_flags_override_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("OANET_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args([
        "worker", "--group", "g1", "--inference", "local", "--repo", str(tmp_path), "--model-version", "3",
        "--ocr-processes", "2", "--window", "7", "--metrics-port", "0", "--drain-timeout", "5",
        "--frames-topic", "f", "--verdicts-topic", "v", "--dead-letter-topic", "d", "--log-format", "text"])
    s = settings_from_args(args)
    w = s.worker
    assert (w.group_id, w.inference, w.model_version, w.ocr_processes, w.window) == ("g1", "local", 3, 2, 7)
    assert (w.metrics_port, w.drain_timeout_s, w.log_format) == (0, 5.0, "text")
    assert (s.topics.frames, s.topics.verdicts, s.topics.dead_letter) == ("f", "v", "d")
    assert s.stack.model_repository == tmp_path
