"""The lent-GPU path, run on the CPU: data packs and the whole flagship script end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from biva_core import load_pretrained
from biva_core.data.packed import pack, unpack

ROOT = Path(__file__).resolve().parents[1]


def faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (JPEG-friendly, unlike white noise)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.float32)
    return np.clip(low.repeat(8, 2).repeat(8, 3) + rng.normal(0, 4, (n, 3, 64, 64)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_webp_pack_is_lossless(tmp_path, channels):
    x = faces(5)[:, :channels]
    size = pack(x, tmp_path / "p.npz", fmt="webp")
    assert size == os.path.getsize(tmp_path / "p.npz")
    np.testing.assert_array_equal(unpack(tmp_path / "p.npz", workers=1), x)


def test_jpeg_pack_is_close_and_smaller(tmp_path):
    x = faces(6)
    jpeg = pack(x, tmp_path / "j.npz", fmt="jpeg", quality=90)
    back = unpack(tmp_path / "j.npz", workers=1)
    assert back.shape == x.shape and back.dtype == np.uint8
    assert np.abs(back.astype(float) - x).mean() < 4.0
    assert jpeg < x.nbytes / 2


def test_pack_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        pack(faces(1), tmp_path / "x.npz", fmt="gif")


def test_flagship_script_end_to_end_on_cpu(tmp_path):
    data = tmp_path / "carry"
    data.mkdir()
    pack(faces(48, 1), data / "celeba64_train_q90.npz", fmt="jpeg")
    pack(faces(16, 2), data / "celeba64_valid1000.npz", fmt="webp")
    pack(faces(4, 3), data / "celeba64_test500.npz", fmt="webp")
    levels = json.dumps([{"blocks": 1, "channels": 8, "latent": 2, "stride": 2}] * 3)
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "gpu/flagship_run.py"), "--device", "cpu", "--data", str(data),
           "--out", str(out), "--work", str(work), "--deadline", "20", "--eval-reserve", "15",
           "--batch", "8", "--eval-every", "2", "--bench-presets", "tiny", "--bench-steps", "1",
           "--bench-cap", "120", "--set", f"levels={levels}", "mixtures=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["data"] == {"train": 48, "valid": 16, "test": 4}
    assert {r["mode"] for r in res["speed"]} == {"fp32", "bf16", "bf16_cl", "bf16_cl_fused"}
    assert res["train"]["step"] > 0
    assert set(res["reference"]["L_gt_k"]) == {"0", "1", "2"}
    assert res["eval"]["valid_L1_bpd"] == pytest.approx(-res["eval"]["valid_L1_nats"] / (3 * 64 * 64 * np.log(2)))
    model = load_pretrained(out / "weights")
    assert model.config.L == 3 and model.training_info["step"] > 0
    with tarfile.open(out / "bundle.tar.gz") as tar:
        assert "metrics.jsonl" in tar.getnames()
