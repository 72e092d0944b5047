"""Image files -> model inputs, safely, with the preprocessing recorded so it can be shown.

Used by the studio (uploads) and by `biva-evaluate --ood folder` (a folder of images), so a file
gets the same input in both. Every failure is a ValueError that names the file: not an image,
truncated or corrupt, empty, too large (bytes or pixels: a decompression bomb is refused from its
header, before decoding). Any PIL mode is accepted: 16-bit grayscale is scaled to 8 bits,
transparency is composited over white, palette / CMYK / YCbCr are converted (images.to_rgb),
EXIF rotation applied.

The crop follows the model's data:
  - a face model given an aligned CelebA image (exactly 178 x 218) crops the CelebA box
    (15, 40, 163, 188), the training preprocessing;
  - an image already at the model's size is used as it is;
  - anything else is centre-cropped to the model's aspect ratio (square) and resized (Lanczos).
Then 1-channel models take the luma (ITU-R 601). Bernoulli models binarize it as their data was:
"threshold" at 0.5 (binarized_mnist, MNIST read by a Bernoulli model), or "sample": each pixel 1
with probability intensity (the *_binary sets), one draw seeded by the image's own pixels so the
same file always gives the same input.
"""
from __future__ import annotations

import io
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch import Tensor

from biva_core.data.mnist import binarize as bernoulli_draw
from biva_core.model.config import ModelConfig
from biva_core.data.celeba import CROP_BOX
from biva_core.data.images import to_rgb

MAX_BYTES = 30 * 2 ** 20           # a larger upload is refused before it is read
MAX_PIXELS = 40_000_000            # width x height; checked from the header, before decoding
CELEBA_ALIGNED = (178, 218)        # (width, height) of img_align_celeba files

Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own guard, for any path that bypasses ours
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class Prepared:
    """One uploaded image as the model sees it, and how it got there."""
    name: str
    original: Image.Image            # decoded, upright, RGB: what the crop box refers to
    box: tuple[int, int, int, int]   # (left, top, right, bottom) in `original`
    rule: str                        # which crop was applied, in words
    x: Tensor                        # (C, H, W) float in [0, 1]: the model input


def decode(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """The decoded image in `path`, upright and RGB; a ValueError naming the file otherwise."""
    name = name or Path(path).name
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ValueError(f"{name}: cannot read the file ({err.strerror or err})") from None
    if size == 0:
        raise ValueError(f"{name}: the file is empty")
    if size > MAX_BYTES:
        raise ValueError(f"{name}: file too large ({size / 2 ** 20:.1f} MiB; the limit is "
                         f"{MAX_BYTES // 2 ** 20} MiB)")
    data = Path(path).read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise ValueError(f"{name}: image too large ({w} x {h} pixels; the limit is "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels)")
            image.load()
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{name}: image too large (the limit is {MAX_PIXELS / 1e6:.0f} megapixels)") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{name}: not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as err:
        if isinstance(err, ValueError) and str(err).startswith(f"{name}: "):
            raise
        raise ValueError(f"{name}: corrupt or truncated image ({err})") from None


def header_pixels(path: str | os.PathLike) -> int:
    """Width x height from the file's header (nothing decoded); 0 when it is not an image (the
    decode then says what is wrong)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return image.size[0] * image.size[1]
    except Exception:  # noqa: BLE001  any unreadable file: decode() reports it
        return 0


def crop_box(size: tuple[int, int], target: tuple[int, int], *, face: bool) -> tuple[tuple[int, int, int, int], str]:
    """(box, rule) for an image of `size` = (W, H) going to a model of `target` = (H, W)."""
    w, h = size
    th, tw = target
    if face and size == CELEBA_ALIGNED:
        return CROP_BOX, f"aligned CelebA image: crop box {CROP_BOX}, resize to {tw}x{th}"
    if (w, h) == (tw, th):
        return (0, 0, w, h), "already the model's size: used as it is"
    cw, ch = (w, w * th // tw) if w * th <= h * tw else (h * tw // th, h)  # largest box of the model's aspect
    left, top = (w - cw) // 2, (h - ch) // 2
    return (left, top, left + cw, top + ch), f"centre crop {cw}x{ch}, resize to {tw}x{th} (Lanczos)"


def is_face(name: str, training: dict | None = None) -> bool:
    """A model of aligned faces: named after CelebA (or faces), or trained on the celeba data set."""
    return any(t in name.lower() for t in ("celeba", "face")) or (training or {}).get("dataset") == "celeba"


def binarization(training: dict | None) -> str:
    """How a Bernoulli model's inputs are binarized: "sample" when it was trained with dynamic
    binarization (train config binarize=true), else "threshold"."""
    return "sample" if ((training or {}).get("train_config") or {}).get("binarize") else "threshold"


def prepare(path: str | os.PathLike, config: ModelConfig, *, face: bool, name: str | None = None,
            binarize: str = "threshold") -> Prepared:
    """Decode, crop, resize and convert one file for a model with this config."""
    if binarize not in ("threshold", "sample"):
        raise ValueError(f"binarize={binarize!r} must be 'threshold' or 'sample'")
    name = name or Path(path).name
    original = decode(path, name)
    c, h, w = config.image_shape
    box, rule = crop_box(original.size, (h, w), face=face)
    image = original.crop(box)
    if image.size != (w, h):
        image = image.resize((w, h), Image.LANCZOS)
    if c == 1:
        image = image.convert("L")
        if config.likelihood == "bernoulli":
            rule += "; binarized at 0.5" if binarize == "threshold" else "; binarized by a seeded Bernoulli draw"
    pixels = np.asarray(image, np.uint8).reshape(h, w, c)
    array = pixels.astype(np.float32) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C, H, W)
    if config.likelihood == "bernoulli":
        if binarize == "threshold":
            x = (x >= 0.5).float()
        else:
            drawn = bernoulli_draw(pixels.transpose(2, 0, 1), zlib.crc32(pixels.tobytes()))
            x = torch.from_numpy(drawn.astype(np.float32))
    return Prepared(name, original, box, rule, x)


