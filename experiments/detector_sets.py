"""The detector of a shipped folder, at each k its reference holds, against several image sets.

Scores every set once with the reference's K and prior and all of its ks (`scores_per_image`,
the detector's own code), saves the per-image scores, and prints for each k: the flag rate of
the held-in images and, per out-of-distribution set, the detector's AUROC and flag rate, and
the AUROC of each of its two-sided tests alone. A choice of k made on one group of sets can
then be read on another without scoring anything again (--load).

    python experiments/detector_sets.py --weights weights/celeba64 --data celeba --split valid \\
        --skip 1000 --limit 300 --sets crops=runs/ood_a/crops crops32=runs/ood_a/crops32 \\
        --save runs/det_valid_a.npz --threads 1
    python experiments/detector_sets.py --weights weights/celeba64 --load runs/det_valid_a.npz

--save writes the reference the scores were tested against beside them (NAME.reference.json), and
--load tests against that one, so saved scores keep their meaning after the weights are re-exported.
--subsets adds the detectors with several k (Bonferroni over bits/dim and each LLR>k), each also
with the complexity statistic of each lossless codec and of both (bits/dim - the codec's bits/dim;
"+png", "+jpeg2000" in the table), and each of those combined by the reference's joint density
instead of Bonferroni ("density" in the table; biva_core.detect.detector). Scores saved before the codecs' sizes were recorded get them with
--add-sizes (the same --split/--skip/--limit/--sets; the reference's from its first N valid
images): the sizes need the images, not the model.
With --ref N the reference is built here instead, from the first N valid images, with --iw K,
--prior and --ks (another prior or K than the shipped reference's).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from biva_core import load_pretrained
from biva_core.detect import (CODECS, COMBINES, Detector, Reference, build_reference, compressed_bits_per_dim,
                                scores_per_image)
from biva_core.data.inputs import load_images, load_model_folder
from biva_core.eval.evaluate import auroc
from biva_core.model import PRIORS

IN = "in"


def score_sets(args, ref: Reference | None) -> tuple[Reference, dict[str, dict[str, np.ndarray]]]:
    """(the reference, {set: {"bpd": (n,), "llr<k>": (n,) for each k}}); the held-in split is the
    set "in". Without `ref`, one is built from the first --ref valid images."""
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights)
    if ref is None:
        t0 = time.time()
        valid = load_images(args.data, "valid", args.data_dir, model.config, limit=args.ref)
        ref = build_reference(model, valid, args.ks, args.iw, k=args.ks[0], prior=args.prior, seed=1_000,
                              batch_size=args.batch_size, progress=not args.no_progress)
        print(f"reference: {len(valid)} images, {(time.time() - t0) / len(valid):.2f} s / image", file=sys.stderr)
    x_in = load_images(args.data, args.split, args.data_dir, model.config, limit=args.skip + args.limit)[args.skip:]
    sets = {IN: x_in}
    for spec in args.sets:
        name, directory = spec.split("=", 1)
        sets[name] = load_model_folder(directory, model.config, model.training_info, args.weights,
                                       limit=args.limit)[0]
    out = {}
    for name, x in sets.items():
        t0 = time.time()
        s = scores_per_image(model, x, ref.ks, ref.K, prior=ref.prior, seed=args.seed,
                             batch_size=args.batch_size, progress=not args.no_progress, desc=name)
        out[name] = {"bpd": s["bpd"].double().numpy(),
                     **{f"c_{c}": v.double().numpy() for c, v in s["compressed_bpd"].items()},
                     **{f"llr{k}": v.double().numpy() for k, v in s["LLR_gt_k"].items()}}
        print(f"{name}: {len(x)} images, {(time.time() - t0) / len(x):.2f} s / image", file=sys.stderr)
    return ref, out


def table(ref: Reference, scores: dict[str, dict[str, np.ndarray]],
          combos: list[tuple[tuple[int, ...], tuple[str, ...], str]]) -> list[dict]:
    """One row per detector (a k, or several; with or without the complexity statistic of one codec
    or more; Bonferroni or the joint density over its statistics)."""
    rows = []
    for ks, codecs, how in combos:
        det = Detector(ref, k=ks, complexity=codecs or "off", combine=how)
        llr = lambda s: {k: s[f"llr{k}"] for k in ks}  # noqa: E731
        sizes = lambda s: {c: s[f"c_{c}"] for c in CODECS if f"c_{c}" in s}  # noqa: E731
        v_in = det.test(scores[IN]["bpd"], llr(scores[IN]), compressed=sizes(scores[IN]))
        row = {"k": "+".join(map(str, (*ks, *codecs))), "combine": how, "flagged_in": float(v_in.flagged.mean())}
        for name, s in scores.items():
            if name == IN:
                continue
            v = det.test(s["bpd"], llr(s), compressed=sizes(s))
            row[f"det_{name}"] = auroc(v_in.score, v.score)
            row[f"flag_{name}"] = float(v.flagged.mean())
            row[f"bpd2_{name}"] = auroc(-np.log10(v_in.p_bpd), -np.log10(v.p_bpd))
            if len(ks) == 1:
                k = ks[0]
                row[f"llr2_{name}"] = auroc(-np.log10(v_in.p_llr[k]), -np.log10(v.p_llr[k]))
                row[f"llr1_{name}"] = auroc(v_in.llr[k], v.llr[k])
        rows.append(row)
    return rows


def detectors(ks: list[int], subsets: bool, codecs: list[str]) -> list[tuple[tuple[int, ...], tuple[str, ...], str]]:
    """Each k alone (Bonferroni, the spec's); with `subsets` every set of two or more of them, each
    of those with the complexity statistic of every set of the codecs whose sizes are at hand
    (`codecs`), and each detector combined by Bonferroni and by the joint density."""
    out = [((k,), (), "bonferroni") for k in ks]
    if subsets:
        sets = [c for n in range(1, len(ks) + 1) for c in itertools.combinations(ks, n)]
        codec_sets = [c for n in range(len(codecs) + 1) for c in itertools.combinations(codecs, n)]
        out = [(c, cs, how) for how in COMBINES for cs in codec_sets for c in sets]
    return out


def add_sizes(args, ref: Reference, scores: dict[str, dict[str, np.ndarray]]) -> Reference:
    """Every codec's bits/dim of every set's images (loaded as score_sets loads them), and of the
    reference's (the first ref.images images of the valid split); returns the reference with them."""
    import dataclasses
    model = load_pretrained(args.weights)
    x_in = load_images(args.data, args.split, args.data_dir, model.config, limit=args.skip + args.limit)[args.skip:]
    folders = {IN: x_in, **{n: load_model_folder(d, model.config, model.training_info, args.weights,
                                                 limit=args.limit)[0]
                            for n, d in (spec.split("=", 1) for spec in args.sets)}}
    for name, x in folders.items():
        if name in scores:
            if len(x) != len(scores[name]["bpd"]):
                raise SystemExit(f"{name}: {len(x)} images, but {len(scores[name]['bpd'])} saved scores")
            for c in CODECS:
                scores[name][f"c_{c}"] = compressed_bits_per_dim(x, c).double().numpy()
    if set(ref.compressed) != set(CODECS):
        valid = load_images(args.data, "valid", args.data_dir, model.config, limit=ref.images)
        ref = dataclasses.replace(ref, compressed={c: compressed_bits_per_dim(valid, c).double().numpy() for c in CODECS})
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a folder with reference.json")
    ap.add_argument("--data", default="celeba")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"))
    ap.add_argument("--split", default="valid", help="the held-in images (valid: past the reference's)")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N images of the split")
    ap.add_argument("--limit", type=int, default=300, help="images of each set")
    ap.add_argument("--sets", nargs="*", default=[], metavar="NAME=DIR", help="folders of OOD images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref", type=int, help="build the reference from the first N valid images")
    ap.add_argument("--iw", type=int, default=4, help="K of a reference built here")
    ap.add_argument("--prior", choices=PRIORS, default="sample", help="prior of a reference built here")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 5, 10, 19], help="ks of a reference built here")
    ap.add_argument("--save", help="write the per-image scores here (.npz)")
    ap.add_argument("--load", nargs="*", default=[], help="read scores saved by --save instead of scoring")
    ap.add_argument("--subsets", action="store_true", help="also every detector with two or more of the ks "
                    "(Bonferroni over bits/dim and each LLR>k), ranked by its smallest AUROC over the sets")
    ap.add_argument("--add-sizes", action="store_true", help="with --load: compute the codecs' sizes the saved "
                    "scores lack (and --save the scores and reference with them)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.load:
        saved = Path(args.load[0]).with_suffix(".reference.json")
        ref = Reference.read(saved)
        if ref is None:
            raise SystemExit(f"{saved}: missing (the reference the scores were tested against)")
        scores: dict[str, dict[str, np.ndarray]] = {}
        for f in args.load:
            with np.load(f) as z:
                for key in z.files:
                    name, stat = key.split("/")
                    if name == IN and IN in scores and stat in scores[IN]:
                        continue                 # the first file's held-in images
                    scores.setdefault(name, {})[stat] = z[key]
        if args.add_sizes:
            ref = add_sizes(args, ref, scores)
            if args.save:
                np.savez(args.save, **{f"{n}/{s}": v for n, d in scores.items() for s, v in d.items()})
                ref.write(Path(args.save).with_suffix(".reference.json"))
    else:
        ref = None if args.ref else Reference.read(args.weights)
        if ref is None and not args.ref:
            raise SystemExit(f"{args.weights}: no reference.json (or build one with --ref N)")
        ref, scores = score_sets(args, ref)
        if args.save:
            np.savez(args.save, **{f"{n}/{s}": v for n, d in scores.items() for s, v in d.items()})
            ref.write(Path(args.save).with_suffix(".reference.json"))
    print(f"reference: {ref.images} {ref.split} images, K = {ref.K}, prior = {ref.prior}, "
          f"held-in: {len(scores[IN]['bpd'])}")
    codecs = [c for c in CODECS if c in ref.compressed and all(f"c_{c}" in d for d in scores.values())]
    rows = table(ref, scores, detectors(ref.ks, args.subsets, codecs))
    if args.subsets:   # the rule of docs/detector.md: the largest smallest AUROC, among flag rates <= 2 alpha
        worst = lambda r: min(v for c, v in r.items() if c.startswith("det_"))  # noqa: E731
        rows.sort(key=lambda r: (r["flagged_in"] > 2 * ref.alpha, -worst(r)))
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
