"""The ablation's pictures and numbers from the shipped folders of its runs (LVAE, LVAE+, BIVA at
equal CPU budget): the paper's Figure 2 (log KL of every latent against training time, one panel a
run, one colour scale), the valid curves of all runs on one plot, and the resample grid of each
run for the same test image (keep z_{>k}, redraw the levels <= k).

    python experiments/ablation.py --runs LVAE=weights/celeba64_lvae LVAE+=weights/celeba64_lvae_plus \
        BIVA=weights/celeba64_biva_120min --out docs/ablation

writes docs/ablation_kl.png, docs/ablation_valid.png and docs/ablation_resample.png, and prints per
run its parameters, steps, training hours and active latents (> 0.1 nats in the last log row).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from biva_core import load_pretrained
from biva_core.data import load_split
from biva_core.io.checkpoint import read_metrics
from biva_core.io.plots import grid_image, kl_heatmaps, kl_panel, line_chart

KS = [0, 1, 2, 3, 5, 8, 11, 14, 17, 20]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--out", required=True, help="prefix of the pictures: OUT_kl.png, OUT_valid.png, OUT_resample.png")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", "../shared/data"))
    ap.add_argument("--image", type=int, default=0, help="the test image of the resample grids")
    ap.add_argument("--draws", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.from_numpy(load_split("celeba", "test", args.data_dir)[args.image:args.image + 1]).float() / 255
    panels, valid, rows = {}, {}, []
    for item in args.runs:
        name, folder = item.split("=", 1)
        model = load_pretrained(folder)
        metrics = read_metrics(Path(folder) / "metrics.jsonl")
        panels[name] = kl_panel(metrics, model.latent_names())
        valid[name] = [(r["seconds"] / 3600, r["valid_bpd"]) for r in metrics if "valid_bpd" in r]
        hours, names, kl = panels[name]
        print(json.dumps({"run": name, "variant": model.config.variant,
                          "parameters": sum(p.numel() for p in model.parameters()),
                          "steps": (model.training_info or {}).get("step"), "hours": round(hours[-1], 3) if hours else 0,
                          "latents": len(names), "active_latents_gt_0.1_nats": sum(v > 0.1 for v in kl[-1]) if kl else 0}))
        with torch.inference_mode():   # a row per k: (draws, C, H, W) each, the same seed for every run
            grid = torch.cat([model.resample(x, k, args.draws, seed=0, temperature=0.8)[0] for k in KS])
        rows.append(grid_image(grid, nrow=args.draws))
    kl_heatmaps(panels, f"{args.out}_kl.png", title="KL per latent (training batches) against training time",
                note="log scale; the top latent on top; below 0.1 nats a latent is collapsed")
    line_chart(valid, f"{args.out}_valid.png", title="valid bits/dim (EMA weights, 300 images) against training time",
               xlabel="training hours", ylabel="bits/dim", note="one CPU core each, the same recipe and CPU budget")
    w = sum(r.width for r in rows) + 8 * (len(rows) - 1)
    out = Image.new("RGB", (w, max(r.height for r in rows) + 20), "white")
    d, at = ImageDraw.Draw(out), 0
    for (item, r) in zip(args.runs, rows):
        out.paste(r, (at, 20))
        d.text((at + 4, 3), f"{item.split('=')[0]}: a row per k = {', '.join(map(str, KS))}", fill="black")
        at += r.width + 8
    out.save(f"{args.out}_resample.png")


if __name__ == "__main__":
    main()
