"""Images in the form a model reads them: a data set's split, or every image file of a folder, as
float (N, C, H, W) in [0, 1] with the model's shape, channels and binarization. What the
evaluation, an export's reference and the experiments score.

    x = load_images("fashion_mnist", "test", data_dir, model.config, limit=1000)
    x, skipped = load_model_folder("my_faces/", model.config, model.training_info, "weights/celeba64")
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from biva_core.data import BINARY, load_split
from biva_core.data.images import IMAGE_EXTENSIONS, adapt
from biva_core.data.prepare import binarization, is_face, prepare
from biva_core.model.config import ModelConfig


def load_images(dataset: str, split: str, data_dir: str | os.PathLike | None, config: ModelConfig, *,
                limit: int | None = None, skip: int = 0) -> Tensor:
    """The first `limit` images (all: None) of a split after its first `skip`, in the form a model
    of `config` was trained on; a set of another shape is adapted to the model's (`adapt`), and a
    Bernoulli model reads 8-bit digits binarized at > 127, as train.py does."""
    arr = load_split(dataset, split, data_dir, image_size=config.image_shape[1], progress=False)[skip:]
    if limit:
        arr = arr[:limit]
    binary = dataset in BINARY
    if tuple(arr.shape[1:]) != config.image_shape:
        arr = adapt(arr * np.uint8(255) if binary else arr, config.image_shape)
        binary = False
    x = torch.from_numpy(np.ascontiguousarray(arr))
    if binary:
        return x.float()                                   # already {0, 1}
    if config.likelihood == "bernoulli":
        return (x > 127).float()                           # as train.py binarizes MNIST
    return x.float() / 255


def load_folder(directory: str | os.PathLike, config: ModelConfig, *, face: bool, binarize: str,
                limit: int | None = None, progress: bool = False) -> tuple[Tensor, list[str]]:
    """Every image file under `directory` (recursively, sorted by path; the first `limit`) prepared
    as the studio prepares an upload (biva_core.data.prepare): (float (N, C, H, W), messages of
    the files skipped as unreadable)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit:
        files = files[:limit]
    xs, skipped = [], []
    for f in tqdm(files, desc=f"reading {root.name}", disable=not progress, leave=False):
        try:
            xs.append(prepare(f, config, face=face, binarize=binarize).x)
        except ValueError as err:
            skipped.append(str(err))
    if not xs:
        raise ValueError(f"{root}: no readable image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                         + (f"; {len(skipped)} skipped, e.g. {skipped[0]}" if skipped else ""))
    return torch.stack(xs), skipped


def load_model_folder(directory: str | os.PathLike, config: ModelConfig, training: dict | None,
                      weights: str | os.PathLike, *, limit: int | None = None,
                      progress: bool = False) -> tuple[Tensor, list[str]]:
    """`load_folder` for the model of the pretrained folder `weights` (its config and training
    metadata): faces cropped as CelebA when it is a face model, digits binarized as it was trained."""
    face = is_face(Path(weights).name, training) and config.image_shape[0] == 3
    return load_folder(directory, config, face=face, binarize=binarization(training), limit=limit,
                       progress=progress)
