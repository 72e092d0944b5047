"""Semi-supervised error against training time: the test error of every snapshot of a run trained
with --labels and --set snapshots=true, beside its valid error and bits/dim (issue 14's curve).

    python experiments/ssl_curve.py --run runs/ssl100 --data mnist_binary --out docs/semisupervised_curve

Test error is the fraction of the whole test split whose argmax q(y | x) is not its label. The
EMA weights are the ones each snapshot holds. Writes OUT.md (table) and OUT.png (plot).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from biva_core import load_pretrained
from biva_core.data import load_labels
from biva_core.data.inputs import load_images
from biva_core.io.plots import line_chart
from biva_core.train.semisupervised import error_rate

ROOT = Path(__file__).resolve().parents[1]  # the checkout (its runs/, docs/ and data folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", default="mnist_binary")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", required=True, help="OUT.md and OUT.png")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    snaps = sorted(p for p in (Path(args.run) / "snapshots").iterdir() if (p / "config.json").is_file())
    if not snaps:
        raise SystemExit(f"{args.run}/snapshots: no snapshots (train with --set snapshots=true)")
    labels = load_labels(args.data, "test", args.data_dir)
    x = None
    rows = ["| step | training minutes | valid error (EMA) | test error | valid bits/dim |", "|---|---|---|---|---|"]
    curve = {"valid error": [], "test error": []}
    for snap in snaps:
        model = load_pretrained(snap).eval()
        x = load_images(args.data, "test", args.data_dir, model.config) if x is None else x
        info = model.training_info or {}
        valid = info.get("valid", {})
        minutes = valid.get("seconds", info.get("seconds", 0.0)) / 60
        test = error_rate(model, x, labels)
        curve["valid error"].append((minutes, 100 * valid["valid_error"]))
        curve["test error"].append((minutes, 100 * test))
        rows.append(f"| {valid['step']} | {minutes:.0f} | {100 * valid['valid_error']:.2f}% | {100 * test:.2f}% "
                    f"| {valid['valid_bpd']:.4f} |")
        print(rows[-1], flush=True)
    out = Path(args.out)
    line_chart(curve, out.with_suffix(".png"), title=f"{args.data}, {len(labels)} test images: error vs training time",
               xlabel="training minutes (1 thread)", ylabel="error (%)")
    out.with_suffix(".md").write_text(
        f"# Semi-supervised error against training time\n\n`python experiments/ssl_curve.py --run {args.run} "
        f"--data {args.data} --out {args.out}`: every snapshot of the run, its valid error (the first "
        f"{valid.get('valid_error_images', valid.get('valid_images', '?'))} valid images) and its error on all {len(labels)} test images.\n\n"
        + "\n".join(rows) + f"\n\n![error against time]({out.with_suffix('.png').name})\n")


if __name__ == "__main__":
    main()
