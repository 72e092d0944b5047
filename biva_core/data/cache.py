"""The decoded-array cache: one uint8 `.npy` per (dataset, split, image size, source fingerprint).

Decoding (JPEG, idx, text) happens once; later loads read the `.npy` back in about a second.
The fingerprint hashes the resolved path, size and mtime of every source file, so replacing or
touching the data makes a new cache entry instead of serving a stale one. Old entries are never
deleted automatically (two data folders may share one cache); remove the folder to reclaim space.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

CACHE_VERSION = 1  # bump when a decoder's output changes, so old caches stop matching


class Source(NamedTuple):
    """Where a split comes from: the files it depends on, and how to decode them."""
    files: list[Path]                         # fingerprinted (path, size, mtime)
    decode: Callable[[bool], np.ndarray]      # decode(progress) -> uint8 (N, C, H, W)


def default_cache_dir() -> Path:
    """$BIVA_CACHE, else ~/.cache/biva_studio."""
    env = os.environ.get("BIVA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "biva_studio"


def fingerprint(files: Iterable[Path], *extra: object) -> str:
    """16 hex digits of sha256 over the cache version, `extra` and each file's path, size, mtime."""
    h = hashlib.sha256(repr((CACHE_VERSION, *extra)).encode())
    for f in sorted(Path(f).resolve() for f in files):
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def save_atomic(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside `path`, then rename: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)  # a file object: np.save adds no ".npy" suffix
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached(path: Path, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at `path`, or decode() written there first.

    An unreadable cache file is decoded afresh; an unwritable cache folder only costs speed."""
    if path.is_file():
        try:
            array = np.load(path, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 4:
                return array
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable data cache {path}: {err}", stacklevel=3)
    array = np.array(decode(), dtype=np.uint8, order="C")  # an own, writable copy, like np.load gives
    try:
        save_atomic(path, array)
    except OSError as err:
        warnings.warn(f"could not write the data cache {path}: {err}; set cache_dir or $BIVA_CACHE "
                      "to a writable folder to decode only once", stacklevel=3)
    return array
