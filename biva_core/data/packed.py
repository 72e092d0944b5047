"""A compact, portable encoding of a uint8 image array: one compressed image file per image
(JPEG or lossless WebP) concatenated into a single .npz with offsets.

Used to carry a data split to a machine where the raw data is not (e.g. a lent GPU with a
64 MiB upload limit): 16k CelebA-64 images are ~44 MB as JPEG quality 90 with 4:4:4 chroma,
~97 MB as lossless WebP, 197 MB raw. JPEG is lossy (mean absolute error ~2.5 grey levels).
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
from PIL import Image


def _encode(img: np.ndarray, fmt: str, quality: int) -> bytes:
    im = Image.fromarray(img.transpose(1, 2, 0).squeeze(-1) if img.shape[0] == 1 else img.transpose(1, 2, 0))
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality, subsampling=0)
    elif fmt == "webp":
        im.save(buf, "WEBP", lossless=True, quality=100, method=6)
    else:
        raise ValueError(f"unknown format {fmt!r}; use 'jpeg' or 'webp'")
    return buf.getvalue()


def _decode(data: bytes, channels: int = 3) -> np.ndarray:
    a = np.asarray(Image.open(io.BytesIO(data)))
    if a.ndim == 3 and channels == 1:  # WebP stores grey as RGB with equal channels
        a = a[..., 0]
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def pack(images: np.ndarray, path: str | os.PathLike, *, fmt: str = "jpeg", quality: int = 90) -> int:
    """Encode (N, C, H, W) uint8 images into `path` (.npz); returns its size in bytes."""
    assert images.dtype == np.uint8 and images.ndim == 4, "expected uint8 (N, C, H, W)"
    blobs = [_encode(img, fmt, quality) for img in images]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(path, blob=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             shape=np.array(images.shape[1:], dtype=np.int64))
    return os.path.getsize(path)


def unpack(path: str | os.PathLike, *, workers: int | None = None) -> np.ndarray:
    """Decode a file written by `pack` back into a (N, C, H, W) uint8 array."""
    with np.load(path) as f:
        blob, offsets, shape = f["blob"].tobytes(), f["offsets"], tuple(f["shape"])
    parts = [blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    decode = partial(_decode, channels=int(shape[0]))
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(parts) > 1000:
        with ProcessPoolExecutor(workers) as ex:
            out = list(ex.map(decode, parts, chunksize=256))
    else:
        out = [decode(p) for p in parts]
    images = np.stack(out)
    assert images.shape[1:] == shape, f"{path}: decoded {images.shape[1:]}, header says {shape}"
    return images
