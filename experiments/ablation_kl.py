"""The paper's Figure 2 from training logs: log KL of every latent against training time for each
run (LVAE, LVAE+, BIVA at equal CPU budget), one panel a run, one colour scale.

    python experiments/ablation_kl.py --runs LVAE=weights/celeba64_lvae LVAE+=weights/celeba64_lvae_plus \
        BIVA=weights/celeba64_biva_120min --out docs/ablation_kl.png

Reads each folder's metrics.jsonl (the per-latent KL of the training batches, every log_every
steps) and config.json (the latent names); prints the number of active latents (> 0.1 nats) at the
end of each run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from biva_core.io.checkpoint import read_config, read_metrics
from biva_core.io.plots import kl_heatmaps
from biva_core.model.biva import BIVA


def panel(folder: Path) -> tuple[list[float], list[str], list[list[float]]]:
    cfg, _ = read_config(folder)
    names = BIVA(cfg).latent_names()
    rows = [r for r in read_metrics(folder / "metrics.jsonl") if "kl" in r and "seconds" in r]
    return [r["seconds"] / 3600 for r in rows], names, [r["kl"] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    panels = {}
    for item in args.runs:
        name, folder = item.split("=", 1)
        panels[name] = panel(Path(folder))
        hours, names, rows = panels[name]
        active = sum(v > 0.1 for v in rows[-1]) if rows else 0
        print(json.dumps({"run": name, "hours": round(hours[-1], 3) if hours else 0, "latents": len(names),
                          "active_latents_gt_0.1_nats": active}))
    kl_heatmaps(panels, args.out, title="KL per latent (training batches) against training time",
                note="log scale; the top latent on top; below 0.1 nats a latent is collapsed")


if __name__ == "__main__":
    main()
