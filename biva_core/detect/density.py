"""combine="density": the detector's statistics tested jointly (after Morningstar et al. 2021,
"density of states estimation"). Each statistic is standardized by the reference's mean and
standard deviation; a Gaussian kernel density of the reference's N vectors (bandwidth
h = N^{-1/(m+4)}, Scott's rule) gives an image's atypicality

    a(s) = -log mean_i exp(-|s - r_i|^2 / 2h^2)

and its conformal p-value p = (#{i: a_{-i}(r_i) >= a(s)} + 1) / (N + 1), with a_{-i} each reference
image's atypicality against the other N - 1 (leave one out): the flag rate at alpha is about
alpha, without Bonferroni's slack. Too low or too high on any statistic is atypical, and so is a
combination that no reference image shows."""
from __future__ import annotations

import numpy as np


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
