"""The dataset folder (docs/contracts.md "Dataset folder"): what `synth` writes and every other tool reads.

```
DATASET/profile.yaml     line profile
DATASET/manifest.jsonl   one JSON object per frame
DATASET/images/...       PNG or JPEG files
```

`load_dataset` validates the whole manifest up front, so a bad line fails the command at once
with its line number instead of deep inside training or a benchmark. Images are read lazily.
Splits are resolved here, once, so OCR, training, evaluation and replay agree on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from oanet.contracts import SPLITS
from oanet.errors import OanetError
from oanet.profile import PROFILE_FILENAME, LineProfile, ProfileError, load_profile, save_profile

MANIFEST_FILENAME = "manifest.jsonl"
IMAGES_DIRNAME = "images"
# Shares of frames without an explicit split, as in docs/contracts.md; the paper used 7:3 train/test.
SPLIT_SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}
# When a manifest names no val frames, this share of train becomes val.
VAL_CARVE_SHARE = 0.20

# Extra manifest keys written by `oanet synth` (other producers may omit them).
EXTRA_SMUDGED = "smudged"  # list of field names whose printed line was smudged or occluded
EXTRA_NUISANCE = "nuisance"  # list of nuisance kinds applied to the frame ([] for a clean frame)
# true / false on a drawn object defect: the faint version of its kind (a 1 px scratch, a pin
# hole) or the plain one. `oanet evaluate` reports the two apart: they are learnt very differently.
EXTRA_SUBTLE = "subtle"

Split = Literal["train", "val", "test"]
ParamValue = float | str | None

_DEFECT = re.compile(r"^(none|object:[a-z][a-z0-9_]*|param:[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*)$")


class DatasetError(OanetError):
    """A dataset folder, its manifest or one of its images is missing or invalid."""

    exit_code = 2


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    image: str
    label: int
    defect: str
    params: dict[str, ParamValue]
    split: str
    # Keys of the manifest line beyond the contract (e.g. "smudged", "nuisance"), kept as read.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def defect_cause(self) -> str:
        """"none", "object" or "param"."""
        return self.defect.split(":", 1)[0]

    @property
    def defect_detail(self) -> list[str]:
        """The object kind (one item) or the out-of-spec fields of a parameter defect."""
        return [] if self.defect == "none" else self.defect.split(":", 1)[1].split(",")

    @property
    def smudged_fields(self) -> frozenset[str]:
        return frozenset(self.extra.get(EXTRA_SMUDGED) or ())

    @property
    def nuisance_kinds(self) -> tuple[str, ...]:
        return tuple(self.extra.get(EXTRA_NUISANCE) or ())

    @property
    def subtle(self) -> bool | None:
        """Whether a drawn object defect is its kind's faint version (None: not recorded, or not
        a JSON boolean: a hand-written "false" must not count as faint)."""
        value = self.extra.get(EXTRA_SUBTLE)
        return value if isinstance(value, bool) else None

    def to_json(self) -> dict[str, Any]:
        line = {
            "id": self.id,
            "image": self.image,
            "label": self.label,
            "defect": self.defect,
            "params": dict(self.params),
            "split": self.split,
        }
        line.update({k: v for k, v in self.extra.items() if k not in line})
        return line


class _ManifestLine(BaseModel):
    """Schema of one manifest line; extra keys are allowed and passed through."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    label: StrictInt
    defect: str
    params: dict[str, StrictFloat | StrictInt | StrictStr | None]
    split: Split | None = None

    @field_validator("label")
    @classmethod
    def _binary(cls, value: int) -> int:
        if value not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {value}")
        return value

    @field_validator("image")
    @classmethod
    def _inside_dataset(cls, value: str) -> str:
        path = PurePosixPath(value.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", value):
            raise ValueError(f"image must be a path relative to the dataset folder, got {value!r}")
        return value

    @field_validator("defect")
    @classmethod
    def _defect_form(cls, value: str) -> str:
        if not _DEFECT.match(value):
            raise ValueError(
                f"defect must be 'none', 'object:<kind>' or 'param:<field>[,<field>...]', got {value!r}"
            )
        return value


def split_fraction(frame_id: str, salt: str = "split") -> float:
    """A stable number in [0, 1) from a frame id: the same on every machine and Python run."""
    digest = hashlib.sha256(f"{salt}:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_id(frame_id: str) -> str:
    """The split of a frame whose manifest line names none (70/15/15 by a hash of its id)."""
    u = split_fraction(frame_id)
    if u < SPLIT_SHARES["train"]:
        return "train"
    return "val" if u < SPLIT_SHARES["train"] + SPLIT_SHARES["val"] else "test"


def _resolve_splits(lines: list[_ManifestLine]) -> list[str]:
    splits = [line.split or split_for_id(line.id) for line in lines]
    if "val" not in splits:
        splits = [
            "val" if s == "train" and split_fraction(line.id, "val-carve") < VAL_CARVE_SHARE else s
            for s, line in zip(splits, lines, strict=True)
        ]
    return splits


def _check_against_profile(line: _ManifestLine, profile: LineProfile) -> None:
    names = set(profile.field_names)
    for name, value in line.params.items():
        if name not in names:
            raise ValueError(f"params names field {name!r}, which is not in the line profile")
        kind = profile.field(name).kind
        if value is None:
            continue
        if kind == "number" and not isinstance(value, (int, float)):
            raise ValueError(f"params.{name} must be a number (field kind 'number'), got {value!r}")
        if kind == "text" and not isinstance(value, str):
            raise ValueError(f"params.{name} must be a string (field kind 'text'), got {value!r}")
    if line.defect.startswith("param:"):
        unknown = [f for f in line.defect.removeprefix("param:").split(",") if f not in names]
        if unknown:
            raise ValueError(f"defect names field(s) not in the line profile: {', '.join(unknown)}")
    if (line.label == 0) != (line.defect == "none"):
        raise ValueError(f"label {line.label} contradicts defect {line.defect!r} (label 0 iff defect 'none')")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            msg = "missing key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_manifest(text: str, profile: LineProfile, source: str = MANIFEST_FILENAME) -> list[ManifestEntry]:
    """Validate manifest text against a profile; errors name the 1-based line number."""
    lines: list[_ManifestLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{source} line {number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: a manifest line must be a JSON object, got {type(data).__name__}")
        try:
            line = _ManifestLine.model_validate(data)
            _check_against_profile(line, profile)
        except ValidationError as exc:
            raise DatasetError(f"{where}: {_describe(exc)}") from None
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if line.id in seen:
            raise DatasetError(f"{where}: duplicate id {line.id!r} (first on line {seen[line.id]})")
        seen[line.id] = number
        lines.append(line)
    if not lines:
        raise DatasetError(f"{source}: the manifest lists no frames")
    return [
        ManifestEntry(
            id=line.id,
            image=line.image,
            label=line.label,
            defect=line.defect,
            params=dict(line.params),
            split=split,
            extra=dict(line.model_extra or {}),
        )
        for line, split in zip(lines, _resolve_splits(lines), strict=True)
    ]


@dataclass
class Dataset:
    root: Path
    profile: LineProfile
    entries: list[ManifestEntry]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    def image_path(self, entry: ManifestEntry) -> Path:
        return self.root / entry.image

    def read_bytes(self, entry: ManifestEntry) -> bytes:
        """The encoded image file, as a camera would send it to the frames topic."""
        path = self.image_path(entry)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"frame {entry.id}: cannot read image {path}: {exc.strerror or exc}") from None

    def read_image(self, entry: ManifestEntry) -> np.ndarray:
        """The frame as BGR uint8, at the size it was stored (not scaled to the profile frame)."""
        data = self.read_bytes(entry)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise DatasetError(f"frame {entry.id}: image {self.image_path(entry)} is not a decodable PNG/JPEG")
        return image

    def split(self, name: str) -> list[ManifestEntry]:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [e for e in self.entries if e.split == name]


def load_dataset(root: str | Path) -> Dataset:
    """Load a dataset folder, validating its profile and every manifest line."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if not (root / PROFILE_FILENAME).is_file():
        raise DatasetError(f"{root} is not a dataset folder: {PROFILE_FILENAME} is missing")
    manifest = root / MANIFEST_FILENAME
    if not manifest.is_file():
        raise DatasetError(f"{root} is not a dataset folder: {MANIFEST_FILENAME} is missing")
    try:
        profile = load_profile(root / PROFILE_FILENAME)
    except ProfileError as exc:
        raise DatasetError(str(exc)) from None
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{manifest}: cannot read manifest: {exc}") from None
    return Dataset(root=root, profile=profile, entries=parse_manifest(text, profile, str(manifest)))


class ManifestWriter:
    """Appends manifest lines as frames are produced, so a long run leaves a usable prefix."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / MANIFEST_FILENAME
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, entry: ManifestEntry) -> None:
        self._file.write(json.dumps(entry.to_json(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_manifest(root: str | Path, entries: Iterable[ManifestEntry]) -> Path:
    with ManifestWriter(root) as writer:
        for entry in entries:
            writer.write(entry)
    return writer.path


def write_dataset(root: str | Path, profile: LineProfile, entries: Iterable[ManifestEntry]) -> Path:
    """Write profile.yaml and manifest.jsonl (images are the caller's); returns the root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    save_profile(profile, root / PROFILE_FILENAME)
    write_manifest(root, entries)
    return root
