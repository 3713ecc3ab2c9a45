"""The inspected object: a semiconductor package as the AOI camera sees it, with or without a defect.

Two package styles: a BGA seen from the ball side (solder balls on solder mask) and a
wire-bonded die before moulding (die, bond pads, gold wires, lead fingers). A dataset shows one
style (`package`), or both when it is "mixed". Surface defects (scratch, void, particle, crack,
contamination) can hit either style; ball defects need a BGA and wire defects a wire-bonded die.
Sizes are in pixels of a 448 px object ROI (scaled with the ROI): a non-subtle defect spans
about 20 px or more, so it stays several pixels wide at the CNN's 96 px input; subtle ones
stay small and faint. Drawing is plain OpenCV on a small contiguous image;
textures come from per-process banks generated from fixed seeds and cropped at a random
offset, which keeps a frame cheap and still deterministic.

Over 400 lines on purpose: the drawing of one scene (two package styles and their defect kinds)
shares one canvas and one random stream; panel, params and nuisances are already apart.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

_BANK_SEED = 20261122
_BANK_MARGIN = 64
BALL_KINDS = ("missing_ball", "bridged_ball")
WIRE_KINDS = ("missing_wire", "bridged_wire")


@functools.lru_cache(maxsize=8)
def _grain(height: int, width: int) -> np.ndarray:
    """Low-frequency surface texture, unit standard deviation."""
    rng = np.random.default_rng(_BANK_SEED)
    noise = rng.standard_normal((height + _BANK_MARGIN, width + _BANK_MARGIN)).astype(np.float32)
    coarse = cv2.GaussianBlur(noise, (0, 0), 7) * 6 + cv2.GaussianBlur(noise, (0, 0), 1.2)
    return coarse / coarse.std()


@functools.lru_cache(maxsize=8)
def _circuit(height: int, width: int) -> np.ndarray:
    """Die surface: a dense layout of metal lines and cells, values around 0 (-1..1)."""
    rng = np.random.default_rng(_BANK_SEED + 1)
    tile = np.zeros((height + _BANK_MARGIN, width + _BANK_MARGIN), np.float32)
    th, tw = tile.shape
    for _ in range(th * tw // 900):
        x, y = int(rng.integers(0, tw)), int(rng.integers(0, th))
        if rng.random() < 0.5:  # a routing line
            horizontal = rng.random() < 0.5
            length = int(rng.integers(10, 90))
            end = (x + length, y) if horizontal else (x, y + length)
            cv2.line(tile, (x, y), end, float(rng.uniform(-1, 1)), int(rng.integers(1, 3)))
        else:  # a cell
            w, h = int(rng.integers(4, 26)), int(rng.integers(4, 26))
            cv2.rectangle(tile, (x, y), (x + w, y + h), float(rng.uniform(-0.8, 0.8)), -1)
    return cv2.GaussianBlur(tile, (0, 0), 0.7)


@functools.lru_cache(maxsize=8)
def _vignette(height: int, width: int) -> np.ndarray:
    """Ring-light falloff: 0 in the middle, about 1 in the corners."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    return (r2 / 2).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _ball_sprite(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """A shiny solder ball lit from the upper left: (BGR float image, alpha)."""
    size = 2 * radius + 3
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (radius + 1)
    r = np.sqrt(xx**2 + yy**2) / radius
    alpha = np.clip((1.0 - r) * radius + 0.5, 0, 1)
    dome = np.sqrt(np.clip(1 - r**2, 0, 1))
    highlight = np.exp(-((xx + 0.35 * radius) ** 2 + (yy + 0.38 * radius) ** 2) / (0.08 * radius**2 + 1))
    shade = 95 + 95 * dome**0.6 + 70 * highlight
    bgr = np.stack([shade * 0.97, shade * 0.98, shade], axis=-1)
    return bgr.astype(np.float32), alpha.astype(np.float32)


def _crop(bank: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = (int(v) for v in rng.integers(0, _BANK_MARGIN, size=2))
    return bank[y : y + height, x : x + width]


def _jitter_color(rng: np.random.Generator, bgr: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(bgr, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


@dataclass
class _Layout:
    """Where things were drawn, so defects can land on meaningful places."""

    package: tuple[int, int, int, int]
    surface: tuple[int, int, int, int]  # die (wire bond) or ball field (BGA): where defects show
    balls: list[tuple[int, int]]
    ball_radius: int
    wires: list[tuple[np.ndarray, int]]  # polyline points, thickness


def draw_object(
    width: int, height: int, kind: str | None, subtle: bool, rng: np.random.Generator, package: str = "mixed"
) -> np.ndarray:
    """The object region of a frame (BGR uint8) of a `package` ("bga", "wirebond" or "mixed":
    either, as the defect allows), showing `kind` of defect or none."""
    if package in ("bga", "wirebond"):
        style = package
        if kind in (WIRE_KINDS if package == "bga" else BALL_KINDS):
            raise ValueError(f"a {package} package cannot show a {kind} defect")
    elif package != "mixed":
        raise ValueError(f"unknown package {package!r}")
    elif kind in BALL_KINDS:
        style = "bga"
    elif kind in WIRE_KINDS:
        style = "wirebond"
    else:
        style = "bga" if rng.random() < 0.5 else "wirebond"
    scale = min(width, height) / 448.0
    image = np.empty((height, width, 3), np.float32)
    stage = _jitter_color(rng, (52, 54, 56), 10)
    image[:] = stage
    image += (_crop(_grain(height, width), rng, height, width) * 4)[..., None]

    side = int(min(width, height) * rng.uniform(0.8, 0.88))
    px = (width - side) // 2 + int(rng.integers(-8, 9) * scale)
    py = (height - side) // 2 + int(rng.integers(-8, 9) * scale)
    # A soft shadow under the package lifts it off the stage.
    cv2.rectangle(image, (px + 4, py + 5), (px + side + 4, py + side + 5), (stage * 0.55).tolist(), -1)
    image = cv2.GaussianBlur(image, (0, 0), 2.5 * scale)
    if style == "bga":
        layout = _draw_bga(image, (px, py, side, side), scale, kind, subtle, rng)
    else:
        layout = _draw_wirebond(image, (px, py, side, side), scale, kind, subtle, rng)
    if kind is not None and kind not in BALL_KINDS + WIRE_KINDS:
        _draw_surface_defect(image, layout, kind, subtle, scale, rng)

    image *= (1.0 - rng.uniform(0.08, 0.25) * _vignette(height, width))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_bga(
    image: np.ndarray,
    package: tuple[int, int, int, int],
    scale: float,
    kind: str | None,
    subtle: bool,
    rng: np.random.Generator,
) -> _Layout:
    px, py, side, _ = package
    edge = _jitter_color(rng, (120, 150, 165), 12)
    mask_color = _jitter_color(rng, (42, 88, 48), 10)
    cv2.rectangle(image, (px, py), (px + side, py + side), edge.tolist(), -1)
    inset = max(2, int(3 * scale))
    region = image[py + inset : py + side - inset, px + inset : px + side - inset]
    region[:] = mask_color
    rh, rw = region.shape[:2]
    region += (_crop(_grain(image.shape[0], image.shape[1]), rng, rh, rw) * 5)[..., None]

    count = int(rng.choice([6, 7, 8]))  # ball diameter about 26-34 px: 5-7 px at 96 px
    margin = side * 0.1
    pitch = (side - 2 * margin) / (count - 1)
    radius = max(3, int(pitch * rng.uniform(0.28, 0.33)))
    centers = [
        (int(round(px + margin + i * pitch)), int(round(py + margin + j * pitch)))
        for j in range(count)
        for i in range(count)
    ]
    # Pin-1 marker: a copper triangle in one corner of the solder mask.
    t = int(margin * 0.5)
    corner = np.array([[px + inset + 3, py + inset + 3], [px + inset + 3 + t, py + inset + 3],
                       [px + inset + 3, py + inset + 3 + t]], np.int32)
    cv2.fillPoly(image, [corner], (70, 135, 190), cv2.LINE_AA)

    missing: set[int] = set()
    bridged = -1
    if kind == "missing_ball":
        first = int(rng.integers(len(centers)))
        missing = {first}
        if not subtle and rng.random() < 0.5 and first % count < count - 1:  # sometimes a neighbour too
            missing.add(first + 1)
    elif kind == "bridged_ball":
        row, col = int(rng.integers(count)), int(rng.integers(count - 1))
        bridged = row * count + col
    pad_color = _jitter_color(rng, (75, 140, 195), 10).tolist()
    for index, (cx, cy) in enumerate(centers):
        cv2.circle(image, (cx, cy), int(radius * 0.92), pad_color, -1, cv2.LINE_AA)
        if index in missing:
            # Subtle: a flattened ball remnant rather than a bare pad.
            if subtle:
                cv2.circle(image, (cx, cy), int(radius * 0.75), (150, 150, 148), -1, cv2.LINE_AA)
            continue
        _paste_ball(image, cx, cy, radius)
    if bridged >= 0:
        (x0, y0), (x1, y1) = centers[bridged], centers[bridged + 1]
        neck = max(2, int(radius * (0.45 if subtle else 1.2)))
        cv2.line(image, (x0, y0), (x1, y1), (170, 172, 175), neck, cv2.LINE_AA)
        cv2.line(image, (x0, y0 - neck // 4), (x1, y1 - neck // 4), (215, 218, 222), max(1, neck // 4),
                 cv2.LINE_AA)
    span = int(side - 2 * margin + 2 * radius)
    field = (int(px + margin - radius), int(py + margin - radius), span, span)
    return _Layout(package, field, centers, radius, [])


def _paste_ball(image: np.ndarray, cx: int, cy: int, radius: int) -> None:
    sprite, alpha = _ball_sprite(radius)
    half = sprite.shape[0] // 2
    y0, x0 = cy - half, cx - half
    if y0 < 0 or x0 < 0 or y0 + sprite.shape[0] > image.shape[0] or x0 + sprite.shape[1] > image.shape[1]:
        return
    patch = image[y0 : y0 + sprite.shape[0], x0 : x0 + sprite.shape[1]]
    a = alpha[..., None]
    patch *= 1 - a
    patch += sprite * a


def _draw_wirebond(
    image: np.ndarray,
    package: tuple[int, int, int, int],
    scale: float,
    kind: str | None,
    subtle: bool,
    rng: np.random.Generator,
) -> _Layout:
    px, py, side, _ = package
    substrate = _jitter_color(rng, (48, 78, 62), 10)
    cv2.rectangle(image, (px, py), (px + side, py + side), substrate.tolist(), -1)
    image[py : py + side, px : px + side] += (_crop(_grain(image.shape[0], image.shape[1]), rng, side, side)
                                              * 4)[..., None]

    die = int(side * rng.uniform(0.42, 0.52))
    dx = px + (side - die) // 2 + int(rng.integers(-4, 5) * scale)
    dy = py + (side - die) // 2 + int(rng.integers(-4, 5) * scale)
    # Die-attach epoxy fillet, then the die with its circuitry and seal ring.
    fillet = int(4 * scale) + 1
    cv2.rectangle(image, (dx - fillet, dy - fillet), (dx + die + fillet, dy + die + fillet), (150, 165, 175), -1)
    silicon = _jitter_color(rng, (118, 98, 92), 12)
    image[dy : dy + die, dx : dx + die] = silicon
    image[dy : dy + die, dx : dx + die] += (_crop(_circuit(image.shape[0], image.shape[1]), rng, die, die)
                                            * rng.uniform(10, 18))[..., None]
    cv2.rectangle(image, (dx + 2, dy + 2), (dx + die - 3, dy + die - 3), (silicon + 40).tolist(), 1)

    per_side = int(rng.integers(4, 7))
    pad = max(4, int(die * 0.055))
    inset = int(die * 0.07)
    finger_len, finger_w = int(side * 0.12), max(4, int(side * 0.028))
    ring = side * 0.5 - finger_len * 0.5 - side * 0.03  # lead fingers sit near the package edge
    cx, cy = dx + die / 2, dy + die / 2
    wires: list[tuple[np.ndarray, int]] = []
    pads_and_fingers = []
    for s in range(4):
        for i in range(per_side):
            u = (i + 0.5) / per_side - 0.5  # -0.5..0.5 along the side
            along_pad = u * (die - 2 * inset)
            along_finger = u * (side * 0.78)
            # Rotate a "bottom side" layout by s quarter turns around the die centre.
            pad_xy = _rotate((along_pad, die / 2 - inset), s)
            finger_xy = _rotate((along_finger, ring), s)
            pads_and_fingers.append(((cx + pad_xy[0], cy + pad_xy[1]), (cx + finger_xy[0], cy + finger_xy[1]), s))

    gold = _jitter_color(rng, (70, 165, 205), 12).tolist()
    for _, (fx, fy), s in pads_and_fingers:
        half_len, half_w = (finger_w / 2, finger_len / 2) if s % 2 == 0 else (finger_len / 2, finger_w / 2)
        cv2.rectangle(image, (int(fx - half_len), int(fy - half_w)), (int(fx + half_len), int(fy + half_w)), gold, -1,
                      cv2.LINE_AA)
    aluminium = _jitter_color(rng, (185, 188, 192), 10).tolist()
    for (ax, ay), _, _ in pads_and_fingers:
        cv2.rectangle(image, (int(ax - pad / 2), int(ay - pad / 2)), (int(ax + pad / 2), int(ay + pad / 2)),
                      aluminium, -1)

    missing: set[int] = set()
    bridged = -1
    if kind == "missing_wire":
        first = int(rng.integers(len(pads_and_fingers)))
        missing = {first}
        if not subtle:  # two neighbouring wires gone: a gap of two wire pitches
            missing.add(first + 1 if first % per_side < per_side - 1 else first - 1)
    elif kind == "bridged_wire":
        bridged = int(rng.integers(len(pads_and_fingers) - 1))
        if bridged % per_side == per_side - 1:  # keep the neighbour on the same side
            bridged -= 1
    thickness = max(2, int(round(4 * scale)))  # thick enough to survive the 96 px input
    wire_color = _jitter_color(rng, (95, 195, 230), 10).tolist()
    for index, ((ax, ay), (fx, fy), s) in enumerate(pads_and_fingers):
        if index in missing:
            if subtle:  # the ball bond stays; only the wire is gone
                cv2.circle(image, (int(ax), int(ay)), max(2, pad // 3), (205, 215, 225), -1, cv2.LINE_AA)
            continue
        bow = rng.uniform(-0.06, 0.06)
        if index == bridged:
            # The wire sweeps sideways onto its neighbour's path.
            (nx, ny), (nfx, nfy), _ = pads_and_fingers[index + 1]
            target = ((nx + nfx) / 2, (ny + nfy) / 2)
            reach = 0.55 if subtle else 1.3
            control = ((ax + fx) / 2 + reach * (target[0] - (ax + fx) / 2),
                       (ay + fy) / 2 + reach * (target[1] - (ay + fy) / 2))
        else:
            control = ((ax + fx) / 2 - bow * (fy - ay), (ay + fy) / 2 + bow * (fx - ax))
        points = _bezier((ax, ay), control, (fx, fy))
        wires.append((points, thickness))
        cv2.polylines(image, [points], False, wire_color, thickness + 1, cv2.LINE_AA)
        cv2.polylines(image, [points - 1], False, (175, 230, 250), max(1, thickness - 1), cv2.LINE_AA)
        cv2.circle(image, (int(ax), int(ay)), max(2, pad // 3), (205, 215, 225), -1, cv2.LINE_AA)
        cv2.ellipse(image, (int(fx), int(fy)), (max(2, pad // 3), max(1, pad // 5)), 0, 0, 360, (150, 205, 230), -1,
                    cv2.LINE_AA)
    return _Layout(package, (dx, dy, die, die), [], 0, wires)


def _rotate(point: tuple[float, float], quarter_turns: int) -> tuple[float, float]:
    x, y = point
    for _ in range(quarter_turns):
        x, y = -y, x
    return x, y


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float]) -> np.ndarray:
    t = np.linspace(0, 1, 16)[:, None]
    points = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return np.round(points).astype(np.int32)


def _random_point(box: tuple[int, int, int, int], rng: np.random.Generator, margin: float = 0.1) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w * rng.uniform(margin, 1 - margin), y + h * rng.uniform(margin, 1 - margin)])


def _draw_surface_defect(
    image: np.ndarray, layout: _Layout, kind: str, subtle: bool, scale: float, rng: np.random.Generator
) -> None:
    height, width = image.shape[:2]
    delta = np.zeros((height, width), np.float32)  # brightness change, added to all channels
    where = _random_point(layout.surface, rng)
    if kind == "scratch":
        length = rng.uniform(30, 70) if subtle else rng.uniform(110, 260)
        angle = rng.uniform(0, np.pi)
        steps = np.linspace(-0.5, 0.5, 12)[:, None] * length * scale
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        wobble = np.cumsum(rng.normal(0, 0.8, (12, 1)), axis=0)
        points = np.round(where + steps * direction + wobble * normal).astype(np.int32)
        cv2.polylines(delta, [points], False, float(rng.uniform(12, 20) if subtle else rng.uniform(45, 80)),
                      1 if subtle else max(2, int(rng.uniform(6, 11) * scale)), cv2.LINE_AA)
    elif kind == "crack":
        _crack(delta, where, (rng.uniform(20, 45) if subtle else rng.uniform(100, 220)) * scale,
               -(rng.uniform(18, 28) if subtle else rng.uniform(60, 100)), rng,
               1 if subtle else max(2, int(rng.uniform(5, 9) * scale)))
    elif kind == "particle":
        for _ in range(1 if subtle else int(rng.integers(1, 4))):
            center = where + rng.normal(0, 10 * scale, 2)
            radius = (rng.uniform(1.5, 3) if subtle else rng.uniform(10, 18)) * scale
            blob = _blob(center, radius, 7, 0.35, rng)
            cv2.fillPoly(delta, [blob + np.array([2, 2], np.int32)], -18.0, cv2.LINE_AA)  # shadow
            cv2.fillPoly(delta, [blob], -(rng.uniform(20, 35) if subtle else rng.uniform(60, 100)), cv2.LINE_AA)
    elif kind == "void":
        radius = (rng.uniform(3, 5) if subtle else rng.uniform(11, 22)) * scale
        center = tuple(int(v) for v in where)
        depth = rng.uniform(18, 30) if subtle else rng.uniform(50, 85)
        cv2.circle(delta, center, int(radius + 1), depth * 0.45, max(1, int(radius / 4)), cv2.LINE_AA)
        cv2.circle(delta, center, int(radius), -depth, -1, cv2.LINE_AA)
    elif kind == "contamination":
        _contamination(image, where, scale, subtle, rng)
        return
    else:
        raise ValueError(f"unknown surface defect kind {kind!r}")
    delta = cv2.GaussianBlur(delta, (0, 0), 0.6)
    image += delta[..., None]


def _crack(
    delta: np.ndarray, start: np.ndarray, length: float, depth: float, rng: np.random.Generator, width: int = 1
) -> None:
    """A jagged, sometimes branching fracture line, dark with a bright lip on one side."""
    branches = [(start, rng.uniform(0, 2 * np.pi), length)]
    while branches:
        point, heading, remaining = branches.pop()
        points = [point]
        while remaining > 0:
            heading += rng.normal(0, 0.45)
            step = rng.uniform(4, 10)
            point = point + step * np.array([np.cos(heading), np.sin(heading)])
            points.append(point)
            remaining -= step
            if rng.random() < 0.06 and len(branches) < 2:
                branches.append((point, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), remaining * 0.5))
        line = np.round(np.array(points)).astype(np.int32)
        lip = np.array([1 + width // 2] * 2, np.int32)
        cv2.polylines(delta, [line + lip], False, -depth * 0.35, width, cv2.LINE_AA)
        cv2.polylines(delta, [line], False, depth, width, cv2.LINE_AA)


def _blob(center: np.ndarray, radius: float, vertices: int, roughness: float, rng: np.random.Generator) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * (1 + rng.uniform(-roughness, roughness, vertices))
    points = center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
    return np.round(points).astype(np.int32)


def _contamination(
    image: np.ndarray, where: np.ndarray, scale: float, subtle: bool, rng: np.random.Generator
) -> None:
    """A translucent stain (flux residue, fingerprint grease): tints, does not cover."""
    radius = (rng.uniform(12, 28) if subtle else rng.uniform(22, 60)) * scale
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.fillPoly(mask, [_blob(where, radius, 14, 0.45, rng)], 1.0, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # satellite droplets
        cv2.fillPoly(mask, [_blob(where + rng.normal(0, radius, 2), radius * 0.3, 9, 0.4, rng)], 1.0, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), radius * 0.18 + 1)
    opacity = rng.uniform(0.1, 0.16) if subtle else rng.uniform(0.4, 0.65)
    tint = np.asarray([(35, 85, 125), (205, 205, 200), (30, 45, 55)][int(rng.integers(3))], np.float32)
    alpha = (mask * opacity)[..., None]
    image *= 1 - alpha
    image += alpha * tint
