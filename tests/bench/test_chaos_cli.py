"""`oanet bench chaos`: its help, and bad options as one line with exit status 2 (the run itself:
tests/stream/worker/test_chaos.py drives the same code)."""

from __future__ import annotations

import pytest

from oanet.cli import main


def test_help_names_what_it_asserts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "chaos", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for words in ("--frames", "--kills", "--rate", "--deadline", "SIGKILLed", "Exit 0 when all hold, 1 otherwise"):
        assert words in " ".join(out.split()), words


@pytest.mark.parametrize(("args", "message"), [
    (["--frames", "10"], "--frames must be at least 40"),
    (["--kills", "1"], "--kills must be at least 2"),
    (["--workers", "1"], "--workers must be at least 2"),
    (["--rate", "0"], "--rate must be positive"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    assert main(["bench", "chaos", "--data", str(tmp_path), "--repo", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_a_folder_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["bench", "chaos", "--data", str(tmp_path), "--repo", str(tmp_path), "--frames", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no exported model" in err


def test_data_and_repo_come_together_or_not_at_all(tmp_path, capsys):
    assert main(["bench", "chaos", "--data", str(tmp_path), "--frames", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --data and --repo together, or neither" in err


def test_without_data_and_repo_options_are_checked_before_anything_is_built(capsys, monkeypatch, tmp_path):
    import bench.chaos_model

    monkeypatch.setattr(bench.chaos_model, "cache_root", lambda: tmp_path / "cache")
    assert main(["bench", "chaos", "--frames", "10"]) == 2
    assert "--frames must be at least 40" in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_a_complete_build_under_its_key_is_reused(tmp_path):
    from bench.chaos_model import COMPLETE, default_model, recipe_key

    folder = tmp_path / recipe_key()
    folder.mkdir()
    (folder / COMPLETE).write_text("{}")
    said: list[str] = []
    assert default_model(said.append, tmp_path) == (folder / "data", folder / "repo")
    assert said and "reusing" in said[0]
