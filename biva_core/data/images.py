"""Decoding image files into uint8 arrays: mode handling, crops, and a threaded decode loop."""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

T = TypeVar("T")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm"})
_BATCH = 256  # images handed to the thread pool at a time; an error stops within one batch


def open_image(data: bytes, name: str) -> Image.Image:
    """PIL image of an encoded file's bytes, decoded now; a ValueError names the file if broken."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: cannot decode image ({err})") from err
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of any PIL image, upright per its EXIF orientation.

    Transparency is composited over white; 16-bit grayscale (mode I / I;16) is scaled to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # 16-bit PNGs: 0..65535 -> 0..255 (convert() would clip)
        gray = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(gray)  # 2-D uint8 -> mode L
    if image.mode == "P":  # palette images may carry transparency
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def center_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of `image`, resized to size x size (Lanczos, antialiased)."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)


def decode_all(items: Sequence[T], decode_one: Callable[[T], np.ndarray], shape: tuple[int, int, int],
               *, progress: bool, desc: str) -> np.ndarray:
    """uint8 (N, C, H, W) of decode_one(item) -> (H, W, C) for every item, in order.

    Threads suffice: PIL releases the GIL while decoding and resampling."""
    c, h, w = shape
    out = np.empty((len(items), c, h, w), np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(items), _BATCH):
            batch = items[start:start + _BATCH]
            for i, hwc in enumerate(pool.map(decode_one, batch), start):
                out[i] = hwc.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
            bar.update(len(batch))
    return out


def adapt(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, C, H, W) images in another set's form -> the model's (C, H, W), converted as
    uploads are (biva_core.data.prepare): grey to RGB and RGB to luma by PIL, other sizes resized
    (Lanczos), so a face model can score MNIST and a digit model faces."""
    c, h, w = shape

    def one(a: np.ndarray) -> np.ndarray:
        image = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        image = image.convert("L" if c == 1 else "RGB")
        if image.size != (w, h):
            image = image.resize((w, h), Image.LANCZOS)
        return np.asarray(image).reshape(h, w, c).transpose(2, 0, 1)
    return np.ascontiguousarray(np.stack([one(a) for a in arr])) if len(arr) else np.zeros((0, c, h, w), np.uint8)
