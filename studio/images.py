"""Model inputs and outputs as pictures: uploads are prepared by biva_core.data.prepare (one
implementation for the studio and `biva-evaluate --ood folder`); this module turns tensors into
PIL images for the page."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from biva_core.data.prepare import Prepared


def to_pil(x: Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> an 8-bit PIL image (mode L for one channel)."""
    array = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def upscale(image: Image.Image, height: int) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor so small images stay crisp."""
    factor = max(1, height // image.height)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def show_crop(prep: Prepared, height: int = 128) -> Image.Image:
    """The original, shrunk to `height`, with the crop box drawn on it."""
    scale = height / prep.original.height
    thumb = prep.original.resize((max(1, round(prep.original.width * scale)), height), Image.LANCZOS)
    draw = ImageDraw.Draw(thumb)
    l, t, r, b = (round(v * scale) for v in prep.box)
    draw.rectangle([l, t, max(l, r - 1), max(t, b - 1)], outline=(255, 40, 40), width=2)
    return thumb
