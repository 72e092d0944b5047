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
the spec's), or their joint density's p-value (combine="density", biva_core.detect.density).

Our reading of the spec's "F smoothed as (rank + 1) / (N + 1)": F counts the reference at or below
s, 1 - F counts it at or above s, each with the +1 of a conformal p-value, so neither tail is ever 0
and for an in-distribution image P(p_j <= a) <= a: the flag rate at alpha is at most alpha (about
alpha, less the Bonferroni slack when the two statistics are correlated). The smallest p is
4 / (N + 1): with N = 2000 an image beyond every reference image scores -log10 p = 2.7.

A reference made with another K is not comparable (L_K grows with K, and so its spread shrinks):
`Detector.check_K` refuses it with a message that says how to rebuild one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from biva_core.detect.density import JointDensity
from biva_core.detect.reference import COMBINES, REFERENCE_FILE, Reference, as_codecs, as_ks
from biva_core.detect.scores import scores_per_image


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


@dataclass(frozen=True)
class Finding:
    """One image's verdict in words: what it is for this model, and which statistic decided."""
    flagged: bool
    words: str           # "typical face", "atypically simple for this model", ...
    statistic: str       # the deciding statistic ("bits/dim", "LLR>2", "bits/dim - png bits/dim"); "" when typical
    side: str            # "low" or "high" on it; "together" when the statistics are typical one by one


def findings(v: Verdicts, ref: Reference, noun: str = "image") -> list[Finding]:
    """Each image's verdict in words. A flagged image is described by its most atypical statistic
    (smallest two-sided p; among equal p the first of bits/dim, LLR^{>k}, the codecs' statistics):
    low bits/dim is "atypically simple for this model" (a digit for a face model), high "atypically
    complex" (noise); bits/dim - a codec's bits/dim likewise, for the image's complexity;
    LLR^{>k} says how much the levels <= k hold that the levels above do not predict. With
    combine="density" an image can be flagged while each statistic alone is typical: its words name
    the two statistics whose combination no reference image shows."""
    stats = [("bits/dim", v.bpd, ref.bpd, v.p_bpd),
             *[(f"LLR>{k}", v.llr[k], ref.llr[k], v.p_llr[k]) for k in v.ks],
             *[(f"bits/dim - {c} bits/dim", v.cc[c], ref.bpd - ref.compressed[c], v.p_cc[c]) for c in v.codecs]]
    z = np.stack([(np.asarray(x) - r.mean()) / (r.std() or 1.0) for _, x, r, _ in stats], 1)   # (B, m)
    p = np.stack([q for *_, q in stats], 1)                                                   # (B, m)
    out = []
    for i, flagged in enumerate(v.flagged):
        if not flagged:
            out.append(Finding(False, f"typical {noun}", "", ""))
            continue
        j = min(range(len(stats)), key=lambda j: (p[i, j], j))
        name, side = stats[j][0], "low" if z[i, j] < 0 else "high"
        if p[i, j] >= v.alpha:                      # no statistic is atypical alone: the combination is
            a, b = sorted(np.argsort(-np.abs(z[i]))[:2])
            out.append(Finding(True, f"unusual for this model: its {stats[a][0]} and {stats[b][0]} are each typical, "
                                     f"but no {noun} has them together", f"{stats[a][0]} with {stats[b][0]}",
                               "together"))
        elif name.startswith("LLR>"):
            k = name[4:]
            more = "more" if side == "high" else "less"
            out.append(Finding(True, f"atypical for this model: {more} detail in levels 1-{k} than the levels above "
                                     f"predict for a {noun}", name, side))
        else:
            words = "atypically simple for this model" if side == "low" else "atypically complex for this model"
            if name != "bits/dim":   # bits/dim - a codec's: for an image the codec finds this complex
                words += f", for what {name.split(' - ')[1].split()[0].upper()} makes of it"
            out.append(Finding(True, words, name, side))
    return out


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
