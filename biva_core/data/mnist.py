"""MNIST-like sets: statically binarized MNIST (.amat text or .npz) and the idx files of MNIST and
Fashion-MNIST (gzipped or not). All give uint8 (N, 1, 28, 28).

Binarized MNIST (Larochelle & Murray) has its own 50k / 10k / 10k split, values {0, 1}:
binarized_mnist_{train,valid,test}.amat (784 whitespace-separated 0/1 a line) or an .npz with
keys train / valid / test of shape (N, 784).
MNIST and Fashion-MNIST ship 60k training and 10k test images and no validation set: "valid" is
the last sixth of the training file (the last 10,000 of 60,000), "train" the rest (the first
50,000), "test" the t10k file. Values 0..255.

mnist_binary / fashion_mnist_binary (the setting of Havtorn et al. 2021 and the BIVA paper's
FashionMNIST -> MNIST result): the same splits, each pixel set to 1 with probability
intensity / 255, drawn once with a seed fixed by the set and split (`binarize`).
"""
from __future__ import annotations

import gzip
import math
import zlib
import re
import struct
from pathlib import Path

import numpy as np

from biva_core.data.cache import Source

SIDE = 28


def _as_images(rows: np.ndarray, where: Path) -> np.ndarray:
    """(N, 784) of zeros and ones -> uint8 (N, 1, 28, 28)."""
    if rows.ndim != 2 or rows.shape[1] != SIDE * SIDE:
        raise ValueError(f"{where}: expected rows of {SIDE * SIDE} pixels, found shape {rows.shape}")
    if rows.size and not np.isin(rows, (0, 1)).all():
        raise ValueError(f"{where}: binarized MNIST must hold only 0 and 1")
    return rows.astype(np.uint8).reshape(-1, 1, SIDE, SIDE)


def read_amat(path: Path) -> np.ndarray:
    """uint8 (N, 1, 28, 28) of a binarized_mnist_*.amat file."""
    text = path.read_bytes()
    if not re.search(rb"[^01\s]|\S\S", text):
        # fast path, the canonical files: every value is a single "0" or "1"
        rows = [line.translate(None, b" \t\r\v\f") for line in text.split(b"\n")]
        rows = [row for row in rows if row]
        bad = next((n for n, row in enumerate(rows, 1) if len(row) != SIDE * SIDE), None)
        if bad is not None:
            raise ValueError(f"{path}: expected {SIDE * SIDE} values a line, found "
                             f"{len(rows[bad - 1])} in row {bad}")
        pixels = np.frombuffer(b"".join(rows), np.uint8) - ord("0")
        return pixels.reshape(-1, 1, SIDE, SIDE)
    try:  # other spellings ("1.0", "0.000"): the slow general parser
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: not a whitespace-separated table of numbers ({err})") from err
    return _as_images(rows, path)


def binarized_source(root: Path, split: str) -> Source:
    npz = sorted(root.glob("binarized_mnist*.npz"))
    if npz:
        def decode_npz(progress: bool) -> np.ndarray:
            with np.load(npz[0], allow_pickle=False) as archive:
                if split not in archive.files:
                    raise ValueError(f"{npz[0]}: expected arrays train, valid, test; found "
                                     f"{', '.join(archive.files)}")
                return _as_images(archive[split], npz[0])
        return Source([npz[0]], decode_npz)
    amat = root / f"binarized_mnist_{split}.amat"
    if not amat.is_file():
        raise FileNotFoundError(f"binarized MNIST not found in {root}: expected {amat.name} "
                                "(or binarized_mnist*.npz with arrays train, valid, test)")
    return Source([amat], lambda progress: read_amat(amat))


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array of an idx file (gzipped when its name ends in .gz)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: cannot read ({err})") from err
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {raw[:4].hex()}, "
                         "expected 00000803 for images, 00000801 for labels)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path}: header promises {dims} = {math.prod(dims)} bytes, found {data.size}")
    return data.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    """train-images-idx3-ubyte[.gz] (or the train-images.idx3-ubyte spelling), in root or root/raw."""
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for folder in (root, root / "raw"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{root}: expected the idx file {stem} or {stem}.gz")


def idx_source(root: Path, split: str) -> Source:
    path = _idx_file(root, "t10k-images-idx3-ubyte" if split == "test" else "train-images-idx3-ubyte")

    def decode(progress: bool) -> np.ndarray:
        images = read_idx(path)
        if images.ndim != 3:
            raise ValueError(f"{path}: expected images (N, H, W), found shape {images.shape}")
        return _split(images[:, None], split)  # (N, 1, H, W)
    return Source([path], decode)


def _split(rows: np.ndarray, split: str) -> np.ndarray:
    """The rows of a split from the file that holds it: "valid" is the last sixth of the training
    file (10,000 of 60,000), "train" the rest; the test file is "test" whole."""
    if split == "test":
        return rows
    n_valid = len(rows) // 6
    return rows[len(rows) - n_valid:] if split == "valid" else rows[:len(rows) - n_valid]


def read_labels(root: Path, split: str) -> np.ndarray:
    """int64 class labels (N,) of an MNIST / Fashion-MNIST split, from the idx label files
    (train-labels-idx1-ubyte, t10k-labels-idx1-ubyte), split as the images are."""
    path = _idx_file(root, "t10k-labels-idx1-ubyte" if split == "test" else "train-labels-idx1-ubyte")
    labels = read_idx(path)
    if labels.ndim != 1:
        raise ValueError(f"{path}: expected labels (N,), found shape {labels.shape}")
    return _split(labels, split).astype(np.int64)


def binarize(images: np.ndarray, seed: int | str) -> np.ndarray:
    """uint8 {0, 1}: each pixel is 1 with probability intensity / 255 (a seeded Bernoulli draw).

    A string seed is hashed (CRC-32), so "fashion_mnist_binary/test" names one fixed draw."""
    if isinstance(seed, str):
        seed = zlib.crc32(seed.encode())
    u = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return (u * 255 < images).astype(np.uint8)


def binary_idx_source(root: Path, split: str, seed_name: str) -> Source:
    """An idx split binarized once with the seed `seed_name` (see `binarize`)."""
    src = idx_source(root, split)
    return Source(src.files, lambda progress: binarize(src.decode(progress), seed_name))
