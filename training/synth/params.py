"""What a frame shows: its defect cause, the machine parameters printed on it, and their relation.

The generative story, per frame:
- a frame is defective with probability `defect_rate`; a defect is either an object defect
  (visible in the image) or a parameter defect (one or more values outside their spec range,
  which the image cannot show);
- parameters are drawn around the middle of their spec range; for an object defect, the
  parameter that drives that defect kind is, most of the time, pushed towards the risky edge of
  its spec range (still in spec). So in-spec parameter regimes carry real information about
  object defects, and fusion has something to learn beyond "out of spec means defect".
Everything here is a pure function of the profile and a numpy Generator.
"""

from __future__ import annotations

import math
import re
import re._parser as sre_parse  # the stdlib's regex parser; stable across 3.11-3.13
import string
import zlib
from dataclasses import dataclass, field

import numpy as np

from oanet.profile import FieldSpec, LineProfile

OBJECT_KINDS = (
    "scratch",
    "void",
    "particle",
    "crack",
    "missing_ball",
    "missing_wire",
    "bridged_ball",
    "bridged_wire",
    "contamination",
)
# Relative frequency of object defect kinds among object defects.
_KIND_WEIGHTS = np.array([1.2, 0.9, 1.1, 1.0, 0.8, 0.8, 0.8, 0.8, 1.0])
# Package types a line can inspect (`oanet synth --package`): a real AOI line inspects one
# product, so a dataset shows one type; "mixed" draws either type per frame.
PACKAGES = ("bga", "wirebond", "mixed")
DEFAULT_PACKAGE = "bga"
_PACKAGE_ONLY_KINDS = {"bga": ("missing_wire", "bridged_wire"), "wirebond": ("missing_ball", "bridged_ball")}


def object_kinds(package: str = "mixed") -> tuple[str, ...]:
    """The object defect kinds that can occur on a line inspecting `package`."""
    if package not in PACKAGES:
        raise ValueError(f"unknown package {package!r}; expected one of {', '.join(PACKAGES)}")
    excluded = _PACKAGE_ONLY_KINDS.get(package, ())
    return tuple(kind for kind in OBJECT_KINDS if kind not in excluded)

# Which parameter regime raises which object defect, for the default line's field names:
# (field, direction) with direction +1 = high edge of spec, -1 = low edge.
_DRIVERS: dict[str, tuple[tuple[str, int], ...]] = {
    "scratch": (("speed", +1),),
    "void": (("temp", +1), ("pressure", -1)),
    "particle": (("humidity", +1),),
    "crack": (("temp", +1), ("us_power", +1)),
    "missing_ball": (("bond_force", -1),),
    "missing_wire": (("bond_force", -1), ("us_power", -1)),
    "bridged_ball": (("temp", +1), ("bond_force", +1)),
    "bridged_wire": (("bond_force", +1),),
    "contamination": (("humidity", +1), ("exposure", -1)),
}
# Share of object-defect frames whose driver parameter sits in the risky band.
RELATION_STRENGTH = 0.75
# Positions in spec are z in [-1, 1] (-1 = low spec limit, +1 = high); risky band near the edge.
_RISK_BAND = (0.72, 0.96)
_NORMAL_SD = 0.33
_IN_SPEC_LIMIT = 0.97
# Out-of-spec values land this far beyond the limit, in half-widths of the spec range.
_OUT_OF_SPEC = (1.04, 1.6)
# Shares among defective frames, and of 1/2/3 fields out of spec in a parameter defect.
OBJECT_SHARE = 0.55
_PARAM_COUNT_WEIGHTS = np.array([0.7, 0.22, 0.08])
SUBTLE_SHARE = 0.3
# Consecutive frames come from the same lot, as on a real line.
FRAMES_PER_LOT = 50


@dataclass(frozen=True)
class FrameTruth:
    label: int
    defect: str
    object_kind: str | None
    subtle: bool
    params: dict[str, float | int | str]
    out_of_spec: tuple[str, ...] = field(default=())


def decimals_of(spec: FieldSpec) -> int:
    return 2 if spec.decimals is None else spec.decimals


def format_value(spec: FieldSpec, value: float | int | str, explicit_plus: bool = False) -> str:
    """The value as printed on the panel (without label and unit)."""
    if isinstance(value, str):
        return value
    text = f"{value:.{decimals_of(spec)}f}"
    if explicit_plus and is_signed(spec) and value > 0:
        text = "+" + text
    return text


def is_signed(spec: FieldSpec) -> bool:
    low = spec.spec[0] if spec.spec else (spec.plausible[0] if spec.plausible else 0.0)
    return low < 0


def _rounded(spec: FieldSpec, value: float) -> float | int:
    digits = decimals_of(spec)
    # + 0.0 turns -0.0 into 0.0, so nothing prints as "-0.00".
    return int(round(value)) if digits == 0 else round(value, digits) + 0.0


def _from_z(spec: FieldSpec, z: float) -> float:
    low, high = spec.spec  # type: ignore[misc]
    return (low + high) / 2 + z * (high - low) / 2


def _in_spec_value(spec: FieldSpec, z: float) -> float | int:
    low, high = spec.spec  # type: ignore[misc]
    step = 10.0 ** -decimals_of(spec)
    value = _rounded(spec, _from_z(spec, float(np.clip(z, -_IN_SPEC_LIMIT, _IN_SPEC_LIMIT))))
    # A limit that is not on the printed grid can round outside: snap to the grid inside.
    if value < low:
        value = _rounded(spec, math.ceil(low / step - 1e-9) * step)
    if value > high:
        value = _rounded(spec, math.floor(high / step + 1e-9) * step)
    return value


def _out_of_spec_value(spec: FieldSpec, rng: np.random.Generator) -> float | int:
    low, high = spec.spec  # type: ignore[misc]
    step = 10.0 ** -decimals_of(spec)
    directions = [d for d in (-1, 1) if _beyond_is_plausible(spec, d, step)]
    direction = directions[rng.integers(len(directions))] if directions else 1
    value = _rounded(spec, _from_z(spec, direction * rng.uniform(*_OUT_OF_SPEC)))
    if spec.plausible is not None:
        value = min(max(value, _rounded(spec, spec.plausible[0])), _rounded(spec, spec.plausible[1]))
    if low <= value <= high:  # rounding or clipping pulled it back: step just past the limit
        value = _rounded(spec, high + step if direction > 0 else low - step)
    return value


def _beyond_is_plausible(spec: FieldSpec, direction: int, step: float) -> bool:
    if spec.plausible is None or spec.spec is None:
        return True
    return spec.spec[1] + step <= spec.plausible[1] if direction > 0 else spec.spec[0] - step >= spec.plausible[0]


def _free_value(spec: FieldSpec, rng: np.random.Generator) -> float | int:
    """A number field without a spec range: anywhere in the middle of its plausible range."""
    low, high = spec.plausible if spec.plausible is not None else (0.0, 100.0)
    return _rounded(spec, rng.uniform(low + 0.2 * (high - low), high - 0.2 * (high - low)))


def text_value(spec: FieldSpec, rng: np.random.Generator) -> str:
    """A string matching the field's pattern (a common regex subset), else a lot-id-like code."""
    if spec.pattern:
        try:
            text = _from_regex(sre_parse.parse(spec.pattern), rng)
        except (ValueError, TypeError):
            text = None
        if text is not None and re.fullmatch(spec.pattern, text):
            return text
    letters = "".join(rng.choice(list(string.ascii_uppercase), 2))
    return f"{letters}{rng.integers(0, 10000):04d}"


def _from_regex(parsed: sre_parse.SubPattern, rng: np.random.Generator) -> str:
    out = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "IN":
            out.append(_from_class(arg, rng))
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = arg
            count = low if high == sre_parse.MAXREPEAT else int(rng.integers(low, high + 1))
            out.extend(_from_regex(sub, rng) for _ in range(max(count, low)))
        elif name == "SUBPATTERN":
            out.append(_from_regex(arg[-1], rng))
        elif name == "BRANCH":
            branches = arg[1]
            out.append(_from_regex(branches[rng.integers(len(branches))], rng))
        elif name == "AT":
            continue
        else:
            raise ValueError(f"unsupported regex construct {name}")
    return "".join(out)


def _from_class(items: list, rng: np.random.Generator) -> str:
    choices: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "RANGE":
            choices += [chr(c) for c in range(arg[0], arg[1] + 1)]
        elif name == "LITERAL":
            choices.append(chr(arg))
        elif name == "CATEGORY" and "DIGIT" in str(arg):
            choices += list(string.digits)
        else:
            raise ValueError(f"unsupported character class item {name}")
    return choices[rng.integers(len(choices))]


def drivers_for(kind: str, profile: LineProfile) -> list[tuple[str, int]]:
    """The parameters whose regime raises `kind`; for other field sets, a stable stand-in."""
    specced = [f.name for f in profile.fields if f.kind == "number" and f.spec is not None]
    # A kind of its own (a real image class of `synth --objects`) gets the stand-in below.
    known = [(name, d) for name, d in _DRIVERS.get(kind, ()) if name in specced]
    if known or not specced:
        return known
    return [(specced[zlib.crc32(kind.encode()) % len(specced)], +1)]


def sample_truth(
    profile: LineProfile,
    rng: np.random.Generator,
    defect_rate: float,
    lot_rng: np.random.Generator,
    package: str = "mixed",
    kinds: tuple[tuple[str, ...], np.ndarray] | None = None,
) -> FrameTruth:
    """The ground truth of one frame: defect cause and printed parameter values.

    Object defect kinds are those `package` can show (ball defects need a BGA, wire defects a
    wire-bonded die; "mixed" allows all), or the given (kinds, weights) of real image classes.
    """
    if kinds is None:
        allowed = object_kinds(package)
        kind_weights = np.array([w for k, w in zip(OBJECT_KINDS, _KIND_WEIGHTS) if k in allowed])
    else:
        allowed, kind_weights = kinds
    specced = [f for f in profile.fields if f.kind == "number" and f.spec is not None]
    z = {f.name: rng.normal(0.0, _NORMAL_SD) for f in specced}

    cause = "none"
    if rng.random() < defect_rate:
        cause = "object" if (not specced or rng.random() < OBJECT_SHARE) else "param"

    kind = None
    subtle = False
    if cause == "object":
        kind = allowed[rng.choice(len(allowed), p=kind_weights / kind_weights.sum())]
        subtle = bool(rng.random() < SUBTLE_SHARE)
        drivers = drivers_for(kind, profile)
        if drivers and rng.random() < RELATION_STRENGTH:
            name, direction = drivers[rng.integers(len(drivers))]
            z[name] = direction * rng.uniform(*_RISK_BAND)

    out_of_spec: list[str] = []
    if cause == "param":
        weights = _PARAM_COUNT_WEIGHTS[: len(specced)]
        count = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
        picked = set(rng.choice(len(specced), size=count, replace=False).tolist())
        out_of_spec = [f.name for i, f in enumerate(specced) if i in picked]

    params: dict[str, float | int | str] = {}
    for spec in profile.fields:
        if spec.kind == "text":
            params[spec.name] = text_value(spec, lot_rng)
        elif spec.spec is None:
            params[spec.name] = _free_value(spec, rng)
        elif spec.name in out_of_spec:
            params[spec.name] = _out_of_spec_value(spec, rng)
        else:
            params[spec.name] = _in_spec_value(spec, z[spec.name])

    if cause == "object":
        defect = f"object:{kind}"
    elif cause == "param":
        defect = "param:" + ",".join(out_of_spec)
    else:
        defect = "none"
    return FrameTruth(
        label=int(cause != "none"),
        defect=defect,
        object_kind=kind,
        subtle=subtle,
        params=params,
        out_of_spec=tuple(out_of_spec),
    )
