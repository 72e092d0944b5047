"""CIFAR-10: the binary batches (cifar-10-batches-bin) or the python batches (cifar-10-batches-py).

Both give uint8 (N, 3, 32, 32). "test" is test_batch; "valid" is the last tenth of the 50,000
training images (the last 5,000, i.e. the second half of data_batch_5), "train" the rest.
The binary batches are preferred when both are present: they need no unpickling. The python
batches are unpickled with `ArrayUnpickler`, which builds numpy arrays, dicts, lists, numbers and
strings and refuses every other global, so a crafted file cannot run code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from biva_core.data.cache import Source

RECORD = 1 + 3 * 32 * 32  # label byte, then 1024 red, 1024 green, 1024 blue bytes
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

_probe = np.zeros(1, np.uint8)
_RECONSTRUCT = _probe.__reduce__()[0]     # numpy's array reconstructor (pickle protocols 0-4)
_FROMBUFFER = _probe.__reduce_ex__(5)[0]  # numpy's array-from-buffer (pickle protocol 5)


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1")."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only; any other global is refused."""
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,   # numpy 1.x spelling
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x spelling
        ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}: only numpy "
                                         "arrays and plain containers are allowed") from None


def read_python_batch(path: Path) -> np.ndarray:
    """uint8 (N, 3, 32, 32) of a python batch: a pickled dict with "data" of shape (N, 3072)."""
    try:
        with open(path, "rb") as f:
            # latin1: Python 2 str (the original batches) -> str, as numpy expects for array data
            batch = ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({err})") from err
    data = None
    if isinstance(batch, dict):
        data = batch.get("data", batch.get(b"data"))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == RECORD - 1):
        raise ValueError(f"{path}: expected a dict whose 'data' is a uint8 array (N, {RECORD - 1})")
    return data.reshape(-1, 3, 32, 32)


def read_binary_batch(path: Path) -> np.ndarray:
    """uint8 (N, 3, 32, 32) of a binary batch: N records of 1 label byte + 3072 pixel bytes."""
    raw = np.fromfile(path, np.uint8)
    if raw.size % RECORD:
        raise ValueError(f"{path}: size {raw.size} is not a whole number of {RECORD}-byte records")
    return raw.reshape(-1, RECORD)[:, 1:].reshape(-1, 3, 32, 32)


def _batches(root: Path, split: str) -> tuple[list[Path], bool]:
    """(the batch files of `split`, whether they are python batches)."""
    names = ["test_batch"] if split == "test" else list(TRAIN_BATCHES)
    for folder, suffix, python in ((root / "cifar-10-batches-bin", ".bin", False), (root, ".bin", False),
                                   (root / "cifar-10-batches-py", "", True), (root, "", True)):
        paths = [folder / (n + suffix) for n in names]
        if all(p.is_file() for p in paths):
            return paths, python
    tarballs = [p.name for p in root.glob("cifar-10-*.tar.gz")]
    hint = f"; extract {tarballs[0]} first" if tarballs else ""
    raise FileNotFoundError(f"CIFAR-10 batches not found in {root}: expected cifar-10-batches-bin/"
                            f"{names[0]}.bin ... or cifar-10-batches-py/{names[0]} ...{hint}")


def source(root: Path, split: str) -> Source:
    paths, python = _batches(root, split)

    def decode(progress: bool) -> np.ndarray:
        images = np.concatenate([(read_python_batch if python else read_binary_batch)(p) for p in paths])
        if split == "test":
            return images
        n_valid = len(images) // 10  # 5,000 of 50,000
        return images[len(images) - n_valid:] if split == "valid" else images[:len(images) - n_valid]
    return Source(paths, decode)
