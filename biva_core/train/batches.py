"""The training data as batches: the order, the augmentation and the labelled split.

Every batch is a function of (seed, epoch, position) and every flip or binarization draw of
(seed, step, rank), so a resumed run sees the same batches as one run straight through: the
resume state needs only (epoch, pos). Several ranks: each epoch's permutation is the same on every
rank and rank r takes the r-th slice of each global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from biva_core.train.config import TrainConfig
from biva_core.train.semisupervised import draw_labels


def to_float(batch: torch.Tensor, binary: bool) -> torch.Tensor:
    """uint8 batch -> float images in [0, 1]."""
    return batch.float() if binary else batch.float() / 255


class Batches:
    """uint8 training images (N, C, H, W) held in memory (on a GPU the whole split lives there: 16k
    faces at 64x64 are 197 MB), served as float batches on the device."""

    def __init__(self, train: np.ndarray, cfg: TrainConfig, device: torch.device, *, classes: int = 0,
                 train_labels: np.ndarray | None = None, rank: int = 0, world: int = 1,
                 channels_last: bool = False):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.channels_last = channels_last  # the layout of the served batches (Trainer's choice)
        self.binary = cfg.binarize or bool(train.max() <= 1)
        if cfg.binarize and train.max() <= 1:
            raise ValueError("train config: binarize=true needs 8-bit training images (0..255), "
                             "these are already binary")
        train = self._split_labelled(train, train_labels, classes)
        self.train = torch.from_numpy(np.ascontiguousarray(train)).to(device if device.type == "cuda" else "cpu")
        self.epoch, self.pos = 0, 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def _split_labelled(self, train: np.ndarray, train_labels: np.ndarray | None, classes: int) -> np.ndarray:
        """With ssl.labels = n: draw n / classes labelled images per class (ssl.label_seed), keep
        them apart and return the unlabelled rest of the training split."""
        c = self.cfg.ssl
        self.labelled, self.labelled_y, self.label_index = None, None, None
        if not c.labels:
            return train
        if not classes:
            raise ValueError(f"train config: ssl.labels={c.labels} needs a model with classes "
                             "(a preset such as mnist_ssl, or --set classes=C)")
        if train_labels is None or len(train_labels) != len(train):
            raise ValueError("train config: ssl.labels > 0 needs one label per training image")
        if c.labels % classes or len(np.unique(train_labels)) != classes:
            raise ValueError(f"train config: ssl.labels={c.labels} must be a multiple of the {classes} classes, "
                             f"and the data must have {classes} classes (found {len(np.unique(train_labels))})")
        idx = draw_labels(train_labels, c.labels // classes, c.label_seed)
        self.label_index = idx
        self.labelled = torch.from_numpy(np.ascontiguousarray(train[idx]))
        self.labelled_y = torch.from_numpy(np.asarray(train_labels)[idx]).long()
        rest = np.ones(len(train), bool)
        rest[idx] = False
        return train[rest]

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        return torch.randperm(len(self.train), generator=g)

    def next(self, step: int) -> torch.Tensor:
        """This rank's slice of the next global batch of the epoch's permutation."""
        b = self.cfg.batch_size
        part = slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)
        if self.pos + b > len(self.train):
            self.epoch, self.pos = self.epoch + 1, 0
        if self.pos == 0 or self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, self._permutation(self.epoch).to(self.train.device))
        idx = self._perm[1][self.pos:self.pos + b][part]
        self.pos += b
        return self.augment(self.train[idx], b, part, step)

    def labelled_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ssl.labelled_batch labelled images and their labels, drawn afresh each step (seed, step)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 15_485_863 + step)
        n, b = len(self.labelled), self.cfg.ssl.labelled_batch
        idx = torch.randperm(n, generator=g)[:b] if b <= n else torch.randint(n, (b,), generator=g)
        x = self.augment(self.labelled[idx], len(idx), slice(None), step, salt=1_000_003)
        return x, self.labelled_y[idx].to(self.device)

    def random(self, n: int, generator: torch.Generator, step: int, salt: int) -> torch.Tensor:
        """n training images drawn with `generator` (the consistency term's unlabelled images)."""
        idx = torch.randint(len(self.train), (n,), generator=generator)
        return self.augment(self.train[idx.to(self.train.device)], n, slice(None), step, salt=salt)

    def augment(self, x: torch.Tensor, b: int, part: slice, step: int, salt: int = 0) -> torch.Tensor:
        """Flips and dynamic binarization of this rank's slice `part` of a global uint8 batch of b,
        fixed by (seed, step, rank, salt) for resume; -> float images on the device."""
        if self.cfg.flip:
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + step + salt)
            flip = (torch.rand(b, generator=g)[part] < 0.5).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        if self.cfg.binarize:  # a fresh draw each time
            g = torch.Generator().manual_seed(self.cfg.seed * 104_729 + step * 1_009 + self.rank + salt)
            x = (torch.rand(x.shape, generator=g) * 255 < x.cpu()).to(torch.uint8)
        x = to_float(x.to(self.device, non_blocking=True), self.binary)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
