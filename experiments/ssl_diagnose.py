"""Does a semi-supervised model's generative side know the classes? On valid images: the error of
the classifier q(y | x), the error of the generative classifier argmax_y L(x, y) (the class the
model's own bound prefers, which the unlabelled term U(x) pulls q(y | x) towards), and how far
apart the classes' bounds are.

    python experiments/ssl_diagnose.py --weights weights/mnist_ssl100 --data mnist_binary --n 400 --draws 4
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from biva_core import load_pretrained
from biva_core.data import load_labels
from biva_core.data.inputs import load_images

ROOT = Path(__file__).resolve().parents[1]  # the checkout (its runs/, docs/ and data folder)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="mnist_binary")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--n", type=int, default=400, help="valid images")
    ap.add_argument("--draws", type=int, default=4, help="posterior draws averaged into L(x, y)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights).eval()
    if not model.config.classes:
        raise SystemExit(f"{args.weights}: the model has no class variable")
    x = load_images(args.data, "valid", args.data_dir, model.config, limit=args.n)
    y = torch.from_numpy(load_labels(args.data, "valid", args.data_dir)[:len(x)])
    g = torch.Generator().manual_seed(0)
    bounds, logits = zip(*(model.class_bounds(x, generator=g) for _ in range(args.draws)))
    L = torch.stack(bounds).mean(0)                                            # (N, C)
    gap = L.sort(-1).values
    print(f"{args.weights}: {len(x)} valid images, L(x, y) from {args.draws} draws")
    print(f"  error of q(y | x):            {(logits[0].argmax(-1) != y).float().mean():.2%}")
    print(f"  error of argmax_y L(x, y):    {(L.argmax(-1) != y).float().mean():.2%}")
    print(f"  median best - second L (nats): {(gap[:, -1] - gap[:, -2]).median():.2f}")
    print(f"  median best - worst L (nats):  {(gap[:, -1] - gap[:, 0]).median():.2f}")


if __name__ == "__main__":
    main()
