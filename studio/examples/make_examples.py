"""Rebuild the shipped example images from the project's data (run once; the PNGs are committed).

    python studio/examples/make_examples.py ../shared/data

- celeba_test_<id>.png: six CelebA test-split faces (official partition), CelebA-64 preprocessing
  (crop box (15, 40, 163, 188), Lanczos to 64x64). CelebA is for non-commercial research use.
- celeba_aligned_<id>.jpg: one original aligned 178x218 JPEG, to show the crop the studio applies.
- ood_mnist_<label>.png, ood_fashion_<label>.png: out-of-distribution inputs for the Anomaly tab
  (an MNIST and a Fashion-MNIST test image, upscaled to 64x64 RGB); ood_upside_down_<id>.png (a
  test face turned upside down), ood_noise.png (uniform noise), ood_flat.png (one flat colour).
- weights/<digit model>/examples/: in_<set>_<i>.png, four test images of the model's own data as it
  saw them (binarized sets as 0 / 255), and ood_<set>_<i>.png, three of the other digit set and
  one of noise, for every shipped digit model.
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
from biva_core.data import load_split  # noqa: E402
from biva_core.data.mnist import read_idx  # noqa: E402

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE.parents[1] / "weights"
# model folder -> (its data set, the out-of-distribution set), both as the model reads them
DIGIT_MODELS = {"fashion_mnist": ("fashion_mnist", "mnist"),
                "fashion_mnist_binary": ("fashion_mnist_binary", "mnist_binary"),
                "binarized_mnist": ("binarized_mnist", "fashion_mnist_binary"),
                "mnist_ssl100": ("mnist_binary", "fashion_mnist_binary")}
DIGIT_PICKS = (0, 1, 2, 3)
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
    upside = Image.open(HERE / f"celeba_test_{Path(names[PICKS[0]]).stem}.png").transpose(Image.FLIP_TOP_BOTTOM)
    upside.save(HERE / f"ood_upside_down_{Path(names[PICKS[0]]).stem}.png", optimize=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(HERE / "ood_noise.png")
    Image.new("RGB", (64, 64), (96, 140, 200)).save(HERE / "ood_flat.png")
    for model, (own, other) in DIGIT_MODELS.items():
        if not (WEIGHTS / model).is_dir():
            continue
        out = WEIGHTS / model / "examples"
        out.mkdir(exist_ok=True)
        for tag, dataset, picks in (("in", own, DIGIT_PICKS), ("ood", other, DIGIT_PICKS[:3])):
            images = load_split(dataset, "test", data, progress=False)
            scale = 255 if images.max() <= 1 else 1
            for i in picks:
                Image.fromarray((images[i, 0] * scale).astype(np.uint8)).save(out / f"{tag}_{dataset}_{i}.png")
        noise = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        if own.endswith("binary") or own == "binarized_mnist":
            noise = np.where(noise < 128, 0, 255).astype(np.uint8)
        Image.fromarray(noise).save(out / "ood_noise.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
