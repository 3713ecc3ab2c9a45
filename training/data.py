"""Training data: dataset folder -> object-ROI images, numeric parameter features, labels.

The object ROI is cut with `oanet.preprocess.crop_object_roi` (the very function the stream
client uses) and kept as uint8 BGR NHWC arrays; the CNN normalises inside its TorchScript
graph. Parameter features are the profile's number fields in profile order (text fields
such as a lot id are not features), float32 with NaN for missing, plus a missing mask.

Feature sources (`--features`):
  truth  the manifest's `params` (what is printed: perfect OCR). Fast; tests, no OCR stack.
  ocr    the OCR stage's readings of each frame (stream.ocr), read through its feature cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oanet.dataset import Dataset, DatasetError, ManifestEntry, load_dataset
from training.augment import grid_mask, ocr_dropout
from training.errors import TrainingError
from oanet.preprocess import crop_object_roi, param_arrays

FEATURE_SOURCES = ("truth", "ocr")


@dataclass
class Frames:
    """One split's frames as arrays (row i of every array is frame ids[i])."""

    ids: list[str]
    labels: np.ndarray  # int64 [N]
    causes: list[str]  # "none" | "object" | "param"
    rois: np.ndarray  # uint8 [N, S, S, 3] BGR
    values: np.ndarray  # float32 [N, F], NaN where missing
    missing: np.ndarray  # bool [N, F]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | Sequence[int]) -> Frames:
        index = np.asarray(index, dtype=np.int64)
        return Frames(
            ids=[self.ids[i] for i in index],
            labels=self.labels[index],
            causes=[self.causes[i] for i in index],
            rois=self.rois[index],
            values=self.values[index],
            missing=self.missing[index],
        )


# The random stream of `corrupt`'s test-time corruption; the gate's choice on validation frames
# (training/train.py) draws from another, so the two never share a mask sequence.
CORRUPT_STREAM = 4242


def corrupt(frames: Frames, ocr_missing: float, grid_mask_p: float, seed: int, stream: int = CORRUPT_STREAM) -> Frames:
    """`frames` with each image GridMasked with probability `grid_mask_p` and each present field
    dropped (missing, as when OCR fails) with probability `ocr_missing`."""
    if not 0.0 <= ocr_missing <= 1.0 or not 0.0 <= grid_mask_p <= 1.0:
        raise TrainingError("--ocr-missing and --grid-mask must be probabilities in [0, 1]")
    rng = np.random.default_rng([seed, stream])
    rois, _ = grid_mask(frames.rois, grid_mask_p, rng)
    values, missing = ocr_dropout(frames.values, frames.missing, ocr_missing, rng)
    return Frames(frames.ids, frames.labels, frames.causes, rois, values, missing)


@dataclass
class DataBundle:
    dataset: Dataset
    feature_names: list[str]
    image_size: int
    features: str
    splits: dict[str, Frames] = field(default_factory=dict)


def numeric_fields(dataset: Dataset) -> list[str]:
    names = [f.name for f in dataset.profile.fields if f.kind == "number"]
    if not names:
        raise TrainingError(f"line profile {dataset.profile.name!r} has no number fields: nothing for the "
                            "parameter branch to learn from")
    return names


def spec_ranges(dataset: Dataset, feature_names: Sequence[str]) -> list[tuple[float, float] | None]:
    """Each feature's spec range [low, high] from the profile (None for a field without one), in
    feature order: what the tree models' spec features are computed from (core.tree_features),
    stored in fusion.json so the server needs no profile."""
    specs = {f.name: f.spec for f in dataset.profile.fields}
    return [None if specs.get(name) is None else (float(specs[name][0]), float(specs[name][1]))
            for name in feature_names]


def open_dataset(root: str | Path) -> Dataset:
    try:
        return load_dataset(root)
    except DatasetError as exc:
        raise TrainingError(str(exc)) from None


def check_images(dataset: Dataset, entries: Sequence[ManifestEntry]) -> None:
    absent = [e for e in entries if not dataset.image_path(e).is_file()]
    if absent:
        shown = ", ".join(f"{e.id} ({e.image})" for e in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise TrainingError(f"{len(absent)} image file(s) missing in {dataset.root}: {shown}{more}")


def check_fields(dataset: Dataset, feature_names: Sequence[str], entries: Sequence[ManifestEntry]) -> None:
    """Profile/manifest mismatch: a number field no manifest line ever names (with `--features truth`,
    which reads the manifest; OCR reads the printed panel, so an imported line without parameter
    columns trains with `--features ocr`)."""
    seen: set[str] = set()
    for e in entries:
        seen.update(e.params)
    never = [n for n in feature_names if n not in seen]
    if never:
        raise TrainingError(
            f"profile/manifest mismatch: number field(s) {', '.join(never)} of profile "
            f"{dataset.profile.name!r} appear in no manifest line of {dataset.root} "
            "(--features truth reads them there; --features ocr reads the printed panel)"
        )


def truth_features(entries: Sequence[ManifestEntry], feature_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return param_arrays([e.params for e in entries], feature_names)


def ocr_features(dataset: Dataset, entries: Sequence[ManifestEntry], feature_names: Sequence[str],
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Readings of the OCR stage (stream.ocr) through its feature cache."""
    try:
        from stream.ocr import reader as ocr_reader  # type: ignore[attr-defined]
    except ImportError:
        raise TrainingError(
            "--features ocr needs the OCR stage's feature cache (stream.ocr.reader), which is not "
            "available in this installation; use --features truth"
        ) from None
    records = ocr_reader.read_records(dataset, entries, progress=progress)
    rows = []
    for record in records:
        params = dict(record.params)
        for name in record.missing:
            params[name] = None
        rows.append(params)
    return param_arrays(rows, feature_names)


def load_rois(dataset: Dataset, entries: Sequence[ManifestEntry], size: int, progress: bool = True,
              desc: str = "images") -> np.ndarray:
    """Object ROIs of the frames, uint8 [N, size, size, 3] BGR (decoding in a thread pool)."""
    from tqdm import tqdm

    profile = dataset.profile
    roi, frame = profile.object_roi, (profile.frame.width, profile.frame.height)
    out = np.zeros((len(entries), size, size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            image = dataset.read_image(entries[i])
        except DatasetError as exc:
            raise TrainingError(str(exc)) from None
        out[i] = crop_object_roi(image, roi, frame, size)

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(entries), desc=desc, unit="frame",
                                                    disable=not progress, leave=False) as bar:
        for _ in pool.map(one, range(len(entries))):
            bar.update(1)
    return out


def load_split(dataset: Dataset, entries: Sequence[ManifestEntry], feature_names: Sequence[str], size: int,
               features: str, progress: bool = True, desc: str = "images") -> Frames:
    if features not in FEATURE_SOURCES:
        raise TrainingError(f"unknown feature source {features!r}; expected one of {', '.join(FEATURE_SOURCES)}")
    check_images(dataset, entries)
    if features == "truth":
        values, missing = truth_features(entries, feature_names)
    else:
        values, missing = ocr_features(dataset, entries, feature_names, progress=progress)
    return Frames(
        ids=[e.id for e in entries],
        labels=np.array([e.label for e in entries], dtype=np.int64),
        causes=[e.defect_cause for e in entries],
        rois=load_rois(dataset, entries, size, progress=progress, desc=desc),
        values=values,
        missing=missing,
    )


def check_trainable(bundle: DataBundle, n_folds: int) -> None:
    """Refuse data the method cannot learn from, with the reason."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    for name, frames in (("train", train), ("val", val)):
        classes = set(frames.labels.tolist())
        if len(classes) < 2:
            what = "no frames" if not classes else f"only label {classes.pop()}"
            raise TrainingError(
                f"the {name} split of {bundle.dataset.root} has {what}: training needs both defect (1) "
                "and good (0) frames in train and val"
            )
    counts = np.bincount(train.labels, minlength=2)
    if counts.min() < n_folds:
        raise TrainingError(
            f"too few frames for {n_folds}-fold cross-validation: the train split has {counts[0]} good and "
            f"{counts[1]} defect frames; each class needs at least {n_folds}"
        )


def load_bundle(root: str | Path, image_size: int, features: str, splits: Sequence[str] = ("train", "val", "test"),
            progress: bool = True) -> DataBundle:
    dataset = open_dataset(root)
    feature_names = numeric_fields(dataset)
    if features == "truth":
        check_fields(dataset, feature_names, dataset.entries)
    bundle = DataBundle(dataset=dataset, feature_names=feature_names, image_size=image_size, features=features)
    for name in splits:
        entries = dataset.split(name)
        bundle.splits[name] = load_split(dataset, entries, feature_names, image_size, features, progress,
                                         desc=f"{name} images")
    return bundle
