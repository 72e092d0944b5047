"""A run's best weights -> a shipped folder: fp16 shards that load back as the same model (up to
fp16 rounding), the pictures, the resample grid's layout and a reference the studio can read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from biva_core import load_pretrained, save_pretrained
from biva_core.export import TEMPERATURES, export, main, resample_ks

from conftest import images, live_model, tiny_config


def test_export_writes_a_folder_the_studio_loads(tmp_path: Path) -> None:
    model = live_model(tiny_config(), seed=5)
    run = save_pretrained(model, tmp_path / "run", training={"step": 11, "dataset": "folder"})
    (run / "metrics.jsonl").write_text('{"step": 11, "valid_bpd": 7.5}\n')
    x = images(tiny_config(), 9, seed=1)
    out = export(run, tmp_path / "shipped", test_image=x[:1], valid_images=x[1:], draws=3, log=lambda m: None)

    for f in out.glob("model*.safetensors"):
        assert all(t.dtype == torch.float16 for t in load_file(f).values() if t.is_floating_point())
    loaded = load_pretrained(out)
    assert loaded.training_info["step"] == 11 and loaded.training_info["exported_from"] == str(run)
    rounded = live_model(tiny_config(), seed=5)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert torch.equal(loaded.elbo(x, seed=0)["elbo"], rounded.elbo(x, seed=0)["elbo"])

    assert (out / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    for t in TEMPERATURES:  # 16 samples of 8x8 in two rows of 8, 2-px gaps
        assert Image.open(out / f"samples_t{t:.1f}.png").size == (2 + 8 * (8 + 2), 2 + 2 * (8 + 2))
    ks = json.loads((out / "resample_grid.json").read_text())["rows_k"]
    assert ks == resample_ks(model.config.L) and ks[0] == 0 and ks[-1] == model.config.L
    w, h = Image.open(out / "resample_grid.png").size
    assert (w, h) == (2 + 4 * (8 + 2), 2 + len(ks) * (8 + 2))  # draws + 1 columns, a row per k, 2-px gaps

    ref = json.loads((out / "reference.json").read_text())
    assert ref["images"] == 8 and len(ref["bpd"]) == 8
    assert set(ref["L_gt_k"]) == {str(k) for k in range(1, model.config.L)}


def test_a_model_with_classes_exports_a_sample_row_per_class(tmp_path: Path) -> None:
    """Row c of the grid is 8 samples of class c: the same images as sampling with that label."""
    from biva_core.plots import grid_image
    model = live_model(tiny_config(kind="bernoulli").replace(classes=3), seed=2)
    out = export(save_pretrained(model, tmp_path / "run"), tmp_path / "shipped", log=lambda m: None)
    grid = Image.open(out / "samples_t0.8.png")
    assert grid.size == (2 + 8 * (8 + 2), 2 + 3 * (8 + 2))
    shipped = load_pretrained(out)
    want = shipped.sample(24, temperature=0.8, seed=0, label=[c for c in range(3) for _ in range(8)])
    assert list(grid.convert("L").getdata()) == list(grid_image(want, nrow=8).convert("L").getdata())


def test_export_cli_names_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run: .*no such folder"):
        main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])


def test_resample_ks_spans_the_hierarchy() -> None:
    ks = resample_ks(20)
    assert ks[:4] == [0, 1, 2, 3] and ks[-1] == 20 and len(ks) == len(set(ks)) and ks == sorted(ks)


SHIPPED = sorted(p for p in (Path(__file__).parents[1] / "weights").glob("*") if (p / "config.json").is_file())


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_folders_are_complete(folder: Path) -> None:
    """Every shipped model: fp16 shards of at most 16 MiB that load, a reference of at least 100
    valid images the studio reads, the training log and the pictures the README points at."""
    from biva_core.detector import Reference
    files = sorted(folder.glob("model*.safetensors"))
    assert files and all(f.stat().st_size <= 16 * 2**20 for f in files)
    assert all(t.dtype == torch.float16 for f in files for t in load_file(f).values() if t.is_floating_point())
    model = load_pretrained(folder)
    ref = Reference.read(folder)
    assert ref is not None and ref.images >= 100 and ref.default_k in ref.llr
    assert set(ref.ks) <= set(range(1, model.config.L))
    assert (folder / "metrics.jsonl").stat().st_size > 0
    assert (folder / "samples_t0.8.png").is_file() and (folder / "kl_per_latent.png").is_file()
