"""The anomaly detector of spec section 6: a two-sided typicality test of the scores.

    ref = Reference.read("weights/fashion_mnist_binary")       # reference.json, made on valid data
    det = Detector(ref)                                          # k(s) and alpha: the reference's defaults
    v = det.score(model, x)                                      # scores with the reference's K, tests
    v.flagged, v.p, v.p_bpd, v.p_llr[k], v.score                 # per image; score = -log10 p

Per image the statistics are s_1 = bits/dim of L^{>0} and s_2 = LLR^{>k} = L^{>0} - L^{>k}, both
importance weighted with the same K. A likelihood alone ranks simple images (a digit for a face
model) as *more* likely, and the LLR of an under-trained model can fall on either side of the
in-distribution range, so each is tested on both sides against its reference distribution (the
same statistic over N held-in images, computed with the same K):

    lower tail  P_lo(s) = (#{ref <= s} + 1) / (N + 1)
    upper tail  P_hi(s) = (#{ref >= s} + 1) / (N + 1)
    p_j         = min(1, 2 min(P_lo, P_hi))                     (two-sided; spec: 2 min(F, 1 - F))
    p           = min(1, 2 min(p_1, p_2))                       (Bonferroni over the two)

Two extensions (off unless a reference names them; docs/detector.md measures when they help):

- several k: a statistic LLR^{>k} for each k of the detector's ks. Small k catch images whose fine
  detail the bottom level explains worse than a face's, large k images whose layout is unlike a face's.
- complexity: s = bits/dim - the bits/dim of a lossless codec (PNG or JPEG 2000), the likelihood
  corrected by the image's complexity as a compressor sees it (Serra et al. 2020, "input
  complexity"): a smooth photograph and a face can have the same bits/dim while the codec finds the
  photograph far simpler.

- complexity with several codecs: one such statistic per codec. A downsampled photograph and a
  face differ in how PNG's and JPEG 2000's sizes relate, which neither codec shows alone.

With m statistics in all, p = min(1, m min_j p_j) (Bonferroni over all of them: combine="bonferroni",
the spec's). combine="density" tests the m statistics jointly instead (after Morningstar et al.
2021, "density of states estimation"): each statistic standardized by the reference's mean and
standard deviation, a Gaussian kernel density of the reference's vectors (bandwidth N^{-1/(m+4)},
Scott's rule), an image's atypicality a(s) = -log mean_i exp(-|s - r_i|^2 / 2h^2), and

    p = (#{i: a_{-i}(r_i) >= a(s)} + 1) / (N + 1)

with a_{-i} each reference image's atypicality against the other N - 1 (leave one out), so the flag
rate at alpha is about alpha (a conformal p-value, without Bonferroni's slack). Too low or too high
on any statistic is atypical as before, and so is a combination that no reference image shows
(typical bits/dim and typical PNG size, yet not the JPEG 2000 size a face with them would have).

Our reading of the spec's "F smoothed as (rank + 1) / (N + 1)": F counts the reference at or below
s, 1 - F counts it at or above s, each with the +1 of a conformal p-value, so neither tail is ever 0
and for an in-distribution image P(p_j <= a) <= a: the flag rate at alpha is at most alpha (about
alpha, less the Bonferroni slack when the two statistics are correlated). The smallest p is
4 / (N + 1): with N = 2000 an image beyond every reference image scores -log10 p = 2.7.

A reference made with another K is not comparable (L_K grows with K, and so its spread shrinks):
`Detector.check_K` refuses it with a message that says how to rebuild one.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from biva_core.model import PRIORS

REFERENCE_FILE = "reference.json"
COMBINES = ("bonferroni", "density")
REFERENCE_VERSION = 3          # 3: records `prior`; versions 1 and 2 were all "sample"
ALPHA = 0.05


# ---------------------------------------------------------------- per-image scores

def batches(images: Tensor, batch_size: int, desc: str, progress: bool):
    from tqdm import tqdm
    starts = range(0, len(images), batch_size)
    for i, s in enumerate(tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)):
        yield i, images[s:s + batch_size]


def scores_per_image(model, images: Tensor, ks: list[int], K: int, *, batch_size: int = 64,
                     chunk: int = 256, seed: int = 0, progress: bool = False, desc: str = "scores",
                     on_batch=None, prior: str = "sample") -> dict:
    """Per image (nats): L^{>0} (= L_K), L^{>k} and LLR^{>k} for k in ks, bits/dim of L^{>0}, the
    single-sample ELBO L_1, and the image's size under each lossless codec in bits/dim
    ("compressed_bpd": {codec: (N,)}). Batch i draws with seed `seed + i`; on_batch(done, total) after
    each batch (a progress callback). prior: how L^{>k} takes z_{<=k} ("sample" or "mode")."""
    l1, l0, bpd = [], [], []
    comp: dict[str, list[Tensor]] = {c: [] for c in CODECS}
    lk: dict[int, list[Tensor]] = {k: [] for k in ks}
    for i, x in batches(images, batch_size, desc, progress):
        s = model.scores(x, ks, K=K, chunk=chunk, seed=seed + i, prior=prior)
        l0.append(s.l0.float().cpu())
        # K = 1: L^{>0} drew the same z as the ELBO with this seed
        l1.append(l0[-1] if K == 1 else model.elbo(x, seed=seed + i)["elbo"].float().cpu())
        bpd.append(s.bpd.float().cpu())
        for c in CODECS:
            comp[c].append(compressed_bits_per_dim(x, c))
        for k in ks:
            lk[k].append(s.lk[k].float().cpu())
        if on_batch is not None:
            on_batch(min(len(images), (i + 1) * batch_size), len(images))
    l0_all = torch.cat(l0)
    lk_all = {k: torch.cat(v) for k, v in lk.items()}
    return {"L_1": torch.cat(l1), "L_gt_0": l0_all, "bpd": torch.cat(bpd), "L_gt_k": lk_all,
            "LLR_gt_k": {k: l0_all - v for k, v in lk_all.items()}, "compressed_bpd": {c: torch.cat(v) for c, v in comp.items()}}


# the lossless codecs of the complexity statistic (Pillow's options)
CODECS = {"png": dict(format="PNG", optimize=True), "jpeg2000": dict(format="JPEG2000", irreversible=False)}


def compressed_bits_per_dim(images: Tensor, codec: str = "png") -> Tensor:
    """(B,) the size of each image under a lossless `codec` (CODECS), in bits per dimension: its
    complexity as a compressor measures it. images: (B, C, H, W) in [0, 1], C = 1 or 3,
    quantized to 8 bits (binary images: 0 and 255)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    import io

    from PIL import Image
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for im in x:
        a = im[0].numpy() if im.shape[0] == 1 else im.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, **CODECS[codec])
        out.append(8.0 * len(buf.getvalue()) / im.numel())
    return torch.tensor(out, dtype=torch.float32)


# ---------------------------------------------------------------- the reference

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
        from biva_core.io.files import atomic_write
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


# ---------------------------------------------------------------- the test

def tail_p(reference: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """(P_lo, P_hi) of each value against the reference: (#ref <= s + 1) / (N + 1) and
    (#ref >= s + 1) / (N + 1)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    s = np.asarray(values, dtype=np.float64)
    n = len(ref)
    below = np.searchsorted(ref, s, side="right")
    above = n - np.searchsorted(ref, s, side="left")
    return (below + 1) / (n + 1), (above + 1) / (n + 1)


def two_sided_p(reference: np.ndarray, values) -> np.ndarray:
    """p = min(1, 2 min(P_lo, P_hi)) for each value."""
    lo, hi = tail_p(reference, values)
    return np.minimum(1.0, 2 * np.minimum(lo, hi))


def combine(*ps) -> np.ndarray:
    """Bonferroni over m p-values: min(1, m min(p_1, ..., p_m))."""
    return np.minimum(1.0, len(ps) * np.min(np.stack([np.asarray(p, dtype=np.float64) for p in ps]), axis=0))


class JointDensity:
    """combine="density": the atypicality of a vector of statistics against the reference's vectors
    (N, m), a Gaussian kernel density of the standardized statistics, and its conformal p-value."""

    def __init__(self, reference: np.ndarray):
        r = np.asarray(reference, dtype=np.float64)
        self.mean, self.std = r.mean(0), r.std(0)
        self.std[self.std == 0] = 1.0
        self.r = (r - self.mean) / self.std
        n, m = self.r.shape
        self.h = n ** (-1.0 / (m + 4))
        self._sq = (self.r ** 2).sum(1)
        self.ref_atypicality = self._rows(self.r, leave_out=True)   # (N,) in the reference's order
        self._sorted = np.sort(self.ref_atypicality)

    def _rows(self, x: np.ndarray, leave_out: bool = False, chunk: int = 512) -> np.ndarray:
        """-log mean_i exp(-|x - r_i|^2 / 2h^2) for each row of standardized x, in chunks of rows
        (memory: chunk x N); leave_out: x is the reference itself, row j leaves r_j out."""
        out = []
        for start in range(0, len(x), chunk):
            c = x[start:start + chunk]
            d2 = np.maximum((c ** 2).sum(1)[:, None] + self._sq[None] - 2 * c @ self.r.T, 0) / (2 * self.h ** 2)
            if leave_out:
                d2[np.arange(len(c)), start + np.arange(len(c))] = np.inf
            low = d2.min(1, keepdims=True)                   # stable far from every reference point
            out.append(low[:, 0] - np.log(np.exp(-(d2 - low)).sum(1) / (d2.shape[1] - int(leave_out))))
        return np.concatenate(out) if out else np.zeros(0)

    def atypicality(self, s: np.ndarray) -> np.ndarray:
        """(B,) for statistics s (B, m): -log of the reference's kernel density at s, up to a constant."""
        return self._rows((np.asarray(s, dtype=np.float64).reshape(-1, self.r.shape[1]) - self.mean) / self.std)

    def p(self, a: np.ndarray) -> np.ndarray:
        """(#{reference atypicality >= a} + 1) / (N + 1) for atypicalities a (`atypicality`)."""
        n = len(self._sorted)
        return (n - np.searchsorted(self._sorted, a, side="left") + 1) / (n + 1)


@dataclass
class Verdicts:
    """The detector's answer for a set of images (arrays of length B; one per k in dicts)."""
    ks: tuple[int, ...]
    K: int
    alpha: float
    bpd: np.ndarray
    llr: dict[int, np.ndarray]
    p_bpd: np.ndarray
    p_llr: dict[int, np.ndarray]
    p: np.ndarray
    l0: np.ndarray | None = None
    lk: dict[int, np.ndarray] | None = None
    cc: dict[str, np.ndarray] = field(default_factory=dict)    # codec -> bits/dim - its bits/dim (complexity)
    p_cc: dict[str, np.ndarray] = field(default_factory=dict)
    combine: str = "bonferroni"
    atypicality: np.ndarray | None = None   # combine="density": -log of the reference's density at the statistics

    @property
    def codecs(self) -> tuple[str, ...]:
        return tuple(self.cc)

    @property
    def score(self) -> np.ndarray:
        """-log10 p: the anomaly score (higher = more anomalous)."""
        return -np.log10(self.p)

    @property
    def flagged(self) -> np.ndarray:
        return self.p < self.alpha

    def tails(self, ref: Reference) -> tuple[list[str], dict[int, list[str]], dict[str, list[str]]]:
        """Which side of the reference each statistic lies on: "low", "high" or "typical" (bits/dim,
        LLR^{>k} for each k, and bits/dim - each codec's bits/dim; {} without complexity)."""
        def side(r, v, p):
            lo, hi = tail_p(r, v)
            return ["typical" if q >= self.alpha else ("low" if a < b else "high") for a, b, q in zip(lo, hi, p)]
        return (side(ref.bpd, self.bpd, self.p_bpd),
                {k: side(ref.llr[k], self.llr[k], self.p_llr[k]) for k in self.ks},
                {c: side(ref.bpd - ref.compressed[c], self.cc[c], self.p_cc[c]) for c in self.cc})


class Detector:
    """Spec section 6 over a Reference: test(bpd, llr) for scores made elsewhere, score(model, x)
    to make them with the reference's K and test them. k: one k (the spec's detector) or several;
    complexity: also test bits/dim - a codec's bits/dim (a codec name or several; False or "off": not;
    None: the reference's default); combine: "bonferroni" (the spec's) or "density" (None: the
    reference's default)."""

    def __init__(self, reference: Reference, k=None, alpha: float | None = None, complexity=None, combine=None):
        self.ref = reference
        self.ks = as_ks(k) or reference.default_ks
        self.alpha = reference.alpha if alpha is None else float(alpha)
        if complexity is None:
            complexity = reference.complexity
        self.codecs = as_codecs(complexity)
        lacking = [c for c in self.codecs if c not in reference.compressed]
        if lacking:
            raise ValueError(f"the reference holds no {', '.join(lacking)} sizes, so the complexity statistic cannot be "
                             "tested; rebuild it (biva-evaluate ... --reference OUT) or test without complexity")
        self.combine = reference.combine if combine is None else str(combine)
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        missing = [j for j in self.ks if j not in reference.llr]
        if missing:
            raise ValueError(f"the reference holds LLR>k for k in {reference.ks}, not k={missing}; "
                             f"choose among those or rebuild it (biva-evaluate ... --reference OUT --ks {' '.join(map(str, missing))})")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must be in (0, 1)")
        self.joint = JointDensity(self._stack(reference.bpd, reference.llr, {
            c: reference.bpd - reference.compressed[c] for c in self.codecs})) if self.combine == "density" else None

    @property
    def complexity(self) -> bool:
        return bool(self.codecs)

    def _stack(self, bpd, llr: dict, cc: dict) -> np.ndarray:
        """(B, m) the statistics in order: bits/dim, LLR^{>k} for each k, bits/dim - each codec's (cc)."""
        return np.stack([bpd, *[llr[k] for k in self.ks], *[cc[c] for c in self.codecs]], axis=1)

    def check_K(self, K: int) -> None:
        if int(K) != self.ref.K:
            raise ValueError(
                f"the reference was made with K={self.ref.K} importance samples; scores with K={K} are not "
                f"comparable to it (L_K grows with K). Score with K={self.ref.K}, or rebuild the reference "
                f"with K={K}: biva-evaluate --weights DIR --data DATASET --split valid --iw {K} --reference "
                f"DIR/{REFERENCE_FILE}")

    def check_prior(self, prior: str) -> None:
        if prior != self.ref.prior:
            raise ValueError(
                f'the reference\'s LLR^{{>k}} took z_{{<=k}} with prior="{self.ref.prior}"; scores made with '
                f'prior="{prior}" are a different statistic. Score with prior="{self.ref.prior}", or rebuild '
                f"the reference: biva-evaluate --weights DIR --data DATASET --split valid --iw {self.ref.K} "
                f"--prior {prior} --reference DIR/{REFERENCE_FILE}")

    @property
    def statistics(self) -> int:
        """m, the number of statistics combined."""
        return 1 + len(self.ks) + len(self.codecs)

    @property
    def smallest_p(self) -> float:
        """The smallest p any image can get from this reference: 1 / (N + 1) for the joint density,
        min(1, 2m / (N + 1)) by Bonferroni over m two-sided tails. The detector can flag nothing
        when it is >= alpha."""
        n = len(self.ref.bpd)
        return 1 / (n + 1) if self.combine == "density" else min(1.0, 2 * self.statistics / (n + 1))

    @property
    def images_needed(self) -> int:
        """The fewest reference images with which this detector can flag at its alpha."""
        top = 1 if self.combine == "density" else 2 * self.statistics
        n = max(1, math.floor(top / self.alpha) - 1)
        while top / (n + 1) >= self.alpha:  # smallest_p < alpha
            n += 1
        return n

    def test(self, bpd, llr, *, compressed=None, l0=None, lk=None) -> Verdicts:
        """bpd: (B,); llr: {k: (B,)} for each of the detector's ks (an array when it has one k);
        compressed: {codec: (B,)} the images' bits/dim under each of the detector's codecs
        (`compressed_bits_per_dim`; an array when it has one codec); needed when the detector tests
        complexity; lk like llr."""
        as_dict = lambda v: v if isinstance(v, dict) else {self.ks[0]: v}  # noqa: E731
        if not isinstance(llr, dict) and len(self.ks) > 1:
            raise ValueError(f"the detector tests LLR>k for k in {list(self.ks)}: pass llr as {{k: scores}}")
        llr = {k: np.asarray(as_dict(llr)[k], dtype=np.float64) for k in self.ks}
        bpd = np.asarray(bpd, dtype=np.float64)
        p_bpd = two_sided_p(self.ref.bpd, bpd)
        p_llr = {k: two_sided_p(self.ref.llr[k], v) for k, v in llr.items()}
        cc, p_cc = {}, {}
        if self.complexity:
            if not isinstance(compressed, dict):
                if compressed is None or len(self.codecs) > 1:
                    raise ValueError(f"the detector tests complexity: pass compressed={{codec: bits/dim}} for "
                                     f"{list(self.codecs)} (compressed_bits_per_dim)")
                compressed = {self.codecs[0]: compressed}
            for c in self.codecs:
                if c not in compressed:
                    raise ValueError(f"the detector tests complexity with {c}: pass the images' {c} bits/dim")
                cc[c] = bpd - np.asarray(compressed[c], dtype=np.float64)
                p_cc[c] = two_sided_p(self.ref.bpd - self.ref.compressed[c], cc[c])
        atypicality = None
        if self.joint is not None:
            atypicality = self.joint.atypicality(self._stack(bpd, llr, cc))
            p = self.joint.p(atypicality)
        else:
            p = combine(p_bpd, *p_llr.values(), *p_cc.values())
        return Verdicts(self.ks, self.ref.K, self.alpha, bpd, llr, p_bpd, p_llr, p,
                        None if l0 is None else np.asarray(l0),
                        None if lk is None else {k: np.asarray(as_dict(lk)[k]) for k in self.ks}, cc, p_cc,
                        self.combine, atypicality)

    def test_scores(self, s: dict) -> Verdicts:
        """Test the output of `scores_per_image` (made with the reference's K and these ks)."""
        return self.test(s["bpd"].numpy(), {k: s["LLR_gt_k"][k].numpy() for k in self.ks},
                         compressed={c: v.numpy() for c, v in s.get("compressed_bpd", {}).items()} or None,
                         l0=s["L_gt_0"].numpy(), lk={k: s["L_gt_k"][k].numpy() for k in self.ks})

    def score(self, model, x: Tensor, *, K: int | None = None, seed: int = 0, batch_size: int = 64,
              chunk: int = 256, progress: bool = False, on_batch=None, prior: str | None = None) -> Verdicts:
        K = self.ref.K if K is None else K
        prior = self.ref.prior if prior is None else prior
        self.check_K(K)
        self.check_prior(prior)
        s = scores_per_image(model, x, list(self.ks), K, batch_size=batch_size, chunk=chunk, seed=seed,
                             progress=progress, on_batch=on_batch, prior=prior)
        return self.test_scores(s)


def binomial_interval(n: int, alpha: float, z: float = 4.0) -> tuple[float, float]:
    """The flag count of n independent images, each flagged with probability alpha, lies in
    n alpha +- z sqrt(n alpha (1 - alpha)) (z = 4: outside with probability < 1e-4)."""
    mean, sd = n * alpha, math.sqrt(n * alpha * (1 - alpha))
    return mean - z * sd, mean + z * sd
