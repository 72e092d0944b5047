"""reference.json: the distribution of the anomaly scores over in-distribution images.

    {"format_version": 1, "split": "valid", "images": N, "K": 1, "note": "...",
     "L_gt_0": [N nats], "L_gt_k": {"1": [N], ...}, "LLR_gt_k": {"1": [N], ...}, "bpd": [N]}

Percentiles place a new image within it: the share of reference images scoring at most as high.
A high LLR^{>k} percentile means "more anomalous than most in-distribution images".
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from biva_core import BIVA

FILE = "reference.json"


@dataclass(frozen=True)
class Reference:
    split: str
    images: int
    K: int
    note: str
    l0: tuple[float, ...]
    lk: dict[int, tuple[float, ...]]
    llr: dict[int, tuple[float, ...]]
    bpd: tuple[float, ...]

    @classmethod
    def read(cls, directory: Path) -> "Reference | None":
        """The folder's reference.json, None when absent; a ValueError naming what is wrong."""
        path = Path(directory) / FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            ks = sorted(int(k) for k in data["LLR_gt_k"])
            ref = cls(split=str(data.get("split", "?")), images=int(data.get("images", len(data["bpd"]))),
                      K=int(data.get("K", 1)), note=str(data.get("note", "")),
                      l0=_floats(data["L_gt_0"]), bpd=_floats(data["bpd"]),
                      lk={k: _floats(data["L_gt_k"][str(k)]) for k in ks},
                      llr={k: _floats(data["LLR_gt_k"][str(k)]) for k in ks})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid reference file ({type(err).__name__}: {err})") from None
        n = len(ref.bpd)
        if len(ref.l0) != n or any(len(v) != n for v in (*ref.lk.values(), *ref.llr.values())):
            raise ValueError(f"{path}: the score lists have different lengths")
        return ref

    def sorted_llr(self, k: int) -> list[float] | None:
        return sorted(self.llr[k]) if k in self.llr else None


def _floats(values) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not out:
        raise ValueError("empty score list")
    return out


def percentile(sorted_values: list[float], value: float) -> float:
    """100 x the share of `sorted_values` that are <= value."""
    return 100.0 * bisect.bisect_right(sorted_values, value) / len(sorted_values)


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linearly interpolated."""
    pos = (len(sorted_values) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def build(model: BIVA, x: torch.Tensor, *, K: int = 1, split: str = "valid", note: str = "",
          seed: int = 0, batch: int = 64) -> dict:
    """The reference.json content of images x (B, C, H, W) in [0, 1]: every k in 1..L-1."""
    ks = list(range(1, model.config.L))
    l0, bpd, lk = [], [], {k: [] for k in ks}
    for start in range(0, len(x), batch):
        s = model.scores(x[start:start + batch], ks, K=K, seed=seed + start)
        l0 += s.l0.tolist()
        bpd += s.bpd.tolist()
        for k in ks:
            lk[k] += s.lk[k].tolist()
    return {"format_version": 1, "split": split, "images": len(x), "K": K, "note": note,
            "L_gt_0": l0, "L_gt_k": {str(k): v for k, v in lk.items()},
            "LLR_gt_k": {str(k): [a - b for a, b in zip(l0, v)] for k, v in lk.items()}, "bpd": bpd}
