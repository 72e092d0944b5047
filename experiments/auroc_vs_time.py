"""How fast LLR>k becomes useful: the OOD AUROC of every snapshot of a training run against its
training time (a run trained with --set snapshots=true keeps the weights of every validation).

For each snapshot under RUN/snapshots/<step>/ (of each RUN in turn: several runs are a warm-started
lineage, timed end to end; results cached in RUN/auroc_vs_time.json, so a rerun scores only new
ones): a reference of --ref valid images, then --n test images of the data
set and of the OOD set, all with K = --iw; the AUROC of -L>0, of LLR>k for every k, and of the
detector (bits/dim and LLR>k, two-sided, k = --detector-k) with its flag rates at alpha.
Writes the table (markdown) and a plot next to --out.

    python experiments/auroc_vs_time.py --run runs/fmnist_binary --data fashion_mnist_binary \\
        --ood mnist_binary --n 1000 --out docs/detector/fmnist_binary_auroc_vs_time --threads 1
    python experiments/auroc_vs_time.py --run runs/a runs/b --prior mode --iw 4 ...   # b warm-started from a
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from biva_core import load_pretrained
from biva_core.detect import Detector, build_reference, scores_per_image
from biva_core.data.inputs import load_images
from biva_core.eval.evaluate import auroc
from biva_core.model import PRIOR_WORDS, PRIORS
from biva_core.io.plots import line_chart


def score_snapshot(folder: Path, args) -> dict:
    model = load_pretrained(folder)
    info = model.training_info or {}
    ks = list(range(1, model.config.L))
    valid = load_images(args.data, "valid", args.data_dir, model.config, limit=args.ref)
    x_in = load_images(args.data, "test", args.data_dir, model.config, limit=args.n)
    x_ood = load_images(args.ood, "test", args.data_dir, model.config, limit=args.n)
    ref = build_reference(model, valid, ks, args.iw, k=args.detector_k, seed=1_000_000, prior=args.prior)
    s_in = scores_per_image(model, x_in, ks, args.iw, seed=0, prior=args.prior)
    s_ood = scores_per_image(model, x_ood, ks, args.iw, seed=500_000, prior=args.prior)
    row = {"step": info.get("step"), "seconds": info.get("seconds"),
           "valid_bpd": (info.get("valid") or {}).get("valid_bpd"),
           "auroc_L_gt_0": auroc(-s_in["L_gt_0"].numpy(), -s_ood["L_gt_0"].numpy())}
    for k in ks:
        row[f"auroc_LLR_{k}"] = auroc(s_in["LLR_gt_k"][k].numpy(), s_ood["LLR_gt_k"][k].numpy())
    det = Detector(ref, alpha=args.alpha)
    v_in, v_ood = det.test_scores(s_in), det.test_scores(s_ood)
    row.update({"detector_k": list(det.ks), "auroc_detector": auroc(v_in.score, v_ood.score),
                "flagged_in": float(v_in.flagged.mean()), "flagged_ood": float(v_ood.flagged.mean())})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, nargs="+", help="a run folder, or several: a lineage in the order "
                    "trained (each warm-started from the one before), timed end to end")
    ap.add_argument("--data", required=True)
    ap.add_argument("--ood", required=True)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"))
    ap.add_argument("--n", type=int, default=1000, help="test images of each set")
    ap.add_argument("--ref", type=int, default=1000, help="reference images (valid split)")
    ap.add_argument("--iw", type=int, default=1)
    ap.add_argument("--detector-k", type=int, default=1)
    ap.add_argument("--prior", choices=PRIORS, default="sample",
                    help="how L^{>k} takes z_{<=k}: a prior draw, or the prior mean")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--every", type=int, nargs="+", default=[1],
                    help="score every n-th snapshot (and the last); one value, or one per --run")
    ap.add_argument("--out", required=True, help="path stem of the .md table and .png plot")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, offset = [], 0.0   # a warm-started lineage: each run's clock starts where the previous one ended
    if len(args.every) not in (1, len(args.run)):
        ap.error("--every takes one value or one per --run")
    for i, run in enumerate(map(Path, args.run)):
        every = args.every[i if len(args.every) > 1 else 0]
        cache_path = run / "auroc_vs_time.json"
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        key = lambda name: (f"{name}|{args.data}|{args.ood}|{args.n}|{args.ref}|{args.iw}|{args.detector_k}"  # noqa: E731
                            + ("" if args.prior == "sample" else f"|{args.prior}"))
        snaps = sorted(p for p in (run / "snapshots").iterdir() if (p / "config.json").is_file())
        snaps = [p for j, p in enumerate(snaps) if j % every == 0 or j == len(snaps) - 1]
        for p in snaps:
            if key(p.name) not in cache:
                cache[key(p.name)] = score_snapshot(p, args)
                cache_path.write_text(json.dumps(cache, indent=1))
                print(json.dumps(cache[key(p.name)]), file=sys.stderr, flush=True)
        mine = sorted((cache[key(p.name)] for p in snaps), key=lambda r: r["step"])
        rows += [dict(r, run=run.name, minutes=(offset + r["seconds"]) / 60) for r in mine]
        offset += mine[-1]["seconds"]
    ks = sorted(int(c.split("_")[-1]) for c in rows[0] if c.startswith("auroc_LLR_"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{args.data} -> {args.ood}: {args.n} test images of each, reference {args.ref} valid images, "
             f"K = {args.iw}, detector k = {args.detector_k}, alpha = {args.alpha}, "
             f"z<=k of L>k {PRIOR_WORDS[args.prior]}", "",
             "| run | step | minutes | valid bits/dim | AUROC L>0 | " + " | ".join(f"LLR>{k}" for k in ks)
             + " | detector | flagged in | flagged OOD |", "|" + "---|" * (8 + len(ks))]
    for r in rows:
        lines.append(f"| {r['run']} | {r['step']} | {r['minutes']:.1f} | {r['valid_bpd']:.4f} | {r['auroc_L_gt_0']:.3f} | "
                     + " | ".join(f"{r[f'auroc_LLR_{k}']:.3f}" for k in ks)
                     + f" | {r['auroc_detector']:.3f} | {r['flagged_in']:.3f} | {r['flagged_ood']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    series = {"L>0": [(r["minutes"], r["auroc_L_gt_0"]) for r in rows]}
    series.update({f"LLR>{k}": [(r["minutes"], r[f"auroc_LLR_{k}"]) for r in rows] for k in ks})
    series["detector"] = [(r["minutes"], r["auroc_detector"]) for r in rows]
    line_chart(series, out.with_suffix(".png"), title=f"{args.data} -> {args.ood}: AUROC against training time",
               xlabel="training minutes (one CPU core)", ylabel="AUROC")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
