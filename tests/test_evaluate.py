"""biva_core.evaluate: the AUROC against its definition, the CLI's JSON / CSV / reference output on
a tiny saved model, and the digit binarization."""
from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest
import torch

from biva_core import BIVA, LevelConfig, ModelConfig
from biva_core.checkpoint import save_pretrained
from biva_core.evaluate import auroc, load_images, reference_stats, run

from conftest import images, live_model, tiny_config
from test_train import image_folder


def pairwise_auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg) / 2 over every pair."""
    return float(np.mean([(p > n) + 0.5 * (p == n) for n in neg for p in pos]))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    neg, pos = rng.integers(0, 6, rng.integers(1, 40)), rng.integers(2, 8, rng.integers(1, 40))
    if seed % 2:  # continuous scores, no ties
        neg, pos = neg + rng.random(len(neg)), pos + rng.random(len(pos))
    assert auroc(neg, pos) == pytest.approx(pairwise_auroc(neg, pos), abs=1e-12)


def test_auroc_extremes():
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 2, 3], [3, 2, 1]) == 0.5
    with pytest.raises(ValueError):
        auroc([], [1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny live model saved in the pretrained layout, and a folder of 8x8 PNGs."""
    root = tmp_path_factory.mktemp("eval")
    save_pretrained(live_model(tiny_config()), root / "weights")
    image_folder(root / "images", n_train=1, n_valid=6)
    return root


def cli(saved, tmp_path, monkeypatch, capsys, *extra: str) -> dict:
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    run(["--weights", str(saved / "weights"), "--data", "folder", "--data-dir", str(saved / "images"),
         "--split", "valid", "--json", "--no-progress", "--batch-size", "4", *extra])
    return json.loads(capsys.readouterr().out)


def test_cli_bounds(saved, tmp_path, monkeypatch, capsys):
    r = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "16", "--csv", str(tmp_path / "b.csv"))
    assert r["images"] == 6 and r["K"] == 16
    assert r["L_K"]["nats"] >= r["L_1"]["nats"] - 3 * r["L_1"]["stderr_nats"]
    assert r["L_K"]["bits_per_dim"] == pytest.approx(-r["L_K"]["nats"] / (192 * np.log(2)))
    rows = list(csv.reader(open(tmp_path / "b.csv")))
    assert rows[0] == ["quantity", "k", "value"] and len(rows) == 5
    kl = r["kl_per_latent"]  # one (single-sample) KL term per latent of L = 3
    assert list(kl) == ["z1_bu", "z1_td", "z2_bu", "z2_td", "z3"]
    assert r["latents_above_0.1_nats"] == sum(v > 0.1 for v in kl.values())


def test_cli_ood_and_reference(saved, tmp_path, monkeypatch, capsys):
    ref_path = tmp_path / "ref" / "reference.json"
    r = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "2", "--ood", "folder", "--reference", str(ref_path))
    a = r["ood"]["auroc"]
    # the OOD set is the in-distribution set with the same seeds: every score ties, AUROC = 1/2
    assert a["L_gt_0"] == 0.5
    assert set(a["L_gt_k"]) == set(a["LLR_gt_k"]) == {"1", "2"}
    assert all(v == 0.5 for d in (a["L_gt_k"], a["LLR_gt_k"]) for v in d.values())
    assert a["best_LLR"]["k"] in (1, 2)
    ref = json.loads(ref_path.read_text())
    assert {"format_version", "split", "images", "K", "L_gt_0", "L_gt_k", "LLR_gt_k", "bpd"} <= set(ref)
    assert ref["format_version"] == 1 and ref["split"] == "valid" and ref["images"] == 6 and ref["K"] == 2
    for k in ("1", "2"):
        llr = np.array(ref["L_gt_0"]) - np.array(ref["L_gt_k"][k])
        assert np.allclose(llr, ref["LLR_gt_k"][k], atol=1e-3)
    assert np.allclose(ref["bpd"], -np.array(ref["L_gt_0"]) / (192 * np.log(2)), rtol=1e-5)


def test_reference_stats_direct_call():
    """reference_stats on tensors: one entry per image; an AUROC between two sets is in [0, 1]."""
    model = live_model(tiny_config())
    ref = reference_stats(model, images(model.config, 5), [1, 2], 1)
    assert len(ref["L_gt_0"]) == len(ref["bpd"]) == 5 and ref["images"] == 5
    flat = torch.full((5, 3, 8, 8), 0.5)
    noisy = reference_stats(model, flat, [1, 2], 1)
    a = auroc(-np.array(noisy["L_gt_0"]), -np.array(ref["L_gt_0"]))
    assert 0.0 <= a <= 1.0


def write_idx(path, arr: np.ndarray) -> None:
    path.write_bytes(b"\0\0\x08\x03" + struct.pack(">III", *arr.shape) + arr.tobytes())


def test_digits_are_binarized_for_a_bernoulli_model(tmp_path, monkeypatch):
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", test)
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte", test)
    levels = (LevelConfig(blocks=1, channels=4, latent=2, stride=2, dense=True),
              LevelConfig(blocks=1, channels=4, latent=2, stride=2, dense=True))
    bern = BIVA(ModelConfig(image_shape=(1, 28, 28), levels=levels, likelihood="bernoulli"))
    x = load_images("mnist", "test", str(tmp_path), bern)
    assert torch.equal(x, torch.from_numpy((test[:, None] > 127).astype(np.float32)))
    dmol = BIVA(ModelConfig(image_shape=(1, 28, 28), levels=levels, likelihood="dmol", mixtures=2))
    assert torch.allclose(load_images("mnist", "test", str(tmp_path), dmol, limit=2) * 255,
                          torch.from_numpy(test[:2, None].astype(np.float32)))


def test_one_sample_scores_are_the_elbo():
    """With K = 1 and the same seed, L^{>0} draws the same z as the ELBO (the CLI relies on it)."""
    model = live_model(tiny_config())
    x = images(model.config, 3)
    s = model.scores(x, [1], K=1, seed=7)
    assert torch.equal(s.l0, model.elbo(x, seed=7)["elbo"])
