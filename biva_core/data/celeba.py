"""CelebA (img_align_celeba): a folder of the aligned 178x218 JPEGs, or a zip of them.

Each image is cropped to the box (left 15, top 40, right 163, bottom 188), 148x148 around the
face, and resized to image_size x image_size (Lanczos, antialiased; 64 for CelebA-64).
The split is list_eval_partition.txt when present (beside the images or in Eval/), else the
official rule by image id: train <= 162770 < valid <= 182637 < test.
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from biva_core.data.cache import Source
from biva_core.data.images import decode_all, open_image, to_rgb

CROP_BOX = (15, 40, 163, 188)  # (left, top, right, bottom): 148 x 148
LAST_TRAIN_ID, LAST_VALID_ID = 162770, 182637
PARTITION = {"train": 0, "valid": 1, "test": 2}  # the codes of list_eval_partition.txt
EXPECTED = ("img_align_celeba/*.jpg, a zip of them (e.g. img_align_celeba.zip) "
            "or *.jpg files directly in the folder")


def crop_resize(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8 of an aligned CelebA image: crop CROP_BOX, then Lanczos resize."""
    return np.asarray(to_rgb(image).crop(CROP_BOX).resize((size, size), Image.LANCZOS))


def _is_jpeg(name: str) -> bool:
    return name.lower().endswith((".jpg", ".jpeg")) and not PurePosixPath(name).name.startswith(".")


def _find(root: Path) -> tuple[Path, bool]:
    """(the folder or zip holding the JPEGs, whether it is a zip)."""
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA folder {root} does not exist; expected in it {EXPECTED}")
    sub = root / "img_align_celeba"
    if sub.is_dir() and any(_is_jpeg(p.name) for p in sub.iterdir()):
        return sub, False
    for zpath in sorted(root.glob("*.zip")):
        try:
            with zipfile.ZipFile(zpath) as z:
                if any(_is_jpeg(n) for n in z.namelist()):
                    return zpath, True
        except zipfile.BadZipFile as err:
            raise ValueError(f"{zpath}: not a readable zip file ({err})") from err
    if any(_is_jpeg(p.name) for p in root.iterdir()):
        return root, False
    raise FileNotFoundError(f"no CelebA images in {root}; expected {EXPECTED}")


def _partition_file(root: Path) -> Path | None:
    for p in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt"):
        if p.is_file():
            return p
    return None


def read_partition(path: Path) -> dict[str, int]:
    """{"000001.jpg": 0, ...} from list_eval_partition.txt ("<file> <0|1|2>" per line)."""
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{n}: expected '<image>.jpg <0|1|2>', found {line!r}")
        table[parts[0]] = int(parts[1])
    return table


def partition_by_id(name: str) -> int:
    """Official partition of an image from its numeric id (000001.jpg -> 1 -> train)."""
    stem = PurePosixPath(name).stem
    if not stem.isdigit():
        raise ValueError(f"CelebA image {name!r} has no numeric id, so its split is unknown; "
                         "put list_eval_partition.txt beside the images")
    i = int(stem)
    return 0 if i <= LAST_TRAIN_ID else 1 if i <= LAST_VALID_ID else 2


def _select(names: list[str], split: str, partition: dict[str, int] | None, where: Path) -> list[str]:
    """The names of `split`, sorted by file name."""
    chosen = []
    for name in names:
        base = PurePosixPath(name).name
        if partition is None:
            code = partition_by_id(base)
        elif base in partition:
            code = partition[base]
        else:
            raise ValueError(f"{where}: image {base} is not listed in list_eval_partition.txt")
        if code == PARTITION[split]:
            chosen.append(name)
    return sorted(chosen, key=lambda n: PurePosixPath(n).name)


def decode(location: Path, is_zip: bool, split: str, size: int, partition_path: Path | None,
           *, progress: bool = True, limit: int | None = None) -> np.ndarray:
    """uint8 (N, 3, size, size) of `split`; `limit` keeps only the first N images (for tests)."""
    partition = read_partition(partition_path) if partition_path else None

    def run(names: list[str], read) -> np.ndarray:
        names = _select([n for n in names if _is_jpeg(n)], split, partition, location)[:limit]

        def one(name: str) -> np.ndarray:
            return crop_resize(open_image(read(name), f"{location}/{name}"), size)
        return decode_all(names, one, (3, size, size), progress=progress,
                          desc=f"CelebA {split} ({location.name})")

    if is_zip:
        with zipfile.ZipFile(location) as z:  # reading one ZipFile from several threads is safe
            return run(z.namelist(), z.read)
    return run([p.name for p in location.iterdir()], lambda name: (location / name).read_bytes())


def source(root: Path, split: str, image_size: int) -> Source:
    location, is_zip = _find(root)
    partition_path = _partition_file(root)
    files = [location] if is_zip else [p for p in location.iterdir() if _is_jpeg(p.name)]
    files += [partition_path] if partition_path else []
    return Source(files, lambda progress: decode(location, is_zip, split, image_size, partition_path,
                                                 progress=progress))
