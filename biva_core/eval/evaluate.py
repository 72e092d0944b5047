"""`python -m biva_core.eval.evaluate` / `biva-evaluate`: bounds and out-of-distribution scores of a
pretrained folder on a data split (spec section 2).

    biva-evaluate --weights weights/binarized_mnist --data binarized_mnist --split test --iw 1000
    biva-evaluate --weights weights/fashion_mnist --data fashion_mnist --ood mnist --iw 1 --json
    biva-evaluate --weights weights/fashion_mnist --data fashion_mnist --split valid --iw 1 \\
        --limit 1000 --reference weights/fashion_mnist/reference.json

Without --ood: L_1 (one posterior sample per image) and L_K (K = --iw importance samples),
averaged over the split, in nats and bits/dim. With --ood: every image of both sets gets
L^{>0}, L^{>k} and LLR^{>k} = L^{>0} - L^{>k} for k = 1..L-1 (each importance weighted with
K samples, so L^{>0} is L_K; --prior mode takes z_{<=k} of L^{>k} at the mean of
p(z_{<=k} | z_{>k}) instead of a draw, as Havtorn 2021's released code does), and the AUROC of each score separates the in-distribution split
(negatives) from the same split of the OOD set (positives). Scores are oriented so that higher
means more anomalous: -L^{>0}, -L^{>k} and LLR^{>k}. An AUROC below 0.5 means the score ranks
the OOD set as *more* likely (FashionMNIST -> MNIST with L^{>0}: 0.268 in Havtorn et al. 2021).

Digits: a Bernoulli model reads MNIST / Fashion-MNIST binarized at > 127, as train.py does.
Randomness: batch i draws with the seed `seed + i`, so a run is reproducible. A long L_K runs in
pieces: `--skip S --limit N` takes images S..S+N-1 and draws them as the whole split does (S a
multiple of --batch-size, 64 by default), and `biva-evaluate --merge A.json B.json ...` joins the
pieces' reports into the report of all their images, the same as one run over them:

    biva-evaluate --weights weights/celeba64 --data celeba --split test --iw 1000 --limit 128 --json > a.json
    biva-evaluate --weights weights/celeba64 --data celeba --split test --iw 1000 --skip 128 --limit 128 ...
    biva-evaluate --merge a.json b.json
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from biva_core.data import DATASETS, load_labels
from biva_core.data.inputs import load_images, load_model_folder
from biva_core.io.checkpoint import CheckpointError, load_pretrained
from biva_core.model.bounds import bits_per_dim
from biva_core.detect import (ALPHA, CODECS, COMBINES, REFERENCE_FILE, Detector, Reference, as_codecs, as_ks, batches,
                       build_reference, reference_from_scores, scores_per_image)
from biva_core.model import BIVA, PRIOR_WORDS, PRIORS
from biva_core.train.semisupervised import error_rate


# ---------------------------------------------------------------- AUROC

def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of a score (higher = positive), with ties counted as 1/2:

        AUROC = P(s_pos > s_neg) + P(s_pos = s_neg) / 2 = U / (n_pos n_neg),

    the Mann-Whitney U statistic from mid-ranks of the pooled scores. NaN scores raise."""
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    pos = np.asarray(positives, dtype=np.float64).ravel()
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError(f"auroc needs both classes, got {len(neg)} negatives and {len(pos)} positives")
    both = np.concatenate([neg, pos])
    if np.isnan(both).any():
        raise ValueError("auroc: scores contain NaN")
    order = np.argsort(both, kind="mergesort")
    sorted_scores = both[order]
    # mid-ranks (1-based): a run of equal scores at sorted positions a..b-1 all get (a + b + 1) / 2
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(both)]
    ranks = np.empty(len(both))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    u = ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


# ---------------------------------------------------------------- per-image quantities

def bounds_per_image(model: BIVA, images: Tensor, K: int, *, batch_size: int = 64, chunk: int = 256,
                     seed: int = 0, progress: bool = False) -> dict[str, Tensor]:
    """L_1 (one posterior sample) and L_K (K importance samples, chunked) per image, nats: (N,);
    and "kl", each latent's KL term of L_1 per image: (N, latents)."""
    l1, lk, kl = [], [], []
    for i, x in batches(images, batch_size, f"L_1, L_{K}", progress):
        e = model.elbo(x, seed=seed + i)
        l1.append(e["elbo"].float().cpu())
        kl.append(e["kl"].float().cpu())
        # K = 1 with the same seed draws the same z as the ELBO: L_1 itself
        lk.append(l1[-1] if K == 1 else model.iw_bound(x, K, chunk=chunk, seed=seed + i).float().cpu())
    return {"L_1": torch.cat(l1), "L_K": torch.cat(lk), "kl": torch.cat(kl)}


# ---------------------------------------------------------------- summaries

def _mean(values: Tensor, dims: int) -> dict:
    v = values.double()
    n = len(v)
    sem = float(v.std() / math.sqrt(n)) if n > 1 else float("nan")
    m = float(v.mean())
    return {"nats": m, "bits_per_dim": float(bits_per_dim(m, dims)), "stderr_nats": sem}


def merge_reports(reports: list[dict]) -> dict:
    """The bound report of all the images of several pieces of one split (`--skip`, `--limit`):
    L_1 and L_K as one run over them gives them (each mean and its standard error from the
    pieces' counts, means and standard errors), the KL per latent weighted by images. The pieces
    must share the weights, data, split, K and prior and hold no image twice."""
    if not reports:
        raise SystemExit("--merge: no reports")
    same = ("weights", "data", "split", "K", "prior")
    first = reports[0]
    for r in reports:
        if "ood" in r or "L_K" not in r:
            raise SystemExit("--merge: only the bound reports of biva-evaluate --json (no --ood) merge")
        if any(r.get(k) != first.get(k) for k in same):
            raise SystemExit(f"--merge: the pieces differ in {[k for k in same if r.get(k) != first.get(k)]}")
    pieces = sorted((r.get("skip", 0), r.get("skip", 0) + r["images"]) for r in reports)
    if any(b0 < a1 for (_, a1), (b0, _) in zip(pieces, pieces[1:])):
        raise SystemExit(f"--merge: the pieces overlap: images {pieces}")
    n = sum(r["images"] for r in reports)
    out = {**{k: first[k] for k in same}, "images": n, "pieces": [list(p) for p in pieces]}
    for key in ("L_1", "L_K"):
        total = sum(r["images"] * r[key]["nats"] for r in reports)
        # each piece's sum of squares from its mean and (ddof 1) standard error
        squares = sum((r["images"] - 1) * r["images"] * (r[key]["stderr_nats"] if r["images"] > 1 else 0.0) ** 2
                      + r["images"] * r[key]["nats"] ** 2 for r in reports)
        m = total / n
        var = (squares - n * m * m) / (n - 1) if n > 1 else float("nan")
        out[key] = {"nats": m, "bits_per_dim": sum(r["images"] * r[key]["bits_per_dim"] for r in reports) / n,
                    "stderr_nats": math.sqrt(max(var, 0.0) / n) if n > 1 else float("nan")}
    if all("kl_per_latent" in r for r in reports):
        kl = {name: sum(r["images"] * r["kl_per_latent"][name] for r in reports) / n for name in first["kl_per_latent"]}
        out["kl_per_latent"], out["latents_above_0.1_nats"] = kl, sum(v > 0.1 for v in kl.values())
    return out


def ood_aurocs(in_scores: dict, ood_scores: dict) -> dict:
    """AUROC of -L^{>0}, -L^{>k} and LLR^{>k} (in-distribution = negative, OOD = positive)."""
    neg = lambda t: (-t).numpy()  # noqa: E731  lower likelihood = more anomalous
    result = {"L_gt_0": auroc(neg(in_scores["L_gt_0"]), neg(ood_scores["L_gt_0"])),
              "L_gt_k": {str(k): auroc(neg(v), neg(ood_scores["L_gt_k"][k])) for k, v in in_scores["L_gt_k"].items()},
              "LLR_gt_k": {str(k): auroc(v.numpy(), ood_scores["LLR_gt_k"][k].numpy())
                           for k, v in in_scores["LLR_gt_k"].items()}}
    if result["LLR_gt_k"]:
        k, a = max(result["LLR_gt_k"].items(), key=lambda kv: kv[1])
        result["best_LLR"] = {"k": int(k), "auroc": a}
    return result


def format_table(report: dict) -> str:
    if len(report.get("ood_sets", {})) > 1:  # one table per OOD set
        return "\n\n".join(format_table({**{k: v for k, v in report.items() if k != "ood_sets"}, **one})
                             for one in report["ood_sets"].values())
    lines = [f"{report['weights']} on {report['data']} {report['split']} ({report['images']} images, K={report['K']}, "
             f"L^{{>k}} with z_<=k {PRIOR_WORDS[report.get('prior', 'sample')]})"]
    if "error" in report:
        lines.append(f"  classification error (argmax q(y | x)): {100 * report['error']:.2f}%")
    for name in ("L_1", "L_K"):
        r = report[name]
        lines.append(f"  {name:<4} {r['nats']:12.3f} nats  {r['bits_per_dim']:8.4f} bits/dim  (± {r['stderr_nats']:.3f})")
    if "kl_per_latent" in report:
        lines.append(f"  {report['latents_above_0.1_nats']} of {len(report['kl_per_latent'])} latents carry "
                     "more than 0.1 nats of KL (mean over the images, in L_1)")
    if "ood" in report:
        o, a = report["ood"], report["ood"]["auroc"]
        lines.append(f"OOD {o['data']} {report['split']} ({o['images']} images): "
                     f"L_K {o['L_K']['nats']:.3f} nats, {o['L_K']['bits_per_dim']:.4f} bits/dim")
        lines.append(f"  {'k':>3}  {'AUROC -L>k':>11}  {'AUROC LLR>k':>12}")
        lines.append(f"  {0:>3}  {a['L_gt_0']:11.4f}  {'':>12}")
        for k in a["L_gt_k"]:
            lines.append(f"  {k:>3}  {a['L_gt_k'][k]:11.4f}  {a['LLR_gt_k'][k]:12.4f}")
    if "detector" in report:
        d = report["detector"]
        also = "".join(f", bits/dim - {c} bits/dim" for c in d.get("complexity") or ())
        how = "joint density" if d.get("combine") == "density" else "Bonferroni"
        lines.append(f"detector (bits/dim, LLR>{ks_words(d['k'])}{also}; two-sided, {how}, K={d['K']}, prior={d['prior']}, "
                     f"alpha={d['alpha']:g}; reference: "
                     f"{d['reference']}): AUROC {d['auroc']:.4f}, flagged {100 * d['flagged_in']:.1f}% of "
                     f"{report['data']}, {100 * d['flagged_ood']:.1f}% of {report['ood']['data']}")
    return "\n".join(lines)


def csv_rows(report: dict) -> list[tuple[str, str, float]]:
    """(quantity, k, value) rows: the bounds and every AUROC."""
    rows = [(f"{n}_{u}", "", report[n][u]) for n in ("L_1", "L_K") for u in ("nats", "bits_per_dim")]
    if "error" in report:
        rows.append(("error", "", report["error"]))
    if "ood" in report:
        a = report["ood"]["auroc"]
        rows += [(f"ood_L_K_{u}", "", report["ood"]["L_K"][u]) for u in ("nats", "bits_per_dim")]
        rows.append(("auroc_L_gt_k", "0", a["L_gt_0"]))
        rows += [("auroc_L_gt_k", k, v) for k, v in a["L_gt_k"].items()]
        rows += [("auroc_LLR_gt_k", k, v) for k, v in a["LLR_gt_k"].items()]
    if "detector" in report:
        d = report["detector"]
        rows += [(f"detector_{q}", ks_words(d["k"]), d[q]) for q in ("auroc", "flagged_in", "flagged_ood")]
    return rows


def codecs_of(args) -> tuple[str, ...] | None:
    """--complexity as codecs (None: not given, the reference's default; (): off)."""
    return None if args.complexity is None else as_codecs(args.complexity)


def ks_words(k) -> str:
    """The detector's k as written in the report: "19", or "1,19" for several."""
    return ",".join(map(str, k)) if isinstance(k, (list, tuple)) else str(k)


def classification_error(model: BIVA, x: Tensor, args) -> float:
    """The fraction of the split misclassified by argmax q(y | x) (a model with classes)."""
    if not model.config.classes:
        raise SystemExit("--classify needs a model with classes (config \"classes\" > 0); this one has none")
    try:
        labels = load_labels(args.data, args.split, args.data_dir)[:len(x)]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"data: --classify needs the split's labels: {e}") from None
    return error_rate(model, x, labels, batch=4 * args.batch_size)


def detector_reference(model: BIVA, args, ks: list[int], K: int, log) -> tuple[Reference, str]:
    """The weights' reference.json when it was made with K and holds the detector's ks; else one
    built now from the first --reference-images images of the valid split (and said so)."""
    ref = Reference.read(args.weights)
    k = as_ks(args.detector_k)
    lacking = [c for c in codecs_of(args) or () if ref is not None and c not in ref.compressed]
    if ref is not None and ref.K == K and ref.prior == args.prior and set(k or ()) <= set(ref.llr) and not lacking:
        return ref, f"{args.weights}/{REFERENCE_FILE}"
    why = ("there is none" if ref is None else f"it was made with K={ref.K}" if ref.K != K
           else f"it was made with prior={ref.prior}" if ref.prior != args.prior
           else f"it has no {', '.join(lacking)} sizes" if lacking else f"it has no LLR>{list(k)}")
    valid = load_images(args.data, "valid", args.data_dir, model.config, limit=args.reference_images)
    log(f"detector: building a reference from {len(valid)} {args.data} valid images with K={K}, prior={args.prior} "
        f"({REFERENCE_FILE} of the weights not used: {why})")
    default_k = k or (ref.default_ks if ref is not None and set(ref.default_ks) <= set(ks) else (ks[0],))
    ref = build_reference(model, valid, sorted(set(ks) | set(default_k)), K, k=default_k, split="valid",
                          seed=args.seed + 1_000_000, batch_size=args.batch_size, chunk=args.chunk,
                          progress=not args.no_progress, prior=args.prior,
                          complexity=ref.complexity if ref is not None else None,
                          combine=ref.combine if ref is not None else "bonferroni",
                          note=f"first {len(valid)} images of the {args.data} valid split (built by biva-evaluate)")
    return ref, f"built from {len(valid)} {args.data} valid images"


def detector_report(det: Detector, s_in: dict, s_ood: dict, source: str) -> dict:
    v_in, v_ood = det.test_scores(s_in), det.test_scores(s_ood)
    one = len(det.ks) == 1   # one k: the spec's detector, reported as before; several: per k
    llr = {str(k): auroc(-np.log10(v_in.p_llr[k]), -np.log10(v_ood.p_llr[k])) for k in det.ks}
    return {"k": det.ks[0] if one else list(det.ks), "K": det.ref.K, "prior": det.ref.prior, "alpha": det.alpha, "reference": source,
            "reference_images": det.ref.images,
            "auroc": auroc(v_in.score, v_ood.score),
            "flagged_in": float(v_in.flagged.mean()), "flagged_ood": float(v_ood.flagged.mean()),
            "auroc_bpd_two_sided": auroc(-np.log10(v_in.p_bpd), -np.log10(v_ood.p_bpd)),
            "auroc_llr_two_sided": llr[str(det.ks[0])] if one else llr,
            "complexity": list(det.codecs) or None, "combine": det.combine,
            **({"auroc_complexity_two_sided": {c: auroc(-np.log10(v_in.p_cc[c]), -np.log10(v_ood.p_cc[c]))
                                               for c in det.codecs}} if det.complexity else {})}


# ---------------------------------------------------------------- CLI

def run(argv: list[str] | None = None) -> dict:
    """Parse the command line, evaluate, print (table or --json) and return the report."""
    ap = argparse.ArgumentParser(prog="biva-evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="a pretrained folder (config.json + safetensors)")
    ap.add_argument("--data", choices=DATASETS)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"), help="default: $BIVA_DATA")
    ap.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--iw", type=int, metavar="K", help="importance samples of L_K and the scores (default: "
                    "with --ood the K of the weights' reference.json, else 1000)")
    ap.add_argument("--ood", nargs="+", choices=DATASETS, metavar="DATASET",
                    help="score this data set's same split as out-of-distribution (folder: every image under "
                    "--ood-dir); several sets share one scoring of the in-distribution split")
    ap.add_argument("--ood-dir", nargs="+", default=[], help="one folder of images for each `folder` in --ood "
                    "(any size; prepared as the studio prepares uploads)")
    ap.add_argument("--ood-limit", type=int, help="use the first N images of each OOD set (default: --limit)")
    ap.add_argument("--ks", type=int, nargs="*", help="the k of L^{>k} and LLR^{>k} (default: with --ood the ks "
                    "of the weights' reference.json when it fits K and the prior, else 1..L-1)")
    ap.add_argument("--alpha", type=float, help=f"the detector's flag level (default: the reference's, {ALPHA})")
    ap.add_argument("--detector-k", type=int, nargs="+", help="the detector's k, or several (Bonferroni over bits/dim "
                    "and each LLR>k; default: the reference's)")
    ap.add_argument("--complexity", nargs="+", choices=[*CODECS, "off"], help="the detector also tests bits/dim - "
                    "this lossless codec's bits/dim (the image's complexity taken out; several: one statistic each), "
                    "or not (off); default: the reference's")
    ap.add_argument("--combine", choices=COMBINES, help="how the detector combines its statistics: bonferroni (the "
                    "spec's) or density (the reference's joint kernel density; docs/detector.md); default: the "
                    "reference's")
    ap.add_argument("--prior", choices=PRIORS, help="how L^{>k} takes z_{<=k}: a draw from p(z_{<=k} | z_{>k}) "
                    "(sample: the spec's bound) or its mean (mode: Havtorn 2021's released code, the detector's "
                    "statistic where docs/detector.md says so); default: the weights' reference's, else sample")
    ap.add_argument("--reference-images", type=int, default=1000,
                    help="valid images of a reference built when the weights' one does not fit (default 1000)")
    ap.add_argument("--limit", type=int, help="use the first N images of each split")
    ap.add_argument("--skip", type=int, default=0, help="bounds only: leave out the first S images of the split "
                    "(a piece of a long L_K), a multiple of --batch-size: they are drawn as the whole split draws them")
    ap.add_argument("--merge", nargs="+", metavar="REPORT.json", help="join the --json bound reports of pieces "
                    "of one split (--skip, --limit) into one report, and print it; nothing else runs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256, help="rows (images x samples) per forward pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ap.add_argument("--csv", help="write (quantity, k, value) rows to this file")
    ap.add_argument("--reference", metavar="OUT.json", help="also write the detector's reference (reference.json) "
                    "of the split, for the ks and with K = --iw")
    ap.add_argument("--classify", action="store_true", help="a model with classes: also the error of argmax "
                    "q(y | x) against the split's labels (\"error\" in the JSON)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.merge:
        report = merge_reports([json.loads(Path(f).read_text()) for f in args.merge])
        print(json.dumps(report, indent=1) if args.json else format_table(report))
        return report
    if args.weights is None or args.data is None:
        ap.error("--weights and --data are required (or --merge)")
    if args.skip and (args.ood or args.reference or args.classify):
        ap.error("--skip is for the bounds alone, not with --ood, --reference or --classify")
    if args.skip < 0 or args.skip % args.batch_size:
        ap.error(f"--skip must be a multiple of --batch-size ({args.batch_size}): batch i draws with seed + i")
    if args.iw is not None and args.iw < 1:
        ap.error("--iw must be >= 1")
    if (args.ood or []).count("folder") != len(args.ood_dir):
        ap.error("--ood folder and --ood-dir DIR go together: one folder for each `folder` in --ood")
    if args.alpha is not None and not 0 < args.alpha < 1:
        ap.error("--alpha must be in (0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required when $BIVA_DATA is not set")
    progress = not args.no_progress
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    t0 = time.time()
    try:
        model = load_pretrained(args.weights, device=args.device)
    except CheckpointError as e:
        raise SystemExit(f"weights: {e}") from None
    try:
        existing = Reference.read(args.weights)
    except ValueError:
        existing = None   # detector_reference says what is wrong with it, if it is needed
    if args.prior is None:
        args.prior = existing.prior if existing is not None else "sample"
    if args.iw is None:   # the detector's scores are only comparable with its reference's K
        args.iw = (existing.K if existing is not None else 1) if args.ood else 1000
    fits = existing is not None and existing.K == args.iw and existing.prior == args.prior
    L = model.config.L
    ks = sorted(set(args.ks)) if args.ks else (existing.ks if args.ood and fits else list(range(1, L)))
    if any(not 1 <= k < L for k in ks + (args.detector_k or [])):
        ap.error(f"--ks and --detector-k must lie in 1..{L - 1} for this model (L = {L})")
    oods: list[tuple[str, Tensor, list[str]]] = []   # (name, images, skipped files)
    try:
        x = load_images(args.data, args.split, args.data_dir, model.config, limit=args.limit, skip=args.skip)
        dirs = iter(args.ood_dir)
        for name in args.ood or []:
            limit = args.ood_limit or args.limit
            if name == "folder":
                folder = next(dirs)
                x_ood, skipped = load_model_folder(folder, model.config, model.training_info, args.weights,
                                                   limit=limit, progress=progress)
                oods.append((f"folder {folder}", x_ood, skipped))
            else:
                oods.append((name, load_images(name, args.split, args.data_dir, model.config, limit=limit), []))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"data: {e}") from None
    if len(x) == 0:
        raise SystemExit(f"data: the {args.split} split of {args.data} is empty")
    dims, K = model.config.dims, args.iw
    kw = dict(batch_size=args.batch_size, chunk=args.chunk, seed=args.seed, progress=progress)
    report = {"weights": str(args.weights), "data": args.data, "split": args.split, "images": len(x), "K": K,
              "prior": args.prior}
    if args.skip:
        report["skip"] = args.skip      # these are images skip .. skip + images - 1 of the split
        kw["seed"] = args.seed + args.skip // args.batch_size   # those images' draws in a run over the whole split
    sw = dict(kw, prior=args.prior)   # the keywords of the scores
    if args.classify:
        report["error"] = classification_error(model, x, args)
    ref_scores = None
    if not oods and args.reference:  # the reference's scores hold L_1 and L_K: one pass over the split
        ref_scores = scores_per_image(model, x, sorted(set(ks) | set(args.detector_k or ())), K,
                                      desc="reference", **sw)
        report.update({"L_1": _mean(ref_scores["L_1"], dims), "L_K": _mean(ref_scores["L_gt_0"], dims)})
    elif not oods:
        b = bounds_per_image(model, x, K, **kw)
        report.update({"L_1": _mean(b["L_1"], dims), "L_K": _mean(b["L_K"], dims)})
        kl = b["kl"].double().mean(0)
        report["kl_per_latent"] = dict(zip(model.latent_names(), kl.tolist()))
        report["latents_above_0.1_nats"] = int((kl > 0.1).sum())
    else:
        ref, source = detector_reference(model, args, ks, K, log)
        det = Detector(ref, k=args.detector_k, alpha=args.alpha,
                       complexity=codecs_of(args), combine=args.combine)
        ks_all = sorted(set(ks) | set(det.ks))
        s_in = scores_per_image(model, x, ks_all, K, desc=f"{args.data} scores", **sw)
        report.update({"L_1": _mean(s_in["L_1"], dims), "L_K": _mean(s_in["L_gt_0"], dims)})
        in_ks = {**s_in, "L_gt_k": {k: s_in["L_gt_k"][k] for k in ks}, "LLR_gt_k": {k: s_in["LLR_gt_k"][k] for k in ks}}
        sets = {}
        for i, (name, x_ood, skipped) in enumerate(oods):
            # each OOD set draws with other seeds than the in-distribution one
            s_ood = scores_per_image(model, x_ood, ks_all, K, desc=f"{name} scores",
                                     **{**sw, "seed": args.seed + 500_000 * (i + 1)})
            sets[name] = {"ood": {"data": name, "images": len(x_ood), "skipped": len(skipped),
                                  "L_1": _mean(s_ood["L_1"], dims), "L_K": _mean(s_ood["L_gt_0"], dims),
                                  "auroc": ood_aurocs(in_ks, s_ood)},
                          "detector": detector_report(det, s_in, s_ood, source)}
            if args.split == ref.split and source.endswith(REFERENCE_FILE):
                sets[name]["detector"]["note"] = ("the evaluated split is the reference's own split: the "
                                                  "in-distribution flag rate is measured on (partly) the same images")
        first = next(iter(sets.values()))
        report["ood"], report["detector"] = first["ood"], first["detector"]
        if len(sets) > 1:
            report["ood_sets"] = sets
    if args.reference:
        note = f"first {len(x)} images of the {args.data} {args.split} split"
        if ref_scores is not None:
            ref = reference_from_scores(ref_scores, K, k=args.detector_k, alpha=args.alpha or ALPHA,
                                        split=args.split, seed=args.seed, note=note, prior=args.prior,
                                        complexity=codecs_of(args), combine=args.combine or "bonferroni")
        else:
            ref = build_reference(model, x, ks, K, k=args.detector_k, alpha=args.alpha or ALPHA, split=args.split,
                                  seed=args.seed, batch_size=args.batch_size, chunk=args.chunk, progress=progress,
                                  note=note, prior=args.prior, complexity=codecs_of(args), combine=args.combine or "bonferroni")
        report["reference"] = str(ref.write(Path(args.reference)))
    report["seconds"] = round(time.time() - t0, 1)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["quantity", "k", "value"])
            w.writerows(csv_rows(report))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_table(report))
    return report


def main(argv: list[str] | None = None) -> None:
    run(argv)  # a console script's return value becomes the exit status: return nothing


if __name__ == "__main__":
    main()
