"""Line profile: the layout of one AOI machine's frames (docs/contracts.md "Line profile").

A profile is everything the product needs to support a new machine: the frame size, where the
inspected object is, where the parameter panel is printed, and which fields it prints. The
field order here is the feature order everywhere downstream (OCR records, training features,
Triton tensors), so it is defined by the profile and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oanet.errors import OanetError

PROFILE_FILENAME = "profile.yaml"
# The built-in profile of a semiconductor package line, used when a command is given none.
DEFAULT_PROFILE_PATH = Path(__file__).parent / "profiles" / "line-a.yaml"
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


class ProfileError(OanetError):
    """A line profile is missing, unreadable or invalid."""

    exit_code = 2


Roi = Annotated[tuple[int, int, int, int], Field(description="[x, y, w, h] in frame pixels")]


def _check_roi(roi: tuple[int, int, int, int], what: str) -> tuple[int, int, int, int]:
    x, y, w, h = roi
    if x < 0 or y < 0:
        raise ValueError(f"{what} [x, y, w, h] must have x, y >= 0, got {list(roi)}")
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} [x, y, w, h] must have w, h > 0, got {list(roi)}")
    return roi


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameSize(_Strict):
    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)


class FieldSpec(_Strict):
    name: str
    label: str
    kind: Literal["number", "text"] = "number"
    unit: str | None = None
    spec: tuple[float, float] | None = None
    roi: Roi | None = None
    # Optional helpers for reading and generating values; absent keys keep the defaults.
    decimals: int | None = Field(None, ge=0, le=6)
    plausible: tuple[float, float] | None = None
    pattern: str | None = None

    @field_validator("name")
    @classmethod
    def _snake_case(cls, value: str) -> str:
        if not _SNAKE.match(value):
            raise ValueError(f"field name {value!r} must be snake_case (a-z, 0-9, _; starting with a letter)")
        return value

    @field_validator("label")
    @classmethod
    def _label_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("label must not be empty")
        return value

    @field_validator("roi")
    @classmethod
    def _roi_shape(cls, value: Roi | None) -> Roi | None:
        return None if value is None else _check_roi(value, "roi")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> FieldSpec:
        for key in ("spec", "plausible"):
            bounds = getattr(self, key)
            if bounds is not None:
                if self.kind != "number":
                    raise ValueError(f"{key} applies to number fields only (field {self.name!r} is text)")
                if bounds[0] > bounds[1]:
                    raise ValueError(f"{key} of field {self.name!r} must be [low, high] with low <= high")
        if self.spec is not None and self.plausible is not None:
            if self.spec[0] < self.plausible[0] or self.spec[1] > self.plausible[1]:
                raise ValueError(f"spec of field {self.name!r} must lie inside its plausible range")
        if self.kind == "text" and (self.decimals is not None):
            raise ValueError(f"decimals applies to number fields only (field {self.name!r} is text)")
        return self

    def in_spec(self, value: float | str | None) -> bool | None:
        """True/False for a number field with a spec range; None when it cannot be judged."""
        if self.spec is None or value is None or isinstance(value, str):
            return None
        return self.spec[0] <= float(value) <= self.spec[1]


# Hershey faces `oanet synth` can print a panel in (training/synth/panel.py maps them to OpenCV's).
PrintFont = Literal["simplex", "plain", "duplex", "complex", "triplex", "complex_small", "script_simplex",
                    "script_complex"]
PRINT_FONTS: tuple[str, ...] = get_args(PrintFont)
_SEPARATOR = re.compile(r"^[ :=]+$")


class PrintStyle(_Strict):
    """How `oanet synth` prints this line's panel, where it is not the built-in mix of faces and
    separators. Nothing reads it but the generator: the OCR stage reads any of them."""

    fonts: tuple[PrintFont, ...] | None = Field(None, min_length=1)
    italic: bool = False
    separators: tuple[str, ...] | None = Field(None, min_length=1)

    @field_validator("separators")
    @classmethod
    def _separator_chars(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for separator in value or ():
            if not _SEPARATOR.match(separator):
                raise ValueError(f"separator {separator!r} must be made of ':', '=' and spaces (docs/contracts.md)")
        return value


class LineProfile(_Strict):
    name: str
    frame: FrameSize
    object_roi: Roi
    panel_roi: Roi
    fields: tuple[FieldSpec, ...] = Field(min_length=1)
    # Left out of dumps (the digests of the OCR cache and of a student, a dataset's profile.yaml):
    # the same layout printed in another face is the same line to the reader.
    printing: PrintStyle | None = Field(None, exclude=True)

    @field_validator("object_roi", "panel_roi")
    @classmethod
    def _roi_shape(cls, value: Roi, info: Any) -> Roi:
        return _check_roi(value, info.field_name)

    @model_validator(mode="after")
    def _consistent(self) -> LineProfile:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate field name(s): {', '.join(duplicates)}")
        labels = [f.label.strip().upper() for f in self.fields]
        dup_labels = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
        if dup_labels:
            raise ValueError(f"duplicate field label(s): {', '.join(dup_labels)}")
        self._inside("object_roi", self.object_roi)
        self._inside("panel_roi", self.panel_roi)
        for f in self.fields:
            if f.roi is not None:
                self._inside(f"roi of field {f.name!r}", f.roi)
        return self

    def _inside(self, what: str, roi: Roi) -> None:
        x, y, w, h = roi
        if x + w > self.frame.width or y + h > self.frame.height:
            raise ValueError(
                f"{what} {list(roi)} lies outside the {self.frame.width}x{self.frame.height} frame"
            )

    @property
    def field_names(self) -> list[str]:
        """Every field of the panel, text ones included, in profile order. The model's numeric
        parameter columns are `feature_names` (fusion.json, ServedModel): number fields only."""
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _location(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """`fields.1.spec` becomes `fields[1] (temp).spec`: users know their fields by name."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and i == 1 and loc[0] == "fields":
            fields = data.get("fields")
            name = None
            if isinstance(fields, list) and part < len(fields) and isinstance(fields[part], dict):
                name = fields[part].get("name")
            parts[-1] += f"[{part}]" + (f" ({name})" if isinstance(name, str) else "")
        else:
            parts.append(str(part))
    return ".".join(parts)


_MESSAGES = {"extra_forbidden": "unknown key", "missing": "missing key"}


def _describe(error: ValidationError, data: dict[str, Any]) -> str:
    parts = []
    for item in error.errors():
        loc = _location(item["loc"], data)
        msg = _MESSAGES.get(item["type"], item["msg"].removeprefix("Value error, "))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_profile(data: Any, source: str = "profile") -> LineProfile:
    if data is None:
        raise ProfileError(f"{source}: the line profile is empty")
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a line profile must be a YAML mapping, got {type(data).__name__}")
    try:
        return LineProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: invalid line profile: {_describe(exc, data)}") from None


def load_profile(path: str | Path) -> LineProfile:
    """Load and validate a profile file, or the `profile.yaml` of a dataset folder."""
    path = Path(path)
    if path.is_dir():
        path = path / PROFILE_FILENAME
    if not path.is_file():
        raise ProfileError(f"line profile not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read line profile: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_profile(data, str(path))


def save_profile(profile: LineProfile, path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / PROFILE_FILENAME
    path.write_text(profile.to_yaml(), encoding="utf-8")
    return path
