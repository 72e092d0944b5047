"""Choose the detector's K and k by measurement (issue: verdicts that do not flip with the seed).

For each K: a reference of --ref valid images (their scores for every k in --ks), then
  - seed spread: --spread other valid images scored with --seeds seeds each; per image the spread
    (max - min over seeds) of the combined p-value and of -log10 p, and the share of images whose
    verdict at alpha differs between seeds;
  - AUROC of the detector (and of LLR>k alone, two-sided) for each k: the --spread images against
    each OOD set (--ood-sets: data sets, or "upside_down" = the valid images turned upside down,
    "noise" = uniform noise, "flat" = flat colours, "folder:DIR" = the images of a folder), first seed;
  - seconds per image for scores with all ks (this thread count).
One table (markdown) on stdout and the rows as JSON with --json.

    python experiments/detector_choice.py --weights weights/celeba64 --data celeba --Ks 1 4 \\
        --ks 1 2 3 5 8 12 19 --ood-sets upside_down mnist --threads 1 [--priors sample mode]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from biva_core import load_pretrained
from biva_core.detect import Detector, build_reference, scores_per_image
from biva_core.data.inputs import load_images, load_model_folder
from biva_core.eval.evaluate import auroc
from biva_core.model import PRIORS


def synthetic(kind: str, like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "upside_down":
        return like.flip(-2)
    if kind == "noise":
        return torch.randint(0, 256, like.shape, generator=g).float() / 255
    if kind == "flat":
        return (torch.randint(0, 256, (len(like), like.shape[1], 1, 1), generator=g).float() / 255).expand_as(like).clone()
    raise ValueError(kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"))
    ap.add_argument("--Ks", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--priors", nargs="+", default=["sample"], choices=PRIORS,
                    help="how L^{>k} takes z_{<=k}: a prior draw, or the prior mean")
    ap.add_argument("--ks", type=int, nargs="+")
    ap.add_argument("--ref", type=int, default=300, help="reference images (valid split)")
    ap.add_argument("--spread", type=int, default=50, help="valid images scored with several seeds")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--ood-sets", nargs="*", default=["upside_down", "noise"])
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights)
    L = model.config.L
    ks = args.ks or list(range(1, L))
    valid = load_images(args.data, "valid", args.data_dir, model.config, limit=args.ref + args.spread)
    ref_x, test_x = valid[:args.ref], valid[args.ref:]
    oods = {}
    for name in args.ood_sets:
        if name in ("upside_down", "noise", "flat"):
            oods[name] = synthetic(name, test_x)
        elif name.startswith("folder:"):   # any folder of images, prepared as biva-evaluate --ood folder does
            oods[name] = load_model_folder(name[len("folder:"):], model.config, model.training_info, args.weights,
                                           limit=len(test_x))[0]
        else:
            oods[name] = load_images(name, "valid", args.data_dir, model.config, limit=len(test_x))
    rows = []
    for prior, K in [(prior, K) for prior in args.priors for K in args.Ks]:
        kw = dict(batch_size=args.batch_size, prior=prior)
        t0 = time.time()
        ref = build_reference(model, ref_x, ks, K, seed=1_000, **kw)
        t_ref = (time.time() - t0) / len(ref_x)
        per_seed = [scores_per_image(model, test_x, ks, K, seed=2_000 + 100 * s, **kw) for s in range(args.seeds)]
        ood_scores = {n: scores_per_image(model, x, ks, K, seed=3_000, **kw) for n, x in oods.items()}
        for k in ks:
            det = Detector(ref, k=k, alpha=args.alpha)
            vs = [det.test_scores(s) for s in per_seed]
            p = np.stack([v.p for v in vs])                      # (seeds, images)
            flags = np.stack([v.flagged for v in vs])
            row = {"prior": prior, "K": K, "k": k, "sec_per_image": round(t_ref, 3),
                   "p_spread_median": float(np.median(p.max(0) - p.min(0))),
                   "log10p_spread_median": float(np.median((-np.log10(p)).max(0) - (-np.log10(p)).min(0))),
                   "verdict_flips": float((flags.any(0) & ~flags.all(0)).mean()),
                   "flagged_in": float(flags.mean())}
            for n, s in ood_scores.items():
                v = det.test_scores(s)
                row[f"auroc_{n}"] = auroc(vs[0].score, v.score)
                row[f"auroc_llr_{n}"] = auroc(-np.log10(vs[0].p_llr[k]), -np.log10(v.p_llr[k]))
                row[f"flagged_{n}"] = float(v.flagged.mean())
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
