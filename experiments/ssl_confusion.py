"""Where does a semi-supervised model's classifier go wrong? The confusion matrix of argmax q(y | x)
on a whole split, the pairs (true -> predicted) that hold most of the errors, and a picture: a row
of misclassified images for each of the largest pairs.

    python experiments/ssl_confusion.py --weights weights/mnist_ssl100 --split valid --out docs/ssl_confusion
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from biva_core import load_pretrained
from biva_core.data import load_labels
from biva_core.data.inputs import load_images
from biva_core.train.semisupervised import predict

ROOT = Path(__file__).resolve().parents[1]  # the checkout (its runs/, docs/ and data folder)


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="mnist_binary")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--pairs", type=int, default=3, help="rows of the picture: the largest (true, predicted) pairs")
    ap.add_argument("--per-row", type=int, default=16)
    ap.add_argument("--out", help="write OUT.png (and OUT.md with the matrix)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights).eval()
    if not model.config.classes:
        raise SystemExit(f"{args.weights}: the model has no class variable")
    x = load_images(args.data, args.split, args.data_dir, model.config)
    y = load_labels(args.data, args.split, args.data_dir)[:len(x)]
    pred = predict(model, x)
    C = model.config.classes
    cm = np.zeros((C, C), dtype=int)
    np.add.at(cm, (y, pred), 1)
    wrong = cm.sum() - np.trace(cm)
    off = [(cm[a, b], a, b) for a in range(C) for b in range(C) if a != b and cm[a, b]]
    off.sort(reverse=True)
    lines = [f"{args.weights} on all {len(x)} {args.split} images: error {wrong / len(x):.2%} ({wrong} images)", "",
             "| true \\ predicted | " + " | ".join(map(str, range(C))) + " |", "|---" * (C + 1) + "|"]
    lines += [f"| **{a}** | " + " | ".join(f"**{v}**" if a == b else str(v) for b, v in enumerate(row)) + " |"
              for a, row in enumerate(cm)]
    lines += ["", "largest pairs (true -> predicted): " + ", ".join(f"{a} -> {b}: {n}" for n, a, b in off[:8])]
    print("\n".join(lines))
    if args.out:
        from torchvision.utils import save_image
        rows = []
        for _, a, b in off[:args.pairs]:
            idx = np.flatnonzero((y == a) & (pred == b))[:args.per_row]
            row = torch.zeros(args.per_row, *x.shape[1:])
            row[:len(idx)] = x[idx].float()
            rows.append(row)
        if rows:
            save_image(torch.cat(rows), f"{args.out}.png", nrow=args.per_row, pad_value=0.5)
            lines += ["", f"![misclassified]({Path(args.out).name}.png)", "",
                      "Rows of the picture: " + "; ".join(f"true {a} read as {b}" for _, a, b in off[:args.pairs])
                      + f" (up to {args.per_row} each, in the split's order)."]
        Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
