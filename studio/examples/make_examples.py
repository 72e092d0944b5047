"""Rebuild the shipped example images from the project's data (run once; the PNGs are committed).

    python studio/examples/make_examples.py ../shared/data

- celeba_test_<id>.png: six CelebA test-split faces (official partition), CelebA-64 preprocessing
  (crop box (15, 40, 163, 188), Lanczos to 64x64). CelebA is for non-commercial research use.
- celeba_aligned_<id>.jpg: one original aligned 178x218 JPEG, to show the crop the studio applies.
- ood_mnist_<label>.png, ood_fashion_<label>.png: out-of-distribution inputs for the Anomaly tab
  (an MNIST and a Fashion-MNIST test image, upscaled to 64x64 RGB).
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from biva_core.data.celeba import crop_resize, partition_by_id  # noqa: E402
from biva_core.data.mnist import read_idx  # noqa: E402

HERE = Path(__file__).resolve().parent
PICKS = (3, 250, 600, 900, 1300, 1700)  # indices into the sorted test-split names
ALIGNED = 1950


def main(data: Path) -> None:
    with zipfile.ZipFile(data / "celeba" / "img_align_celeba_subset20k.zip") as z:
        names = sorted(n for n in z.namelist()
                       if n.endswith(".jpg") and partition_by_id(Path(n).name) == 2)
        for i in PICKS:
            face = crop_resize(Image.open(io.BytesIO(z.read(names[i]))), 64)
            Image.fromarray(face).save(HERE / f"celeba_test_{Path(names[i]).stem}.png", optimize=True)
        (HERE / f"celeba_aligned_{Path(names[ALIGNED]).name}").write_bytes(z.read(names[ALIGNED]))
    for folder, tag, index in (("mnist", "mnist", 0), ("fashion_mnist", "fashion", 0)):
        images = read_idx(data / folder / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(data / folder / "t10k-labels-idx1-ubyte.gz")
        digit = Image.fromarray(np.asarray(images[index], np.uint8)).resize((64, 64), Image.LANCZOS)
        digit.convert("RGB").save(HERE / f"ood_{tag}_{int(labels[index])}.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
