"""biva_core.eval.evaluate: the AUROC against its definition, the CLI's JSON / CSV / reference output on
a tiny saved model, and the digit binarization."""
from __future__ import annotations

import csv
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from biva_core import LevelConfig, ModelConfig
from biva_core.io.checkpoint import save_pretrained
from biva_core.detect import Reference, build_reference
from biva_core.data.inputs import load_images
from biva_core.eval.evaluate import auroc, run

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


def test_pieces_of_a_split_merge_into_the_run_over_all_of_it(saved, tmp_path, monkeypatch, capsys):
    """--skip S --limit N draws images S.. as the whole split does, so the merge of two pieces is
    the report of one run over all six images: means, standard errors and KL per latent."""
    whole = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "4")
    a = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "4", "--limit", "4")
    b = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "4", "--skip", "4")
    assert (a["images"], b["images"], b["skip"]) == (4, 2, 4) and "skip" not in a
    assert b["L_K"]["nats"] != whole["L_K"]["nats"]
    for name, r in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    run(["--merge", str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--json"])
    merged = json.loads(capsys.readouterr().out)
    assert merged["images"] == 6 and merged["pieces"] == [[0, 4], [4, 6]]
    for key in ("L_1", "L_K"):
        for q in ("nats", "bits_per_dim", "stderr_nats"):
            assert merged[key][q] == pytest.approx(whole[key][q], rel=1e-9), (key, q)
    assert merged["kl_per_latent"] == pytest.approx(whole["kl_per_latent"], rel=1e-6)
    with pytest.raises(SystemExit, match="overlap"):
        run(["--merge", str(tmp_path / "a.json"), str(tmp_path / "a.json")])
    (tmp_path / "c.json").write_text(json.dumps({**b, "K": 8}))
    with pytest.raises(SystemExit, match="differ in \\['K'\\]"):
        run(["--merge", str(tmp_path / "a.json"), str(tmp_path / "c.json")])
    for bad in (["--skip", "2"], ["--skip", "4", "--ood", "mnist"]):   # not a batch's start; not with --ood
        with pytest.raises(SystemExit):
            run(["--weights", str(saved / "weights"), "--data", "folder", "--batch-size", "4", *bad])


def ood_folder(root) -> str:
    """Images unlike the valid PNGs (random 8x8 colours): flat ones and 16x16 noise to be resized."""
    from PIL import Image
    if not root.is_dir():
        root.mkdir()
        for i, c in enumerate([(0, 0, 0), (255, 255, 255), (128, 0, 0)]):
            Image.new("RGB", (8, 8), c).save(root / f"flat{i}.png")
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(root / "noise.png")
        (root / "notes.txt").write_text("not an image")
    return str(root)


def test_cli_ood_folder_detector_and_reference(saved, tmp_path, monkeypatch, capsys):
    ref_path = tmp_path / "ref" / "reference.json"
    ood = ood_folder(saved / "ood")
    r = cli(saved, tmp_path, monkeypatch, capsys, "--iw", "2", "--ood", "folder", "--ood-dir", ood,
            "--reference", str(ref_path))
    a = r["ood"]["auroc"]
    assert r["ood"]["images"] == 4 and set(a["L_gt_k"]) == set(a["LLR_gt_k"]) == {"1", "2"}
    assert all(0 <= v <= 1 for d in (a["L_gt_k"], a["LLR_gt_k"]) for v in d.values())
    d = r["detector"]
    assert {"auroc", "flagged_in", "flagged_ood", "k", "K", "alpha", "reference"} <= set(d)
    assert d["K"] == 2 and d["alpha"] == 0.05 and d["reference"].startswith("built from 6")  # no reference.json
    assert d["flagged_in"] in [i / 6 for i in range(7)] and d["flagged_ood"] in [i / 4 for i in range(5)]
    ref = json.loads(ref_path.read_text())
    assert {"format_version", "split", "images", "K", "L_gt_0", "L_gt_k", "LLR_gt_k", "bpd", "detector"} <= set(ref)
    assert ref["format_version"] == 3 and ref["prior"] == "sample" and ref["split"] == "valid" and ref["images"] == 6 and ref["K"] == 2
    for k in ("1", "2"):
        llr = np.array(ref["L_gt_0"]) - np.array(ref["L_gt_k"][k])
        assert np.allclose(llr, ref["LLR_gt_k"][k], atol=1e-3)
    assert np.allclose(ref["bpd"], -np.array(ref["L_gt_0"]) / (192 * np.log(2)), rtol=1e-5)


def test_cli_detector_uses_a_matching_reference_only(saved, tmp_path, monkeypatch, capsys):
    """The weights' reference.json serves the detector when its K is --iw (and its prior --prior);
    another K or prior rebuilds one."""
    import shutil
    weights = tmp_path / "w"
    shutil.copytree(saved / "weights", weights)
    model = live_model(tiny_config())
    build_reference(model, images(model.config, 20, seed=3), [1, 2], 1, k=2).write(weights)
    ood = ood_folder(saved / "ood")
    base = ["--weights", str(weights), "--data", "folder", "--data-dir", str(saved / "images"), "--split",
            "valid", "--json", "--no-progress", "--ood", "folder", "--ood-dir", ood]
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    d = run([*base, "--iw", "1"])["detector"]
    assert d["reference"].endswith("reference.json") and d["reference_images"] == 20 and d["k"] == 2
    d = run([*base, "--iw", "2"])["detector"]
    assert d["reference"].startswith("built from 6") and d["K"] == 2 and d["k"] == 2
    assert "K=1" in capsys.readouterr().err
    r = run([*base, "--iw", "1", "--prior", "mode"])       # the other statistic: rebuilt, and said so
    assert r["prior"] == "mode" and r["detector"]["prior"] == "mode" and r["detector"]["reference"].startswith("built")
    assert "made with prior=sample" in capsys.readouterr().err
    r = run([*base, "--iw", "1", "--detector-k", "2", "1"])   # several k: the same reference, Bonferroni over all
    d = r["detector"]
    assert d["reference"].endswith("reference.json") and d["k"] == [1, 2] and set(d["auroc_llr_two_sided"]) == {"1", "2"}
    d = run([*base, "--iw", "1", "--complexity", "png"])["detector"]   # bits/dim - PNG bits/dim as well
    assert d["complexity"] == ["png"] and 0 <= d["auroc_complexity_two_sided"]["png"] <= 1 and d["reference"].endswith("reference.json")
    assert d["combine"] == "bonferroni"
    d = run([*base, "--iw", "1", "--complexity", "png", "jpeg2000", "--combine", "density"])["detector"]  # both, jointly
    assert d["complexity"] == ["png", "jpeg2000"] and set(d["auroc_complexity_two_sided"]) == {"png", "jpeg2000"}
    assert d["combine"] == "density" and 0 <= d["auroc"] <= 1 and 0 <= d["flagged_in"] <= 1
    data = json.loads((weights / "reference.json").read_text())
    del data["compressed_bpd"]                                          # a reference made before the sizes were kept
    (weights / "reference.json").write_text(json.dumps(data))
    d = run([*base, "--iw", "1", "--complexity", "jpeg2000"])["detector"]
    assert d["complexity"] == ["jpeg2000"] and d["reference"].startswith("built")
    assert "it has no jpeg2000 sizes" in capsys.readouterr().err
    assert run([*base, "--iw", "1"])["detector"]["complexity"] is None
    with pytest.raises(SystemExit):
        run([*base[:-2], "--iw", "1"])  # --ood folder without --ood-dir


def test_cli_ood_defaults_to_the_references_K_and_ks(saved, tmp_path, monkeypatch, capsys):
    """`biva-evaluate --ood ...` without --iw or --ks scores with the shipped reference's K and its
    ks (not K = 1000 and every k, which would rebuild a reference for hours); with --ks given, those."""
    import shutil
    weights = tmp_path / "w"
    shutil.copytree(saved / "weights", weights)
    model = live_model(tiny_config())
    build_reference(model, images(model.config, 12, seed=4), [2], 3, k=2).write(weights)
    base = ["--weights", str(weights), "--data", "folder", "--data-dir", str(saved / "images"), "--split",
            "valid", "--json", "--no-progress", "--ood", "folder", "--ood-dir", ood_folder(saved / "ood")]
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    r = run(base)
    assert r["K"] == 3 and r["detector"]["K"] == 3 and r["detector"]["reference"].endswith("reference.json")
    assert list(r["ood"]["auroc"]["LLR_gt_k"]) == ["2"]
    r = run([*base, "--ks", "1", "2"])
    assert r["K"] == 3 and sorted(r["ood"]["auroc"]["LLR_gt_k"]) == ["1", "2"]


def test_reference_direct_call():
    """build_reference on tensors: one entry per image; an AUROC between two sets is in [0, 1]."""
    model = live_model(tiny_config())
    ref = build_reference(model, images(model.config, 5), [1, 2], 1)
    assert len(ref.l0) == len(ref.bpd) == 5 and ref.images == 5
    flat = build_reference(model, torch.full((5, 3, 8, 8), 0.5), [1, 2], 1)
    assert 0.0 <= auroc(-flat.l0, -ref.l0) <= 1.0
    back = Reference.read(ref.write(Path(tempfile.mkdtemp())))
    np.testing.assert_array_equal(back.llr[2], ref.llr[2])


def test_other_sets_are_adapted_to_the_model():
    """A face model scores grey digits (repeated to RGB, resized) and a digit model RGB images."""
    from biva_core.data.images import adapt
    grey = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    rgb = adapt(grey, (3, 64, 64))
    assert rgb.shape == (3, 3, 64, 64) and (rgb[:, 0] == rgb[:, 2]).all()
    back = adapt(np.repeat(grey, 3, axis=1), (1, 28, 28))
    assert np.abs(back.astype(int) - grey).max() <= 1


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
    bern = ModelConfig(image_shape=(1, 28, 28), levels=levels, likelihood="bernoulli")
    x = load_images("mnist", "test", str(tmp_path), bern)
    assert torch.equal(x, torch.from_numpy((test[:, None] > 127).astype(np.float32)))
    dmol = ModelConfig(image_shape=(1, 28, 28), levels=levels, likelihood="dmol", mixtures=2)
    assert torch.allclose(load_images("mnist", "test", str(tmp_path), dmol, limit=2) * 255,
                          torch.from_numpy(test[:2, None].astype(np.float32)))


def test_one_sample_scores_are_the_elbo():
    """With K = 1 and the same seed, L^{>0} draws the same z as the ELBO (the CLI relies on it)."""
    model = live_model(tiny_config())
    x = images(model.config, 3)
    s = model.scores(x, [1], K=1, seed=7)
    assert torch.equal(s.l0, model.elbo(x, seed=7)["elbo"])


def test_classify_reports_the_error_of_argmax_q_y_against_the_labels(tmp_path, monkeypatch, capsys):
    """--classify on a model with classes: "error" is the share of test images whose argmax
    q(y | x) is not their label; a model without classes is refused."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    labels = {}
    for stem, n in (("train", 12), ("t10k", 20)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = labels[stem] = rng.integers(0, 3, n).astype(np.uint8)
        (root / f"{stem}-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + struct.pack(">3I", n, 28, 28) + x.tobytes())
        (root / f"{stem}-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + struct.pack(">I", n) + y.tobytes())
    levels = (LevelConfig(blocks=1, channels=8, latent=4, stride=2, dense=True),
              LevelConfig(blocks=1, channels=8, latent=3, stride=2, dense=True))
    cfg = ModelConfig(image_shape=(1, 28, 28), levels=levels, likelihood="bernoulli", classes=3)
    model = live_model(cfg)
    save_pretrained(model, tmp_path / "w")
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    args = ["--weights", str(tmp_path / "w"), "--data", "mnist", "--data-dir", str(tmp_path), "--split", "test",
            "--iw", "2", "--json", "--no-progress", "--classify"]
    run(args)
    report = json.loads(capsys.readouterr().out)
    x = load_images("mnist", "test", str(tmp_path), model.config)
    want = float((model.classify(x).argmax(-1).numpy() != labels["t10k"]).mean())
    assert report["error"] == pytest.approx(want, abs=1e-12) and report["images"] == 20
    assert np.isfinite(report["L_K"]["nats"])
    save_pretrained(live_model(cfg.replace(classes=0)), tmp_path / "plain")
    with pytest.raises(SystemExit, match="needs a model with classes"):
        run([*args[:1], str(tmp_path / "plain"), *args[2:]])
