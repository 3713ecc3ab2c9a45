"""Real object images for `oanet synth --objects DIR`: a folder per class, placed into the object ROI.

Layout: `DIR/<class>/**/<image>` (PNG, JPEG, BMP, TIFF). A class folder named like free, good,
ok, normal or pass (after an `MT_` prefix is dropped, case-insensitive) holds good objects;
every other folder is a defect class whose kind is its snake_case name (`MT_Blowhole` ->
`object:blowhole`). The Magnetic-tile layout `MT_<Class>/Imgs/*.jpg` with a `*.png` mask beside
each image works as it is: a PNG with the same stem as a JPEG/BMP/TIFF in its folder is that
image's mask and is not placed.

Each real image belongs to one split (train/val/test, 70/15/15 within its class, by a hash of
its path): a frame only shows images of its own split. Images are reused across frames (a set
of 1,344 images makes a 1,500-frame dataset), so without this a test frame would show a
picture the CNN was trained on.

Fitting into the ROI: the whole image is scaled, aspect preserved, to the largest size that
fits, and the rest of the ROI is filled by mirroring the image at its borders. Cropping could
cut the defect out of a defect image (and mislabel the frame); a flat pad would leave a frame
whose border shape is the image's aspect ratio. Mirroring keeps surface texture up to the ROI
edge; a defect near an image border may appear mirrored, still a defect. Magnetic-tile images
(105x283 to 616x245) land at 0.7x-1.6x of their native size in a 448 px ROI, so their defects
keep about their native pixel size there. A random flip per frame adds variety.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oanet.dataset import SPLIT_SHARES, SPLITS
from oanet.errors import OanetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD_CLASS_NAMES = ("free", "good", "ok", "normal", "pass", "none")
MIN_IMAGES_PER_CLASS = len(SPLITS)  # one per split, so no split shows another's pictures
_MASK_PARTNERS = (".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class ObjectsError(OanetError):
    """The --objects folder is missing, empty, or a class or image in it is unusable."""

    exit_code = 2


@dataclass(frozen=True)
class ObjectImage:
    path: Path  # absolute
    relative: str  # posix path under the --objects folder, recorded in the manifest
    split: str


@dataclass(frozen=True)
class ObjectBank:
    """The classes of an --objects folder and their images, split by split."""

    root: Path
    good: tuple[ObjectImage, ...]
    defects: dict[str, tuple[ObjectImage, ...]]  # kind -> images, kinds sorted

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.defects)

    @property
    def kind_weights(self) -> np.ndarray:
        """A kind's share of object defects: its share of the defect images, as the set has them."""
        counts = np.array([len(images) for images in self.defects.values()], dtype=np.float64)
        return counts / counts.sum()

    def pick(self, kind: str | None, split: str, rng: np.random.Generator) -> ObjectImage:
        """A random image of `kind` (None: a good one) from `split`."""
        images = self.good if kind is None else self.defects[kind]
        pool = [image for image in images if image.split == split]
        return pool[int(rng.integers(len(pool)))]

    def summary(self) -> str:
        parts = [f"good {len(self.good)}"] + [f"{kind} {len(images)}" for kind, images in self.defects.items()]
        return ", ".join(parts)


def class_kind(folder_name: str) -> str:
    """`MT_Blowhole` -> `blowhole`, `Pin Hole` -> `pin_hole`."""
    name = re.sub(r"^mt_", "", folder_name.strip().lower())
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def _class_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems_with_photo = {(p.parent, p.stem) for p in files if p.suffix.lower() in _MASK_PARTNERS}
    return [p for p in files if not (p.suffix.lower() == ".png" and (p.parent, p.stem) in stems_with_photo)]


def _assign_splits(root: Path, paths: list[Path]) -> list[ObjectImage]:
    """70/15/15 within a class, by a stable hash of each path, at least one image per split."""
    relative = [p.relative_to(root).as_posix() for p in paths]
    order = sorted(range(len(paths)), key=lambda i: hashlib.sha256(relative[i].encode()).digest())
    n = len(order)
    n_val = max(1, round(n * SPLIT_SHARES["val"]))
    n_test = max(1, round(n * SPLIT_SHARES["test"]))
    n_train = n - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return sorted((ObjectImage(paths[i], relative[i], split) for i, split in zip(order, splits, strict=True)),
                  key=lambda image: image.relative)


def scan_objects(root: str | Path) -> ObjectBank:
    """Read the class folders of `root`; every problem is one line naming the folder."""
    root = Path(root)
    if not root.is_dir():
        raise ObjectsError(f"--objects {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    good: list[ObjectImage] = []
    defects: dict[str, tuple[ObjectImage, ...]] = {}
    seen: dict[str, str] = {}
    for folder in folders:
        paths = _class_images(folder)
        if not paths:
            continue  # e.g. a docs or .git folder: not a class
        kind = class_kind(folder.name)
        if not _KIND.match(kind):
            raise ObjectsError(f"--objects class folder {folder.name!r} gives no usable defect kind "
                               f"({kind!r}: it must start with a letter)")
        if kind in seen:
            raise ObjectsError(f"--objects class folders {seen[kind]!r} and {folder.name!r} both mean {kind!r}")
        seen[kind] = folder.name
        if len(paths) < MIN_IMAGES_PER_CLASS:
            raise ObjectsError(f"--objects class folder {folder.name!r} has {len(paths)} image(s); each class needs "
                               f"at least {MIN_IMAGES_PER_CLASS} so that train, val and test get their own")
        unreadable = [p for p in paths if not cv2.haveImageReader(str(p))]
        if unreadable:  # checked here (a header check) rather than half-way through a run
            raise ObjectsError(f"--objects image {unreadable[0]} is not an image OpenCV can read"
                               + (f" ({len(unreadable) - 1} more in {folder.name!r})" if len(unreadable) > 1 else ""))
        images = _assign_splits(root, paths)
        if kind in GOOD_CLASS_NAMES:
            good += images
        else:
            defects[kind] = tuple(images)
    if not good:
        raise ObjectsError(f"--objects {root} has no good class folder (one named like "
                           f"{', '.join(GOOD_CLASS_NAMES[:4])} or MT_Free) with images")
    if not defects:
        raise ObjectsError(f"--objects {root} has no defect class folder with images")
    return ObjectBank(root, tuple(sorted(good, key=lambda image: image.relative)), defects)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ObjectsError(f"--objects image {path} is not a decodable image")
    return image


def fit_to_roi(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The whole image scaled (aspect kept) to fit width x height, the rest mirrored from it."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out = resized
    # BORDER_REFLECT_101 needs a border shorter than the image: mirror in rounds until it fits.
    while out.shape[0] < height or out.shape[1] < width:
        pad_top = min(top, out.shape[0] - 1)
        pad_bottom = min(height - new_h - top, out.shape[0] - 1)
        pad_left = min(left, out.shape[1] - 1)
        pad_right = min(width - new_w - left, out.shape[1] - 1)
        if out.shape[0] == 1 or out.shape[1] == 1:
            out = cv2.copyMakeBorder(out, top, height - out.shape[0] - top, left, width - out.shape[1] - left,
                                     cv2.BORDER_REPLICATE)
            break
        out = cv2.copyMakeBorder(out, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REFLECT_101)
        top, left = top - pad_top, left - pad_left
        new_h, new_w = out.shape[0], out.shape[1]
    return out


def place(image: ObjectImage, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The object ROI (BGR uint8, width x height) showing `image`, randomly flipped."""
    fitted = fit_to_roi(_read(image.path), width, height)
    flip = int(rng.integers(4))  # 0: none, 1: horizontal, 2: vertical, 3: both
    if flip:
        fitted = cv2.flip(fitted, {1: 1, 2: 0, 3: -1}[flip])
    return np.ascontiguousarray(fitted)
