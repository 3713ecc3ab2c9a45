"""Orchestration of `oanet synth`: options, one frame, the pool, the dataset folder and a preview.

Every frame is a pure function of (profile, seed, index, defect rate, output size): its random
generator is seeded from (seed, index), so worker count and scheduling never change the data.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oanet.dataset import (
    EXTRA_NUISANCE,
    EXTRA_SMUDGED,
    EXTRA_SUBTLE,
    IMAGES_DIRNAME,
    MANIFEST_FILENAME,
    ManifestEntry,
    ManifestWriter,
    split_for_id,
)
from oanet.errors import OanetError
from oanet.profile import PROFILE_FILENAME, LineProfile, save_profile
from training.synth import nuisance, objects, panel, params, scene
from training.synth.objects import ObjectBank

DEFAULT_DEFECT_RATE = 0.40
SMUDGE_SHARE = 0.08
# Manifest key of a `--objects` frame: the real image in its object ROI, relative to --objects.
EXTRA_OBJECT_IMAGE = "object_image"
FORMATS = ("png", "jpeg")
_EXTENSIONS = {"png": ".png", "jpeg": ".jpg"}
_ENCODE_FLAGS = {
    # Fastest zlib level with run-length matching: smaller than level 3 on these frames, 2-3x quicker.
    "png": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE],
    "jpeg": [cv2.IMWRITE_JPEG_QUALITY, 92],
}
_LINE_START = dt.datetime(2026, 11, 22, 6, 0, 0)
_BACKGROUND = (28, 30, 32)


class SynthError(OanetError):
    """Bad arguments for `oanet synth`, or the output folder cannot be written."""

    exit_code = 2


@dataclass(frozen=True)
class FrameSpec:
    """What every frame of one run shares."""

    profile: LineProfile
    seed: int
    defect_rate: float
    width: int
    height: int
    image_format: str = "png"
    package: str = params.DEFAULT_PACKAGE
    # Real object images (`--objects`): they replace the drawn package in the object ROI.
    objects: ObjectBank | None = None


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    entry: ManifestEntry


@dataclass(frozen=True)
class SynthResult:
    frames: int
    seconds: float
    causes: dict[str, int]
    smudged_frames: int
    nuisance_frames: int

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def frame_id(index: int, total: int) -> str:
    return f"f{index:0{max(6, len(str(max(total - 1, 0))))}d}"


def render_frame(spec: FrameSpec, index: int, total: int) -> Frame:
    """Frame number `index` of a run: image (BGR uint8, output size) and its manifest entry."""
    profile = spec.profile
    rng = np.random.default_rng([spec.seed, index])
    lot_rng = np.random.default_rng([spec.seed, index // params.FRAMES_PER_LOT, 7])
    fid = frame_id(index, total)
    split = split_for_id(fid)
    bank = spec.objects
    kinds = None if bank is None else (bank.kinds, bank.kind_weights)
    truth = params.sample_truth(profile, rng, spec.defect_rate, lot_rng, package=spec.package, kinds=kinds)

    frame = np.empty((profile.frame.height, profile.frame.width, 3), np.uint8)
    frame[:] = _BACKGROUND
    ox, oy, ow, oh = profile.object_roi
    extra: dict[str, object] = {}
    if bank is None:
        obj = scene.draw_object(ow, oh, truth.object_kind, truth.subtle, rng, package=spec.package)
        extra["package"] = spec.package
        if truth.object_kind is not None:
            extra[EXTRA_SUBTLE] = truth.subtle
    else:
        source = bank.pick(truth.object_kind, split, rng)
        obj = objects.place(source, ow, oh, rng)
        extra[EXTRA_OBJECT_IMAGE] = source.relative
    frame[oy : oy + oh, ox : ox + ow] = nuisance.sensor_noise(obj, rng, rng.uniform(1.2, 2.4))

    captured = _LINE_START + dt.timedelta(seconds=index * 2.4 + float(rng.uniform(0, 0.8)))
    header = f"AOI STATION {1 + spec.seed % 8}  {profile.name.upper()}  {captured:%Y-%m-%d %H:%M:%S}"
    printed = panel.draw_panel(frame, profile, truth.params, header, rng)

    nuisances = nuisance.choose_kinds(rng)
    smudged = panel.smudge(frame, printed, rng) if rng.random() < SMUDGE_SHARE else []
    frame = nuisance.apply_capture(frame, nuisances, rng)
    if (frame.shape[1], frame.shape[0]) != (spec.width, spec.height):
        shrinking = spec.width * spec.height < frame.shape[0] * frame.shape[1]
        frame = cv2.resize(frame, (spec.width, spec.height),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if "jpeg" in nuisances:
        frame = nuisance.jpeg_round_trip(frame, rng)

    entry = ManifestEntry(
        id=fid,
        image=f"{IMAGES_DIRNAME}/{fid}{_EXTENSIONS[spec.image_format]}",
        label=truth.label,
        defect=truth.defect,
        params=dict(truth.params),
        split=split,
        extra={EXTRA_SMUDGED: smudged, EXTRA_NUISANCE: nuisances + (["smudge"] if smudged else []), **extra},
    )
    return Frame(frame, entry)


def encode(image: np.ndarray, image_format: str) -> bytes:
    ok, data = cv2.imencode(_EXTENSIONS[image_format], image, _ENCODE_FLAGS[image_format])
    if not ok:  # pragma: no cover - OpenCV does not fail on a valid uint8 image
        raise SynthError(f"OpenCV could not encode a frame as {image_format}")
    return data.tobytes()


# Worker state, set once per process by the pool initializer instead of pickled per task.
_worker: dict[str, object] = {}


def _init_worker(spec: FrameSpec, total: int, root: Path) -> None:
    _worker.update(spec=spec, total=total, root=root)
    # One thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def _init_pool_worker(spec: FrameSpec, total: int, root: Path) -> None:
    # A forked worker inherits its parent's signal handlers: `oanet demo`'s SIGTERM handler
    # raised in every worker when the pool was terminated, and each printed a traceback. The
    # parent owns Ctrl-C and termination; a worker just ends.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(spec, total, root)


def _produce(index: int) -> ManifestEntry:
    spec: FrameSpec = _worker["spec"]  # type: ignore[assignment]
    frame = render_frame(spec, index, _worker["total"])  # type: ignore[arg-type]
    path = _worker["root"] / frame.entry.image  # type: ignore[operator]
    path.write_bytes(encode(frame.image, spec.image_format))
    return frame.entry


def validate_options(n: int, defect_rate: float, width: int | None, height: int | None,
                     image_format: str, workers: int | None, seed: int,
                     package: str = params.DEFAULT_PACKAGE) -> None:
    if n <= 0:
        raise SynthError(f"--n must be a positive number of frames, got {n}")
    if not 0.0 <= defect_rate <= 1.0:
        raise SynthError(f"--defect-rate must be between 0 and 1, got {defect_rate}")
    if seed < 0:
        raise SynthError(f"--seed must be >= 0, got {seed}")
    for name, value in (("--width", width), ("--height", height)):
        if value is not None and not 16 <= value <= 16384:
            raise SynthError(f"{name} must be between 16 and 16384 pixels, got {value}")
    if image_format not in FORMATS:
        raise SynthError(f"--format must be one of {', '.join(FORMATS)}, got {image_format!r}")
    if workers is not None and workers <= 0:
        raise SynthError(f"--workers must be >= 1, got {workers}")
    if package not in params.PACKAGES:
        raise SynthError(f"--package must be one of {', '.join(params.PACKAGES)}, got {package!r}")


def prepare_output(root: Path, overwrite: bool) -> None:
    """Create the dataset folder; refuse a non-empty one unless told to replace a dataset in it."""
    if root.exists() and not root.is_dir():
        raise SynthError(f"--out {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise SynthError(f"--out {root} is not empty; pass --overwrite to replace the dataset in it")
        shutil.rmtree(root / IMAGES_DIRNAME, ignore_errors=True)
        for name in (MANIFEST_FILENAME, PROFILE_FILENAME):
            (root / name).unlink(missing_ok=True)
    try:
        (root / IMAGES_DIRNAME).mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SynthError(f"cannot write to --out {root}: {exc.strerror or exc}") from None


def generate(
    root: Path,
    profile: LineProfile,
    n: int,
    seed: int,
    *,
    defect_rate: float = DEFAULT_DEFECT_RATE,
    width: int | None = None,
    height: int | None = None,
    image_format: str = "png",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    package: str = params.DEFAULT_PACKAGE,
    objects: ObjectBank | None = None,
) -> SynthResult:
    """Write a dataset folder of `n` frames of one `package` type ("mixed": both), or showing the real
    images of `objects`; progress to stderr."""
    validate_options(n, defect_rate, width, height, image_format, workers, seed, package)
    prepare_output(root, overwrite)
    spec = FrameSpec(profile, seed, defect_rate, width or profile.frame.width,
                     height or profile.frame.height, image_format, package, objects)
    save_profile(profile, root / PROFILE_FILENAME)
    workers = min(workers or os.cpu_count() or 1, n)

    from tqdm import tqdm

    started = time.perf_counter()
    causes: Counter[str] = Counter()
    smudged = nuisance_frames = 0
    with ManifestWriter(root) as writer, tqdm(total=n, unit="frame", desc="synth", file=sys.stderr,
                                               disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1:
            _init_worker(spec, n, root)
            entries = map(_produce, range(n))
            pool = None
        else:
            # fork keeps start-up cheap on Linux; the workers only read the frozen spec.
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            pool = context.Pool(workers, initializer=_init_pool_worker, initargs=(spec, n, root))
            entries = pool.imap(_produce, range(n), chunksize=max(1, min(16, n // (workers * 8))))
        try:
            for entry in entries:
                writer.write(entry)
                causes[entry.defect_cause] += 1
                smudged += bool(entry.smudged_fields)
                nuisance_frames += bool(entry.nuisance_kinds)
                bar.update()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return SynthResult(n, time.perf_counter() - started, dict(causes), smudged, nuisance_frames)


def write_preview(root: Path, entries: list[ManifestEntry], path: Path, count: int = 12) -> Path:
    """A 4-column grid of thumbnails, one of each defect kind first, captioned with the label."""
    chosen: list[ManifestEntry] = []
    seen: set[str] = set()
    for entry in entries:
        key = entry.defect if entry.defect_cause == "object" else entry.defect_cause
        if key not in seen:
            seen.add(key)
            chosen.append(entry)
    chosen = (chosen + [e for e in entries if e not in chosen])[:count]
    columns, thumb_w = 4, 320
    tiles = []
    for entry in chosen:
        image = cv2.imread(str(root / entry.image), cv2.IMREAD_COLOR)
        thumb_h = int(round(image.shape[0] * thumb_w / image.shape[1]))
        tile = np.full((thumb_h + 24, thumb_w, 3), 255, np.uint8)
        tile[:thumb_h] = cv2.resize(image, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
        caption = f"{entry.id} {entry.defect}" + ("  [smudged]" if entry.smudged_fields else "")
        color = (0, 120, 0) if entry.label == 0 else (0, 0, 200)
        cv2.putText(tile, caption[:48], (4, thumb_h + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, 1, cv2.LINE_AA)
        tiles.append(tile)
    tile_h = max(t.shape[0] for t in tiles)
    blank = np.full((tile_h, thumb_w, 3), 255, np.uint8)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack([cv2.copyMakeBorder(t, 0, tile_h - t.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255,) * 3)
                       for t in tiles[i : i + columns]]) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise SynthError(f"cannot write the preview {path}")
    return path
