"""Pretrained folders of tiny models for the studio tests (a few thousand parameters each).

    celeba_tiny   RGB 8x8, logistic mixture; a "face" model by name, with reference.json, a
                  metrics.jsonl training log, kl_per_latent.png and a samples_t1.0.png
    gray_tiny     1 x 8 x 8, logistic mixture, no run files
    binary_tiny   1 x 8 x 8, Bernoulli, dense latents
    broken        a config.json with a truncated weights file
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from biva_core import save_pretrained
from biva_core.detect import build_reference

from conftest import images, live_model, tiny_config


def make_weights(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    dirs = {}
    face = live_model(tiny_config(), seed=1)
    dirs["celeba_tiny"] = save_pretrained(face, root / "celeba_tiny", training={"step": 30, "best_valid_bpd": 7.5})
    L = face.config.L
    build_reference(face, images(face.config, 40, seed=5), list(range(1, L)), 1,
                    note="random 8-bit images").write(root / "celeba_tiny" / "reference.json")
    log = [{"step": s, "bpd": 8.0 - s / 100, "loss": 1.0} for s in (10, 20, 30)]
    log += [{"step": 30, "valid_bpd": 7.6, "valid_kl": [1.0] * face.config.n_latents}, "not json"]
    (root / "celeba_tiny" / "metrics.jsonl").write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in log))
    Image.new("RGB", (60, 40), "orange").save(root / "celeba_tiny" / "kl_per_latent.png")
    Image.new("RGB", (40, 40), "blue").save(root / "celeba_tiny" / "samples_t1.0.png")

    gray = tiny_config().replace(image_shape=(1, 8, 8))
    dirs["gray_tiny"] = save_pretrained(live_model(gray, seed=2), root / "gray_tiny")
    dirs["binary_tiny"] = save_pretrained(live_model(tiny_config(kind="bernoulli"), seed=3), root / "binary_tiny")

    broken = save_pretrained(live_model(tiny_config(), seed=4), root / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    dirs["broken"] = broken
    return dirs


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels (the data stream is tiny and invalid)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + data


def write_bad_files(folder: Path) -> dict[str, Path]:
    """Files the studio must refuse with a clear message."""
    folder.mkdir(parents=True, exist_ok=True)
    good = png_bytes(Image.new("RGB", (32, 32), "red"))
    files = {"text": ("notes.txt", b"this is not an image\n"),
             "truncated": ("truncated.png", good[: len(good) // 2]),
             "empty": ("empty.png", b""),
             "bomb": ("bomb.png", bomb_png()),
             "garbage_jpg": ("garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)}
    out = {}
    for key, (name, data) in files.items():
        (folder / name).write_bytes(data)
        out[key] = folder / name
    return out


def tensor_of_png(path: str | Path) -> torch.Tensor:
    """(C, H, W) float in [0, 1] of a saved PNG."""
    a = np.asarray(Image.open(path), np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1) if a.ndim == 3 else torch.from_numpy(a)[None]
