"""Data sets as uint8 arrays (N, C, H, W), decoded once and cached.

    load_split("celeba", "train", "../shared/data")       # (15979, 3, 64, 64) on the shared subset
    load_split("binarized_mnist", "valid")                # $BIVA_DATA/binarized_mnist, values {0, 1}
    load_split("folder", "train", "~/photos", image_size=32)

    dataset          reads                                          (C, H, W)    train / valid / test
    celeba           img_align_celeba/*.jpg, or a zip of them       (3, S, S)    official, by image id
    binarized_mnist  binarized_mnist_{split}.amat, or an .npz       (1, 28, 28)  50k / 10k / 10k
    mnist            train-, t10k-images-idx3-ubyte[.gz]            (1, 28, 28)  first 50k / last 10k / t10k
    fashion_mnist    as mnist                                       (1, 28, 28)  as mnist
    mnist_binary     as mnist, each pixel ~ Bernoulli(intensity)    (1, 28, 28)  as mnist
    fashion_mnist_binary  as fashion_mnist, binarized the same way  (1, 28, 28)  as mnist
    cifar10          cifar-10-batches-bin/ or cifar-10-batches-py/  (3, 32, 32)  first 45k / last 5k / test
    folder           any images, recursively                        (3, S, S)    90% / 5% / 5% by path hash

S is `image_size` (64 by default); the other sets keep their own size and ignore it. Each module's
docstring gives its format and split in full. Values are 0..255 except binarized_mnist and the
*_binary sets (0 or 1). The *_binary splits are one fixed, seeded binarization of the 8-bit images
(`mnist.binarize`); training draws a fresh one every time an image is used (train.py sets the
training key `binarize` for these sets and reads the 8-bit training split).

The folder looked in is data_dir/<dataset> when that exists, else data_dir itself, so both
`../shared/data` and `../shared/data/celeba` work. data_dir defaults to $BIVA_DATA.
The decoded array is cached as .npy under cache_dir (default $BIVA_CACHE, else
~/.cache/biva_studio), keyed by dataset, split, size and the sizes and mtimes of the source files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from biva_core.data import celeba, cifar, folder, mnist
from biva_core.data.cache import Source, cached, default_cache_dir, fingerprint

DATASETS = ("celeba", "binarized_mnist", "mnist", "fashion_mnist", "mnist_binary", "fashion_mnist_binary",
            "cifar10", "folder")
BINARY = ("binarized_mnist", "mnist_binary", "fashion_mnist_binary")  # values {0, 1}
SPLITS = ("train", "valid", "test")
# what one image of a data set shows, for verdicts in words ("typical face"); others: "image"
NOUNS = {"celeba": "face", "binarized_mnist": "digit", "mnist": "digit", "mnist_binary": "digit",
         "fashion_mnist": "garment", "fashion_mnist_binary": "garment", "cifar10": "photo"}
_NATIVE_SHAPE = {"binarized_mnist": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                 "mnist_binary": (1, 28, 28), "fashion_mnist_binary": (1, 28, 28),
                 "cifar10": (3, 32, 32)}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")


def image_shape(dataset: str, image_size: int = 64) -> tuple[int, int, int]:
    """(C, H, W) of the images load_split(dataset, ..., image_size=image_size) returns."""
    _check_dataset(dataset)
    return _NATIVE_SHAPE.get(dataset, (3, image_size, image_size))


def base_dataset(dataset: str) -> str:
    """The set whose files a dataset reads: fashion_mnist for fashion_mnist_binary, else itself."""
    return dataset.removesuffix("_binary")


def dataset_root(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """data_dir/<dataset> when it is a folder, else data_dir; data_dir defaults to $BIVA_DATA."""
    _check_dataset(dataset)
    dataset = base_dataset(dataset)
    if data_dir is None:
        data_dir = os.environ.get("BIVA_DATA")
        if not data_dir:
            raise ValueError(f"no data folder for {dataset}: pass data_dir (--data-dir) "
                             "or set $BIVA_DATA")
    base = Path(data_dir).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"data folder {base} does not exist")
    return base / dataset if (base / dataset).is_dir() else base


def _source(dataset: str, root: Path, split: str, image_size: int) -> Source:
    if dataset == "celeba":
        return celeba.source(root, split, image_size)
    if dataset == "folder":
        return folder.source(root, split, image_size)
    if dataset == "binarized_mnist":
        return mnist.binarized_source(root, split)
    if dataset in ("mnist", "fashion_mnist"):
        return mnist.idx_source(root, split)
    if dataset in ("mnist_binary", "fashion_mnist_binary"):
        return mnist.binary_idx_source(root, split, seed_name=f"{dataset}/{split}")
    return cifar.source(root, split)


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None, *,
               cache_dir: str | os.PathLike | None = None, image_size: int = 64,
               progress: bool = True) -> np.ndarray:
    """uint8 (N, C, H, W) of one split ("train", "valid" or "test") of a dataset in DATASETS.

    The first call decodes (with a progress bar when `progress`) and writes the cache; later
    calls with unchanged source files read the cache. Missing or malformed data raises
    FileNotFoundError or ValueError naming the file or folder and what was expected."""
    _check_dataset(dataset)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    shape = image_shape(dataset, image_size)
    root = dataset_root(dataset, data_dir)
    src = _source(dataset, root, split, image_size)
    key = fingerprint(src.files, dataset, split, shape)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache_root / f"{dataset}-{split}-{shape[-1]}px-{key}.npy"

    def decode() -> np.ndarray:
        images = src.decode(progress)
        if images.shape[1:] != shape:
            raise ValueError(f"{root}: expected {dataset} images of shape {shape}, "
                             f"decoded {images.shape[1:]}")
        return images
    return cached(path, decode)


LABELLED = ("mnist", "fashion_mnist", "mnist_binary", "fashion_mnist_binary")


def load_labels(dataset: str, split: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """int64 class labels (N,) of a split, in the order of load_split's images (the digit sets'
    idx label files; the *_binary sets share their 8-bit set's labels)."""
    _check_dataset(dataset)
    if dataset not in LABELLED:
        raise ValueError(f"{dataset} has no class labels here; labelled sets: {', '.join(LABELLED)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return mnist.read_labels(dataset_root(dataset, data_dir), split)


__all__ = ["BINARY", "DATASETS", "LABELLED", "NOUNS", "SPLITS", "base_dataset", "dataset_root", "image_shape",
           "load_labels", "load_split"]
