"""`python -m biva_core.evaluate` / `biva-evaluate`: bounds and out-of-distribution scores of a
pretrained folder on a data split (spec section 2).

    biva-evaluate --weights weights/binarized_mnist --data binarized_mnist --split test --iw 1000
    biva-evaluate --weights weights/fashion_mnist --data fashion_mnist --ood mnist --iw 1 --json
    biva-evaluate --weights weights/fashion_mnist --data fashion_mnist --split valid --iw 1 \\
        --limit 1000 --reference weights/fashion_mnist/reference.json

Without --ood: L_1 (one posterior sample per image) and L_K (K = --iw importance samples),
averaged over the split, in nats and bits/dim. With --ood: every image of both sets gets
L^{>0}, L^{>k} and LLR^{>k} = L^{>0} - L^{>k} for k = 1..L-1 (each importance weighted with
K samples, so L^{>0} is L_K), and the AUROC of each score separates the in-distribution split
(negatives) from the same split of the OOD set (positives). Scores are oriented so that higher
means more anomalous: -L^{>0}, -L^{>k} and LLR^{>k}. An AUROC below 0.5 means the score ranks
the OOD set as *more* likely (FashionMNIST -> MNIST with L^{>0}: 0.268 in Havtorn et al. 2021).

Digits: a Bernoulli model reads MNIST / Fashion-MNIST binarized at > 127, as train.py does.
Randomness: batch i draws with the seed `seed + i`, so a run is reproducible.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import Tensor

from .bounds import bits_per_dim
from .model import BIVA

REFERENCE_VERSION = 1


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

def _batches(images: Tensor, batch_size: int, desc: str, progress: bool):
    from tqdm import tqdm
    starts = range(0, len(images), batch_size)
    for i, s in enumerate(tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)):
        yield i, images[s:s + batch_size]


def bounds_per_image(model: BIVA, images: Tensor, K: int, *, batch_size: int = 64, chunk: int = 256,
                     seed: int = 0, progress: bool = False) -> dict[str, Tensor]:
    """L_1 (one posterior sample) and L_K (K importance samples, chunked) per image, nats: (N,);
    and "kl", each latent's KL term of L_1 per image: (N, latents)."""
    l1, lk, kl = [], [], []
    for i, x in _batches(images, batch_size, f"L_1, L_{K}", progress):
        e = model.elbo(x, seed=seed + i)
        l1.append(e["elbo"].float().cpu())
        kl.append(e["kl"].float().cpu())
        # K = 1 with the same seed draws the same z as the ELBO: L_1 itself
        lk.append(l1[-1] if K == 1 else model.iw_bound(x, K, chunk=chunk, seed=seed + i).float().cpu())
    return {"L_1": torch.cat(l1), "L_K": torch.cat(lk), "kl": torch.cat(kl)}


def scores_per_image(model: BIVA, images: Tensor, ks: list[int], K: int, *, batch_size: int = 64,
                     chunk: int = 256, seed: int = 0, progress: bool = False, desc: str = "scores") -> dict:
    """Per image (nats): L^{>0} (= L_K), L^{>k} and LLR^{>k} for k in ks, bits/dim of L^{>0}, and
    the single-sample ELBO L_1."""
    l1, l0, bpd = [], [], []
    lk: dict[int, list[Tensor]] = {k: [] for k in ks}
    llr: dict[int, list[Tensor]] = {k: [] for k in ks}
    for i, x in _batches(images, batch_size, desc, progress):
        s = model.scores(x, ks, K=K, chunk=chunk, seed=seed + i)
        l0.append(s.l0.float().cpu())
        # K = 1: L^{>0} drew the same z as the ELBO with this seed
        l1.append(l0[-1] if K == 1 else model.elbo(x, seed=seed + i)["elbo"].float().cpu())
        bpd.append(s.bpd.float().cpu())
        for k in ks:
            lk[k].append(s.lk[k].float().cpu())
            llr[k].append(s.llr[k].float().cpu())
    return {"L_1": torch.cat(l1), "L_gt_0": torch.cat(l0), "bpd": torch.cat(bpd),
            "L_gt_k": {k: torch.cat(v) for k, v in lk.items()},
            "LLR_gt_k": {k: torch.cat(v) for k, v in llr.items()}}


def reference_stats(model: BIVA, images: Tensor, ks: list[int], K: int, *, split: str = "valid",
                    batch_size: int = 64, seed: int = 0, progress: bool = False,
                    note: str | None = None) -> dict:
    """The studio's reference.json: per-image L^{>0}, L^{>k}, LLR^{>k} (nats, K importance
    samples) and bits/dim over `images` (float (N, C, H, W) in [0, 1], e.g. the valid split), so
    the studio can place one image's scores among the data set's."""
    s = scores_per_image(model, images, ks, K, batch_size=batch_size, seed=seed, progress=progress,
                         desc="reference")
    out = {"format_version": REFERENCE_VERSION, "split": split, "images": len(images), "K": int(K)}
    if note:
        out["note"] = note
    out.update({"L_gt_0": s["L_gt_0"].tolist(),
                "L_gt_k": {str(k): v.tolist() for k, v in s["L_gt_k"].items()},
                "LLR_gt_k": {str(k): v.tolist() for k, v in s["LLR_gt_k"].items()},
                "bpd": s["bpd"].double().tolist()})
    return out


# ---------------------------------------------------------------- summaries

def _mean(values: Tensor, dims: int) -> dict:
    v = values.double()
    n = len(v)
    sem = float(v.std() / math.sqrt(n)) if n > 1 else float("nan")
    m = float(v.mean())
    return {"nats": m, "bits_per_dim": float(bits_per_dim(m, dims)), "stderr_nats": sem}


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
    lines = [f"{report['weights']} on {report['data']} {report['split']} ({report['images']} images, K={report['K']})"]
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
    return "\n".join(lines)


def csv_rows(report: dict) -> list[tuple[str, str, float]]:
    """(quantity, k, value) rows: the bounds and every AUROC."""
    rows = [(f"{n}_{u}", "", report[n][u]) for n in ("L_1", "L_K") for u in ("nats", "bits_per_dim")]
    if "ood" in report:
        a = report["ood"]["auroc"]
        rows += [(f"ood_L_K_{u}", "", report["ood"]["L_K"][u]) for u in ("nats", "bits_per_dim")]
        rows.append(("auroc_L_gt_k", "0", a["L_gt_0"]))
        rows += [("auroc_L_gt_k", k, v) for k, v in a["L_gt_k"].items()]
        rows += [("auroc_LLR_gt_k", k, v) for k, v in a["LLR_gt_k"].items()]
    return rows


# ---------------------------------------------------------------- data

def load_images(dataset: str, split: str, data_dir: str | None, model: BIVA, *, limit: int | None = None) -> Tensor:
    """A split as float (N, C, H, W) in [0, 1], in the form the model was trained on."""
    from .data import load_split
    from .train_cli import DIGITS
    cfg = model.config
    arr = load_split(dataset, split, data_dir, image_size=cfg.image_shape[1], progress=False)
    if limit:
        arr = arr[:limit]
    if tuple(arr.shape[1:]) != cfg.image_shape:
        raise ValueError(f"{dataset} images are {tuple(arr.shape[1:])}, the model expects {cfg.image_shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr))
    if dataset == "binarized_mnist":
        return x.float()                                   # already {0, 1}
    if cfg.likelihood == "bernoulli" and dataset in DIGITS:
        return (x > 127).float()                           # as train.py binarizes MNIST
    return x.float() / 255


# ---------------------------------------------------------------- CLI

def run(argv: list[str] | None = None) -> dict:
    """Parse the command line, evaluate, print (table or --json) and return the report."""
    from .checkpoint import CheckpointError, load_pretrained
    from .data import DATASETS
    ap = argparse.ArgumentParser(prog="biva-evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a pretrained folder (config.json + safetensors)")
    ap.add_argument("--data", required=True, choices=DATASETS)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"), help="default: $BIVA_DATA")
    ap.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--iw", type=int, default=1000, metavar="K", help="importance samples of L_K and the scores")
    ap.add_argument("--ood", choices=DATASETS, help="score this data set's same split as out-of-distribution")
    ap.add_argument("--limit", type=int, help="use the first N images of each split")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256, help="rows (images x samples) per forward pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ap.add_argument("--csv", help="write (quantity, k, value) rows to this file")
    ap.add_argument("--reference", metavar="OUT.json", help="also write the studio's reference statistics of the split")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.iw < 1:
        ap.error("--iw must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required when $BIVA_DATA is not set")
    progress = not args.no_progress
    t0 = time.time()
    try:
        model = load_pretrained(args.weights, device=args.device)
    except CheckpointError as e:
        raise SystemExit(f"weights: {e}") from None
    try:
        x = load_images(args.data, args.split, args.data_dir, model, limit=args.limit)
        x_ood = load_images(args.ood, args.split, args.data_dir, model, limit=args.limit) if args.ood else None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"data: {e}") from None
    if len(x) == 0:
        raise SystemExit(f"data: the {args.split} split of {args.data} is empty")
    dims, K = model.config.dims, args.iw
    ks = list(range(1, model.config.L))
    kw = dict(batch_size=args.batch_size, chunk=args.chunk, seed=args.seed, progress=progress)
    report = {"weights": str(args.weights), "data": args.data, "split": args.split, "images": len(x), "K": K}
    if x_ood is None:
        b = bounds_per_image(model, x, K, **kw)
        report.update({"L_1": _mean(b["L_1"], dims), "L_K": _mean(b["L_K"], dims)})
        kl = b["kl"].double().mean(0)
        report["kl_per_latent"] = dict(zip(model.latent_names(), kl.tolist()))
        report["latents_above_0.1_nats"] = int((kl > 0.1).sum())
    else:
        s_in = scores_per_image(model, x, ks, K, desc=f"{args.data} scores", **kw)
        s_ood = scores_per_image(model, x_ood, ks, K, desc=f"{args.ood} scores", **kw)
        report.update({"L_1": _mean(s_in["L_1"], dims), "L_K": _mean(s_in["L_gt_0"], dims)})
        report["ood"] = {"data": args.ood, "images": len(x_ood), "L_1": _mean(s_ood["L_1"], dims),
                         "L_K": _mean(s_ood["L_gt_0"], dims), "auroc": ood_aurocs(s_in, s_ood)}
    if args.reference:
        from .checkpoint import _atomic_write
        from pathlib import Path
        ref = reference_stats(model, x, ks, K, split=args.split, batch_size=args.batch_size, seed=args.seed,
                              progress=progress, note=f"first {len(x)} images of the {args.data} {args.split} split")
        path = Path(args.reference)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda p: Path(p).write_text(json.dumps(ref)))
        report["reference"] = str(path)
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
