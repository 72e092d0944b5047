"""Does the Hierarchy tab's mix leave a lattice? For pairs of CelebA test faces (A, B), the mean
absolute response of the 2x2 checkerboard filter [[1, -1], [-1, 1]] (per pixel and channel) of
`model.mix(A, B, k)` for each k, beside the reconstructions' own; and a picture of one pair.

    python experiments/mix_lattice.py --weights weights/celeba64 --out docs/notes/mix_lattice.png

docs/notes/2026-12-07-mix-lattice.md has the numbers before and after mix changed.
"""
from __future__ import annotations

import argparse
import os

import torch

from biva_core import load_pretrained
from biva_core.data import load_split
from biva_core.io.plots import grid_image


def checkerboard(x: torch.Tensor) -> torch.Tensor:
    """(B,) mean |x * [[1, -1], [-1, 1]]| per pixel and channel of images (B, C, H, W)."""
    kernel = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])[None, None].repeat(x.shape[1], 1, 1, 1)
    return torch.nn.functional.conv2d(x, kernel, groups=x.shape[1]).abs().mean((1, 2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="weights/celeba64")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", "../shared/data"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--out", help="a PNG: one pair, A | mix at k = 1 .. 9 | B")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_pretrained(args.weights)
    x = torch.from_numpy(load_split("celeba", "test", args.data_dir)[:2 * args.pairs]).float() / 255
    a, b = x[0::2], x[1::2]
    with torch.inference_mode():
        print(f"reconstructions: A {checkerboard(model.reconstruct(a)).mean():.4f}, "
              f"B {checkerboard(model.reconstruct(b)).mean():.4f}")
        row = [a[:1]]
        for k in range(1, 10):
            mixed = model.mix(a, b, k)
            row.append(mixed[:1])
            print(f"k = {k}: {checkerboard(mixed).mean():.4f}")
        row.append(b[:1])
    if args.out:
        grid_image(torch.cat(row), nrow=len(row)).save(args.out)


if __name__ == "__main__":
    main()
