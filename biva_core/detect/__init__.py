"""The anomaly detector of spec section 6, in the order it runs:

    scores.py     per-image statistics: bits/dim, LLR^{>k}, the codecs' sizes
    reference.py  the reference (reference.json): the statistics of held-in images, the defaults
    density.py    the joint test of all statistics (a kernel density of the reference's)
    detector.py   the two-sided tests, their combination, the verdicts and their words

    from biva_core.detect import Detector, Reference
    v = Detector(Reference.read("weights/celeba64")).score(model, x)     # v.flagged, v.p, v.score
"""
from biva_core.detect.density import JointDensity
from biva_core.detect.detector import (Detector, Finding, Verdicts, binomial_interval, combine, findings, tail_p,
                                       two_sided_p)
from biva_core.detect.reference import (ALPHA, COMBINES, REFERENCE_FILE, REFERENCE_VERSION, Reference, as_codecs,
                                        as_ks, build_reference, reference_from_scores)
from biva_core.detect.scores import CODECS, batches, compressed_bits_per_dim, scores_per_image

__all__ = ["ALPHA", "CODECS", "COMBINES", "REFERENCE_FILE", "REFERENCE_VERSION", "Detector", "Finding", "JointDensity",
           "Reference", "Verdicts", "as_codecs", "as_ks", "batches", "binomial_interval", "build_reference", "combine",
           "compressed_bits_per_dim", "findings", "reference_from_scores", "scores_per_image", "tail_p", "two_sided_p"]
