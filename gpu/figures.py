"""Pictures for a pretrained folder: sample grids per temperature and a resample grid over k.

    python gpu/figures.py --weights weights/celeba64 --image-npy carry/celeba64_test_full.npy --index 0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from biva_core import load_pretrained  # noqa: E402
from biva_core.plots import save_grid  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image-npy", help="uint8 (N, C, H, W) array; the images to resample")
    ap.add_argument("--index", type=int, nargs="+", default=[0])
    ap.add_argument("--ks", type=int, nargs="+")
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()
    out = Path(args.weights)
    model = load_pretrained(out)
    for t in (1.0, 0.9, 0.8, 0.7, 0.6):
        save_grid(model.sample(16, temperature=t, seed=0), out / f"samples_t{t:.1f}.png", nrow=8)
    if args.image_npy:
        L = model.config.L
        ks = args.ks or sorted({0, 1, 2, 3, 5, 8, 11, 14, 17, L})
        for i in args.index:
            x = torch.from_numpy(np.load(args.image_npy, mmap_mode="r")[i:i + 1].copy()).float() / 255
            rows = [torch.cat([x, model.resample(x, k, args.draws, temperature=args.temperature, seed=k)[0]])
                    for k in ks]
            # one row per k: the input, then the draws (k = 0 reconstruction ... k = L a new sample)
            save_grid(torch.cat(rows), out / f"resample_grid_{i}.png", nrow=args.draws + 1)
        print("rows k =", ks)


if __name__ == "__main__":
    main()
