"""Folders of out-of-distribution images for `biva-evaluate --ood folder --ood-dir DIR`, made from
what is at hand (no download): for an RGB model of size S,

    noise/        uniform noise, S x S RGB
    flat/         one flat colour per image
    upside_down/  the CelebA test faces turned upside down (same pixels, another layout)
    crops/        with --photos: random square crops (a quarter to all of the shorter side) of the
                  given natural photographs, resized to S x S (Lanczos): natural images, no faces
    cropsR/       with --low-res R: the same crops saved at R x R, as a low-resolution data set
                  (CIFAR-10 and SVHN are 32 x 32) reaches the model: `--ood folder` resizes them
                  to S x S, so they are smoother than the model's own images

    python experiments/make_ood_folders.py --out runs/ood --n 1000 --size 64 --photos a.jpg b.png ...
    python experiments/make_ood_folders.py --out runs/ood_b --n 300 --photos ... --low-res 32 --crops-only
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from biva_core.data import load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"))
    ap.add_argument("--photos", nargs="*", default=[], help="photographs to crop (no faces)")
    ap.add_argument("--low-res", type=int, nargs="*", default=[], metavar="R",
                    help="also save each crop at R x R in cropsR/ (a low-resolution data set)")
    ap.add_argument("--crops-only", action="store_true", help="only the crop folders")
    args = ap.parse_args()
    out, s, rng = Path(args.out), args.size, np.random.default_rng(0)
    made = []
    if not args.crops_only:
        for name in ("noise", "flat", "upside_down"):
            (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(args.n):
            Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)).save(out / "noise" / f"{i:05d}.png")
            Image.new("RGB", (s, s), tuple(int(c) for c in rng.integers(0, 256, 3))).save(out / "flat" / f"{i:05d}.png")
        faces = load_split("celeba", "test", args.data_dir, image_size=s, progress=False)[:args.n]
        for i, f in enumerate(faces):
            Image.fromarray(f.transpose(1, 2, 0)[::-1]).save(out / "upside_down" / f"{i:05d}.png")
        made += [f"noise, flat ({args.n} each)", f"upside_down ({len(faces)})"]
    photos = [Image.open(p).convert("RGB") for p in args.photos]
    if photos:
        sizes = {"crops": s, **{f"crops{r}": r for r in args.low_res}}
        for name in sizes:
            (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(args.n):
            im = photos[i % len(photos)]
            side = int(rng.uniform(0.25, 1.0) * min(im.size))
            left, top = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
            crop = im.crop((left, top, left + side, top + side))
            for name, r in sizes.items():
                crop.resize((r, r), Image.LANCZOS).save(out / name / f"{i:05d}.png")
        made += [f"{', '.join(sizes)} ({args.n} each, of {len(photos)} photos)"]
    print(f"{out}: " + "; ".join(made))


if __name__ == "__main__":
    main()
