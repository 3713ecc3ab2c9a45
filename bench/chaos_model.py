"""The data and model `oanet bench chaos` uses when it is given no --data/--repo.

The bench measures delivery, not accuracy, so it needs only a model Triton serves and frames of
its line: 96 small synthetic frames (`oanet synth`) of the built-in line cut to its first
`FIELDS` number fields (line `<name>-small`), and a tiny model trained on them with the
perfect-OCR features (`oanet train` with a 32 px CNN, one epoch), exported unsigned with the
default CNN backend (`oanet export`): about a minute on 2 cores. The cut keeps OCR, which
costs per field, cheap enough that 2 workers on 2 shared cores keep up with the default
8 frames/s; with all 10 fields they output under 4/s and frames age past the deadline.

Built once into `.cache/bench-chaos/<key>` of the checkout, next to the OCR models, and reused:
the key is the package version and a digest of this recipe and of the sources that write a
model repository (oanet/, training/, triton_models/), because the repository carries copies of
the serving code and a cached one must never serve code older than the checkout's. A build is
staged in a hidden sibling folder and renamed into place when complete, so an interrupted or
concurrent build never leaves a half-written folder under the key.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import BenchError

FIELDS = 3
SYNTH = {"n": 96, "seed": 11, "width": 320, "height": 240}  # 4:3 like the line; small, so OCR is cheap
TRAIN = ["--features", "truth", "--image-size", "32", "--epochs", "1", "--fusion-epochs", "3", "--tree-rounds", "10",
         "--mask-copies", "1", "--embedding-dim", "16", "--quiet"]
COMPLETE = "complete.json"
SOURCE_PACKAGES = ("oanet", "training", "triton_models")


def cache_root() -> Path:
    from oanet.ocr_settings import CHECKOUT_ROOT

    return CHECKOUT_ROOT / ".cache" / "bench-chaos"


def recipe_key() -> str:
    from oanet import __version__
    from oanet.ocr_settings import CHECKOUT_ROOT
    from oanet.profile import DEFAULT_PROFILE_PATH

    digest = hashlib.sha256(json.dumps({"synth": SYNTH, "train": TRAIN, "fields": FIELDS}, sort_keys=True).encode())
    digest.update(DEFAULT_PROFILE_PATH.read_bytes())
    for package in SOURCE_PACKAGES:
        for path in sorted((CHECKOUT_ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(CHECKOUT_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}-{digest.hexdigest()[:12]}"


def default_model(progress: Callable[[str], None], root: Path | None = None) -> tuple[Path, Path]:
    """(dataset folder, model repository) of the recipe, built under `root` (default
    `cache_root()`) unless a complete build of the same key is there already."""
    folder = (root or cache_root()) / recipe_key()
    if (folder / COMPLETE).is_file():
        progress(f"data and model: reusing {folder} (no --data/--repo given)")
        return folder / "data", folder / "repo"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as exc:
        raise BenchError(f"cannot write the bench's data and model under {folder.parent} ({exc.strerror}); "
                         "give --data and --repo") from None
    try:
        _build(staging, folder.name, progress)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / COMPLETE).is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"data and model: kept in {folder} for the next run")
    return folder / "data", folder / "repo"


def _build(folder: Path, key: str, progress: Callable[[str], None]) -> None:
    from oanet.profile import DEFAULT_PROFILE_PATH, load_profile
    from training.commands import add_train_arguments
    from training.export import export_run
    from training.synth.generate import generate
    from training.train import main as train

    line = load_profile(DEFAULT_PROFILE_PATH)
    numbers = tuple(f for f in line.fields if f.kind == "number")[:FIELDS]
    profile = line.model_validate({**line.model_dump(), "name": f"{line.name}-small", "fields": numbers})
    data, run, repo = folder / "data", folder / "run", folder / "repo"
    progress(f"data and model 1/3: {SYNTH['n']} synthetic {SYNTH['width']}x{SYNTH['height']} frames of line "
             f"{profile.name!r} (oanet synth)")
    generate(data, profile, SYNTH["n"], SYNTH["seed"], width=SYNTH["width"], height=SYNTH["height"], workers=1,
             progress=False)
    progress("data and model 2/3: a tiny model trained on them (oanet train: 32 px CNN, 1 epoch, perfect-OCR features)")
    parser = argparse.ArgumentParser(prog="oanet train")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resume", action="store_true")
    add_train_arguments(parser)
    with contextlib.redirect_stdout(sys.stderr):  # the training summary is progress; stdout carries the report
        train(parser.parse_args(["--data", str(data), "--out", str(run), *TRAIN]))
    progress("data and model 3/3: exported as version 1 of a model repository (oanet export, unsigned)")
    export_run(run, repo)
    shutil.rmtree(run)
    (folder / COMPLETE).write_text(json.dumps({"key": key, "synth": SYNTH, "train": TRAIN}, indent=2))
