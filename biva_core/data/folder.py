"""Any folder of images (searched recursively): the user's own data for train.py and the studio.

Every image is made RGB (transparency over white, EXIF rotation applied), cropped to its centred
square and resized to image_size (Lanczos). Files and folders whose name starts with "." are
skipped. The split is fixed per file by a hash of its path relative to the folder: 90% train,
5% valid, 5% test. Adding images never moves an existing image to another split; a very small
folder can have an empty valid or test split (an array of 0 images).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from biva_core.data.cache import Source
from biva_core.data.images import IMAGE_EXTENSIONS, center_square, decode_all, open_image, to_rgb

SPLIT_EDGES = {"train": (0.0, 0.90), "valid": (0.90, 0.95), "test": (0.95, 1.0)}


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path; hidden names skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    found = [p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not found:
        raise FileNotFoundError(f"no images in {root} (searched recursively for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def split_of(relative_path: str) -> str:
    """'train', 'valid' or 'test' from the first 8 bytes of sha256(relative path): a uniform u in [0, 1)."""
    u = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2.0 ** 64
    return next(name for name, (lo, hi) in SPLIT_EDGES.items() if lo <= u < hi)


def decode(root: Path, files: list[Path], split: str, size: int, *, progress: bool = True) -> np.ndarray:
    """uint8 (N, 3, size, size) of the images of `split` among `files`."""
    chosen = [p for p in files if split_of(p.relative_to(root).as_posix()) == split]
    def one(path: Path) -> np.ndarray:
        return np.asarray(center_square(to_rgb(open_image(path.read_bytes(), str(path))), size))
    return decode_all(chosen, one, (3, size, size), progress=progress, desc=f"{root.name} {split}")


def source(root: Path, split: str, image_size: int) -> Source:
    files = list_images(root)
    return Source(files, lambda progress: decode(root, files, split, image_size, progress=progress))


def inspect(root: Path, *, sample: int = 256) -> tuple[int, int]:
    """(channels, size) of a folder's images, from up to `sample` of them spread over the sorted
    list: 1 channel when every one is grey (a grey mode, or RGB whose channels agree within 2
    levels), else 3; size is the median of their shorter sides."""
    files = list_images(root)
    chosen = files[:: max(1, len(files) // sample)][:sample]
    grey, sides = True, []
    for path in chosen:
        image = open_image(path.read_bytes(), str(path))
        sides.append(min(image.size))
        if grey and image.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L"):
            rgb = np.asarray(to_rgb(image).resize((32, 32)), dtype=np.int16)
            grey = int(np.abs(rgb - rgb[..., :1]).max()) <= 2
    return (1 if grey else 3), int(np.median(sides))
