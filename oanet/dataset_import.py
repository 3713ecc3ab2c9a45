"""`oanet dataset import`: a line's real frames and a labels CSV -> a validated dataset folder.

The CSV has a header row. Columns:
  image   path of the frame file, relative to --images (required)
  label   0 (good) or 1 (defect) (required)
  defect  `object:<kind>`, `param:<field>[,<field>...]`, `none` or empty (optional); a defect
          frame without one is recorded as `object:unspecified`, which the image branch learns
  split   train, val, test or empty (optional)
  group   board, lot or any unit whose frames must stay in one split (optional)
  <field> a printed parameter, named as in the profile (optional); frames without them are
          read by OCR at training time, from the panel printed on the frame

Frames without a split are split by group (a frame without a group is a group of its own),
70/15/15 train/val/test by group count, separately for groups with and without a defect frame,
deterministic by --seed; a group with a split given on any of its lines follows it.

Everything is checked before the folder appears: the CSV first (fast), then every image
(decoded, size against the profile). The folder is written under a temporary name next to
--out and renamed at the end, so a failed import leaves nothing half-written.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from oanet.dataset import (
    IMAGES_DIRNAME,
    SPLIT_SHARES,
    SPLITS,
    VAL_CARVE_SHARE,
    DatasetError,
    ManifestEntry,
    load_dataset,
    write_dataset,
)
from oanet.profile import LineProfile

COLUMN_IMAGE = "image"
COLUMN_LABEL = "label"
COLUMN_DEFECT = "defect"
COLUMN_SPLIT = "split"
COLUMN_GROUP = "group"
RESERVED_COLUMNS = (COLUMN_IMAGE, COLUMN_LABEL, COLUMN_DEFECT, COLUMN_SPLIT, COLUMN_GROUP)
# Manifest key of an imported frame's group (bookkeeping; the split already honours it).
EXTRA_GROUP = "group"
UNSPECIFIED_DEFECT = "object:unspecified"
# Frames the stream takes as they are; other decodable formats are stored as lossless PNG.
_KEPT_FORMATS = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}
# Frames of another size are scaled to the profile frame by every tool; another aspect ratio
# means the wrong profile or a cropped frame.
ASPECT_TOLERANCE = 0.01
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class DatasetImportError(DatasetError):
    """The labels CSV, an image it names or the output folder is unusable."""


@dataclass
class _Row:
    line: int
    image: str  # normalised posix path relative to --images
    label: int
    defect: str
    split: str | None
    group: str | None
    params: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    root: Path
    frames: int
    seconds: float
    split_counts: dict[str, tuple[int, int]]  # split -> (good, defect)
    with_params: int
    converted: int  # frames stored as PNG because their format was not PNG/JPEG


def _normalised_image(value: str, where: str) -> str:
    text = value.strip().replace("\\", "/")
    if not text:
        raise DatasetImportError(f"{where}: column {COLUMN_IMAGE!r} is empty")
    path = PurePosixPath(text)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in path.parts:
        raise DatasetImportError(f"{where}: image {value!r} must be a path relative to --images (no '..')")
    return path.as_posix()


def _defect(value: str, label: int, profile: LineProfile, where: str) -> str:
    text = value.strip()
    if not text:
        return "none" if label == 0 else UNSPECIFIED_DEFECT
    cause, _, detail = text.partition(":")
    if text == "none":
        defect = "none"
    elif cause == "object" and _KIND.match(detail):
        defect = text
    elif cause == "param" and detail:
        names = [name.strip() for name in detail.split(",")]
        unknown = [name for name in names if name not in profile.field_names]
        if unknown:
            raise DatasetImportError(
                f"{where}: defect {text!r} names field(s) not in the line profile: {', '.join(unknown)} "
                f"(fields: {', '.join(profile.field_names)})")
        defect = "param:" + ",".join(names)
    else:
        raise DatasetImportError(
            f"{where}: defect must be empty, 'none', 'object:<kind>' (kind in snake_case) or "
            f"'param:<field>[,<field>...]', got {text!r}")
    if (label == 0) != (defect == "none"):
        raise DatasetImportError(f"{where}: label {label} contradicts defect {defect!r} (label 0 iff no defect)")
    return defect


def _param(name: str, value: str, profile: LineProfile, where: str) -> float | str:
    spec = profile.field(name)
    if spec.kind == "text":
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            raise DatasetImportError(f"{where}: {name} {value!r} does not match the field's pattern {spec.pattern!r}")
        return value
    try:
        number = float(value)
    except ValueError:
        raise DatasetImportError(f"{where}: {name} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise DatasetImportError(f"{where}: {name} must be a finite number, got {value!r}")
    return number


def read_labels(path: Path, profile: LineProfile) -> list[_Row]:
    """Parse and check the labels CSV (not the images); errors name the CSV line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetImportError(f"--labels {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetImportError(f"--labels {path}: cannot read it as UTF-8 text: {exc}") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        raise DatasetImportError(f"{path}: the CSV is empty (expected a header row)") from None
    except csv.Error as exc:
        raise DatasetImportError(f"{path} line 1: malformed CSV: {exc}") from None
    head = f"{path} line 1"
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DatasetImportError(f"{head}: duplicate column(s): {', '.join(duplicates)}")
    unknown = [c for c in header if c not in RESERVED_COLUMNS and c not in profile.field_names]
    if unknown:
        raise DatasetImportError(
            f"{head}: unknown column(s) {', '.join(repr(c) for c in unknown)}; expected "
            f"{', '.join(RESERVED_COLUMNS)} and the profile's fields ({', '.join(profile.field_names)})")
    for required in (COLUMN_IMAGE, COLUMN_LABEL):
        if required not in header:
            raise DatasetImportError(f"{head}: the header has no {required!r} column")
    param_columns = [c for c in header if c in profile.field_names]

    rows: list[_Row] = []
    first_line: dict[str, int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetImportError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
        where = f"{path} line {reader.line_num}"
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise DatasetImportError(f"{where}: {len(cells)} cell(s), the header has {len(header)}")
        values = dict(zip(header, (cell.strip() for cell in cells), strict=True))
        image = _normalised_image(values[COLUMN_IMAGE], where)
        if image in first_line:
            raise DatasetImportError(f"{where}: duplicate image {image!r} (first on line {first_line[image]})")
        first_line[image] = reader.line_num
        if values[COLUMN_LABEL] not in ("0", "1"):
            raise DatasetImportError(f"{where}: label must be 0 or 1, got {values[COLUMN_LABEL]!r}")
        label = int(values[COLUMN_LABEL])
        split = values.get(COLUMN_SPLIT) or None
        if split is not None and split not in SPLITS:
            raise DatasetImportError(f"{where}: split must be one of {', '.join(SPLITS)} or empty, got {split!r}")
        rows.append(_Row(
            line=reader.line_num,
            image=image,
            label=label,
            defect=_defect(values.get(COLUMN_DEFECT, ""), label, profile, where),
            split=split,
            group=values.get(COLUMN_GROUP) or None,
            params={name: _param(name, values[name], profile, where) for name in param_columns if values[name]},
        ))
    if not rows:
        raise DatasetImportError(f"{path}: the CSV lists no frames (only a header)")
    return rows


def _cut(groups: list[str], rng: np.random.Generator, shares: dict[str, float]) -> dict[str, str]:
    """Shuffle groups and hand them out by count; with 3+ groups every split of `shares` gets one."""
    order = [groups[i] for i in rng.permutation(len(groups))]
    names = list(shares)
    counts = {name: round(len(order) * shares[name]) for name in names[1:]}
    if len(order) >= len(names):
        counts = {name: max(1, count) for name, count in counts.items()}
    out: dict[str, str] = {}
    start = len(order) - sum(counts.values())
    for group in order[:start]:
        out[group] = names[0]
    for name in names[1:]:
        for group in order[start : start + counts[name]]:
            out[group] = name
        start += counts[name]
    return out


def assign_splits(rows: list[_Row], seed: int, source: Path) -> list[str]:
    """Each row's split: given, its group's, or drawn by group (stratified by defect, seeded)."""
    keys = [row.group if row.group is not None else f"\0{row.image}" for row in rows]
    given: dict[str, tuple[str, int]] = {}
    for key, row in zip(keys, rows, strict=True):
        if row.split is None:
            continue
        if key in given and given[key][0] != row.split:
            raise DatasetImportError(
                f"{source} line {row.line}: group {row.group!r} is in split {given[key][0]} on line "
                f"{given[key][1]} and {row.split} here; the frames of a group must stay in one split")
        given.setdefault(key, (row.split, row.line))
    split_of = {key: split for key, (split, _) in given.items()}
    free = sorted({key for key in keys if key not in split_of})
    defective = {key for key, row in zip(keys, rows, strict=True) if row.label == 1}
    rng = np.random.default_rng(seed)
    for stratum in ([k for k in free if k in defective], [k for k in free if k not in defective]):
        split_of.update(_cut(stratum, rng, SPLIT_SHARES))
    if "val" not in split_of.values():
        # Carve validation here by group: the dataset loader's own carve would go by frame.
        for stratum in (True, False):
            train = sorted(k for k, s in split_of.items() if s == "train" and (k in defective) == stratum)
            shares = {"train": 1 - VAL_CARVE_SHARE, "val": VAL_CARVE_SHARE}
            split_of.update(_cut(train, rng, shares))
    return [split_of[key] for key in keys]


def _check_image(data: bytes, profile: LineProfile, where: str, path: Path) -> tuple[bytes, str]:
    """The bytes to store and their suffix; the frame decoded and its size checked."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise DatasetImportError(f"{where}: image {path} is not a decodable image file")
    height, width = image.shape[:2]
    frame = profile.frame
    if abs(width / height - frame.width / frame.height) > ASPECT_TOLERANCE * frame.width / frame.height:
        raise DatasetImportError(
            f"{where}: image {path} is {width}x{height}, the profile {profile.name!r} frame is "
            f"{frame.width}x{frame.height} (another aspect ratio: the wrong profile, or a cropped frame?)")
    for magic, suffix in _KEPT_FORMATS.items():
        if data.startswith(magic):
            return data, suffix
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - a decoded uint8 image always encodes
        raise DatasetImportError(f"{where}: image {path} could not be stored as PNG")
    return encoded.tobytes(), ".png"


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetImportError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetImportError(f"--out {out} is not empty; pass --overwrite to replace it")


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished folder in; the old --out (with --overwrite) goes only once the new one is there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def import_dataset(images: Path, labels: Path, profile: LineProfile, out: Path, *, seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> ImportResult:
    """Build and validate a dataset folder at `out`; nothing appears there unless all of it is good."""
    started = time.perf_counter()
    if not images.is_dir():
        raise DatasetImportError(f"--images {images} is not a folder")
    _prepare_out(out, overwrite)
    rows = read_labels(labels, profile)
    splits = assign_splits(rows, seed, labels)

    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.importing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    entries: list[ManifestEntry] = []
    stored: dict[str, int] = {}
    converted = 0
    try:
        (tmp / IMAGES_DIRNAME).mkdir(parents=True)
        for row, split in tqdm(list(zip(rows, splits, strict=True)), desc="import", unit="frame", file=sys.stderr,
                               disable=not progress, dynamic_ncols=True):
            where = f"{labels} line {row.line}"
            source = images / row.image
            try:
                data = source.read_bytes()
            except FileNotFoundError:
                raise DatasetImportError(f"{where}: image {source} not found") from None
            except IsADirectoryError:
                raise DatasetImportError(f"{where}: image {source} is a folder, not a file") from None
            except OSError as exc:
                raise DatasetImportError(f"{where}: cannot read image {source}: {exc.strerror or exc}") from None
            data, suffix = _check_image(data, profile, where, source)
            kept = PurePosixPath(row.image)
            target = (kept if kept.suffix.lower() == suffix or (suffix == ".jpg" and kept.suffix.lower() == ".jpeg")
                      else kept.with_suffix(suffix)).as_posix()
            if target in stored:
                raise DatasetImportError(f"{where}: image {row.image!r} would be stored as {target!r}, like "
                                         f"line {stored[target]}'s image (a format converted to PNG)")
            stored[target] = row.line
            converted += target != row.image
            destination = tmp / IMAGES_DIRNAME / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
            entries.append(ManifestEntry(
                id=row.image, image=f"{IMAGES_DIRNAME}/{target}", label=row.label, defect=row.defect,
                params=dict(row.params), split=split,
                extra={EXTRA_GROUP: row.group} if row.group is not None else {},
            ))
        write_dataset(tmp, profile, entries)
        load_dataset(tmp)  # the folder must read back as every other tool will read it
        _publish(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetImportError(f"cannot write the dataset next to --out {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts: dict[str, Counter[int]] = {s: Counter() for s in SPLITS}
    for entry in entries:
        counts[entry.split][entry.label] += 1
    return ImportResult(
        root=out, frames=len(entries), seconds=time.perf_counter() - started,
        split_counts={s: (c[0], c[1]) for s, c in counts.items()},
        with_params=sum(bool(e.params) for e in entries), converted=converted,
    )
