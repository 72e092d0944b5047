"""The reference of the detector (reference.json): the statistics of N held-in images (the valid
split), computed with one K and one way of taking z_{<=k}, and the detector's defaults (k, alpha,
codecs, combination). A reference made with another K is not comparable (L_K grows with K, and so
its spread shrinks): `Detector.check_K` refuses it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from biva_core.detect.scores import CODECS, scores_per_image
from biva_core.io.files import atomic_write
from biva_core.model import PRIORS

REFERENCE_FILE = "reference.json"
REFERENCE_VERSION = 3          # 3: records `prior`; versions 1 and 2 were all "sample"
COMBINES = ("bonferroni", "density")
ALPHA = 0.05


@dataclass(frozen=True)
class Reference:
    """The scores of N held-in images (reference.json), and the detector's defaults."""
    split: str
    K: int
    l0: np.ndarray                   # (N,) nats
    bpd: np.ndarray                  # (N,)
    lk: dict[int, np.ndarray]        # k -> (N,) nats
    llr: dict[int, np.ndarray]       # k -> (N,) nats
    note: str = ""
    k: tuple[int, ...] | None = None  # the detector's default ks (None: the smallest k held)
    alpha: float = ALPHA
    seed: int = 0
    extra: dict = field(default_factory=dict)
    prior: str = "sample"            # how L^{>k} took z_{<=k}: a draw ("sample") or the mean ("mode")
    compressed: dict = field(default_factory=dict)  # codec -> (N,) bits/dim of each image under it
    complexity: tuple[str, ...] = ()  # the detector's default: test bits/dim - each codec's bits/dim too
    combine: str = "bonferroni"       # the detector's default combination (COMBINES)

    def __post_init__(self):
        object.__setattr__(self, "k", as_ks(self.k))
        object.__setattr__(self, "complexity", as_codecs(self.complexity))
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")

    @property
    def images(self) -> int:
        return len(self.bpd)

    @property
    def ks(self) -> list[int]:
        return sorted(self.llr)

    @property
    def default_ks(self) -> tuple[int, ...]:
        return self.k if self.k else (self.ks[0],)

    def to_dict(self) -> dict:
        ks = self.default_ks
        return {"format_version": REFERENCE_VERSION, "split": self.split, "images": self.images,
                "K": self.K, "prior": self.prior, "note": self.note, "seed": self.seed,
                "detector": {"k": ks[0] if len(ks) == 1 else list(ks), "alpha": self.alpha, "combine": self.combine,
                             **({"complexity": list(self.complexity)} if self.complexity else {})}, **self.extra,
                "L_gt_0": self.l0.tolist(), "bpd": self.bpd.tolist(),
                **({"compressed_bpd": {c: v.tolist() for c, v in self.compressed.items()}} if self.compressed else {}),
                "L_gt_k": {str(k): v.tolist() for k, v in sorted(self.lk.items())},
                "LLR_gt_k": {str(k): v.tolist() for k, v in sorted(self.llr.items())}}

    def write(self, path: str | os.PathLike) -> Path:
        """Write reference.json atomically (a folder means folder/reference.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / REFERENCE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Path(p).write_text(json.dumps(self.to_dict())))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Reference | None":
        """A folder's reference.json (or the file itself); None when absent; a ValueError
        naming the file and what is wrong otherwise. Version 1 files (no detector defaults)
        are read too."""
        path = Path(path)
        if path.is_dir():
            path = path / REFERENCE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            floats = lambda v: np.asarray([float(a) for a in v], dtype=np.float64)  # noqa: E731
            ks = sorted(int(k) for k in data["LLR_gt_k"])
            det = data.get("detector") or {}
            known = {"format_version", "split", "images", "K", "prior", "note", "seed", "detector",
                     "L_gt_0", "bpd", "L_gt_k", "LLR_gt_k", "compressed_bpd"}
            ref = cls(split=str(data.get("split", "?")), K=int(data["K"]), note=str(data.get("note", "")),
                      l0=floats(data["L_gt_0"]), bpd=floats(data["bpd"]),
                      lk={k: floats(data["L_gt_k"][str(k)]) for k in ks},
                      llr={k: floats(data["LLR_gt_k"][str(k)]) for k in ks},
                      k=as_ks(det["k"]) if "k" in det else None, alpha=float(det.get("alpha", ALPHA)),
                      seed=int(data.get("seed", 0)), extra={k: v for k, v in data.items() if k not in known},
                      prior=str(data.get("prior", "sample")),
                      compressed={str(c): floats(v) for c, v in (data.get("compressed_bpd") or {}).items()},
                      complexity=as_codecs(det.get("complexity")), combine=str(det.get("combine", "bonferroni")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid reference file ({type(err).__name__}: {err})") from None
        n = ref.images
        if n < 2:
            raise ValueError(f"{path}: a reference needs at least 2 images, found {n}")
        if ref.K < 1:
            raise ValueError(f"{path}: K={ref.K} must be >= 1")
        if ref.prior not in PRIORS:
            raise ValueError(f"{path}: prior={ref.prior!r} must be one of {PRIORS}")
        if len(ref.l0) != n or any(len(v) != n for v in (*ref.lk.values(), *ref.llr.values())) or \
                any(len(v) != n for v in ref.compressed.values()):
            raise ValueError(f"{path}: the score lists have different lengths")
        if not ks or not set(ref.default_ks) <= set(ks):
            raise ValueError(f"{path}: the detector's k={list(ref.default_ks)} has no LLR scores (held: {ks})")
        lacking = [c for c in ref.complexity if c not in ref.compressed]
        if lacking:
            raise ValueError(f"{path}: the detector tests complexity with {', '.join(lacking)}, but the file holds no "
                             f"compressed_bpd for it")
        return ref


def as_ks(k) -> tuple[int, ...] | None:
    """The detector's ks from an int, a sequence of ints or a string such as "1, 19" (None stays None)."""
    if k is None or (isinstance(k, (str, list, tuple)) and not k):
        return None
    if isinstance(k, str):
        k = k.replace(",", " ").split()
    items = list(k) if isinstance(k, (list, tuple, set, np.ndarray)) else [k]
    try:
        ks = tuple(sorted({int(j) for j in items}))
    except (TypeError, ValueError):
        raise ValueError(f"k must be whole numbers, got {k!r}") from None
    return ks


def as_codecs(c) -> tuple[str, ...]:
    """The complexity statistic's codecs from None / False / "off" (none), a name, several names in a
    string ("png jpeg2000", "png, jpeg2000") or a sequence; in CODECS' order."""
    if c is None or c is False or (isinstance(c, (str, list, tuple)) and not c):
        return ()
    items = c.replace(",", " ").split() if isinstance(c, str) else list(c)
    if items == ["off"]:
        return ()
    bad = [a for a in items if a not in CODECS]
    if bad:
        raise ValueError(f"complexity must be one or more of {list(CODECS)}, or off; got {c!r}")
    return tuple(a for a in CODECS if a in items)


def build_reference(model, images: Tensor, ks: list[int], K: int, *, k=None,
                    alpha: float = ALPHA, split: str = "valid", note: str = "", seed: int = 0,
                    batch_size: int = 64, chunk: int = 256, progress: bool = False, on_batch=None,
                    prior: str = "sample", complexity=None, combine: str = "bonferroni") -> Reference:
    """The reference of `images` (float (N, C, H, W) in [0, 1], held-in data such as the valid
    split): their scores for each k in ks with K importance samples and `prior`; k is the
    detector's default k (an int or several); complexity: the codec(s) whose bits/dim the detector
    subtracts by default (None: off; every codec's sizes are recorded either way); combine: the
    detector's default combination of its statistics (COMBINES)."""
    ks = sorted({int(j) for j in ks} | set(as_ks(k) or ()))
    s = scores_per_image(model, images, ks, K, batch_size=batch_size, chunk=chunk, seed=seed,
                         progress=progress, desc="reference", on_batch=on_batch, prior=prior)
    return reference_from_scores(s, K, k=k, alpha=alpha, split=split, note=note, seed=seed, prior=prior,
                                 complexity=complexity, combine=combine)


def reference_from_scores(s: dict, K: int, *, k=None, alpha: float = ALPHA, split: str = "valid", note: str = "",
                          seed: int = 0, prior: str = "sample", complexity=None, combine: str = "bonferroni") -> Reference:
    """A Reference of the output of `scores_per_image` (made with K importance samples and `prior`)."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    np_ = lambda t: t.double().numpy()  # noqa: E731
    ks = sorted(s["LLR_gt_k"])
    return Reference(split=split, K=int(K), prior=prior, note=note, seed=seed, k=as_ks(k) or (ks[0],),
                     alpha=alpha,
                     l0=np_(s["L_gt_0"]), bpd=np_(s["bpd"]),
                     lk={j: np_(v) for j, v in s["L_gt_k"].items()},
                     llr={j: np_(v) for j, v in s["LLR_gt_k"].items()},
                     compressed={c: np_(v) for c, v in s.get("compressed_bpd", {}).items()}, complexity=complexity,
                     combine=combine)

