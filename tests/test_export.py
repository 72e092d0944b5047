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
from biva_core.eval.export import TEMPERATURES, export, main, resample_ks

from conftest import images, live_model, tiny_config

ROOT = Path(__file__).resolve().parents[1]


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
    from biva_core.io.plots import grid_image
    model = live_model(tiny_config(kind="bernoulli").replace(classes=3), seed=2)
    out = export(save_pretrained(model, tmp_path / "run"), tmp_path / "shipped", log=lambda m: None)
    grid = Image.open(out / "samples_t0.8.png")
    assert grid.size == (2 + 8 * (8 + 2), 2 + 3 * (8 + 2))
    shipped = load_pretrained(out)
    want = shipped.sample(24, temperature=0.8, seed=0, label=[c for c in range(3) for _ in range(8)])
    assert grid.convert("L").tobytes() == grid_image(want, nrow=8).convert("L").tobytes()


def test_a_continued_run_extends_the_shipped_record(tmp_path: Path) -> None:
    """--continues: the earlier rows up to the exported step, then the run's counted on from it;
    results.json keeps its history, gains the run, and its old test eval moves to that entry."""
    model = live_model(tiny_config(), seed=5)
    earlier = save_pretrained(model, tmp_path / "earlier", training={"step": 20, "seconds": 100.0})
    (earlier / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 10, "seconds": 50.0, "valid_bpd": 8.0, "raw_valid_bpd": 8.1},
        {"step": 20, "seconds": 100.0, "valid_bpd": 7.0, "raw_valid_bpd": 7.2},
        {"step": 25, "seconds": 125.0, "valid_bpd": 6.9}]))  # after the exported step: dropped
    (earlier / "results.json").write_text(json.dumps({"train": {"hours_total": 1.0}, "eval": {"bpd": 7.1}}))
    run = save_pretrained(model, tmp_path / "run", training={"step": 5, "seconds": 36.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 5, "seconds": 36.0, "loss": 1.0},
        {"step": 5, "seconds": 36.0, "valid_bpd": 6.5, "raw_valid_bpd": 6.6}]))

    out = export(run, tmp_path / "out", continues=earlier, command="train.py --init earlier", log=lambda m: None)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["seconds"]) for r in rows] == [(10, 50.0), (20, 100.0), (25, 136.0), (25, 136.0)]
    results = json.loads((out / "results.json").read_text())
    assert "eval" not in results
    (entry,) = results["train"]["continued"]
    assert entry["from_step"] == 20 and entry["steps"] == 5 and entry["seconds"] == 36.0
    assert entry["eval_before"] == {"bpd": 7.1} and entry["valid_bpd"] == {"25": [6.5, 6.6]}
    assert entry["command"] == "train.py --init earlier"
    assert results["train"]["hours_total"] == pytest.approx(1.01)
    info = load_pretrained(out).training_info
    assert (info["step_total"], info["seconds_total"], info["continues"]) == (25, 136.0, str(earlier))
    assert Image.open(out / "valid_curve.png").size == (900, 520)
    with pytest.raises(ValueError, match="not --out"):
        export(run, earlier, continues=earlier, log=lambda m: None)


def test_a_resumed_copy_of_the_exported_run_is_not_counted_twice(tmp_path: Path) -> None:
    """--from-step: the run resumed a copy of the run `earlier` was exported from (at its step 20),
    so its rows up to 20 are earlier's already; only the later ones extend the record."""
    model = live_model(tiny_config(), seed=6)
    earlier = save_pretrained(model, tmp_path / "earlier", training={"step": 20, "seconds": 100.0})
    (earlier / "metrics.jsonl").write_text(json.dumps({"step": 20, "seconds": 100.0, "valid_bpd": 7.0}) + "\n")
    (earlier / "results.json").write_text(json.dumps({"train": {"hours_total": 1.0}}))
    run = save_pretrained(model, tmp_path / "run", training={"step": 30, "seconds": 172.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 20, "seconds": 100.0, "valid_bpd": 7.0},
        {"step": 20, "seconds": 112.0, "best_valid_bpd": 7.0},  # the earlier run's stop
        {"step": 30, "seconds": 172.0, "valid_bpd": 6.0, "raw_valid_bpd": 6.1}]))

    out = export(run, tmp_path / "out", continues=earlier, from_step=20, log=lambda m: None)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["seconds"]) for r in rows] == [(20, 100.0), (30, 160.0)]
    (entry,) = json.loads((out / "results.json").read_text())["train"]["continued"]
    assert (entry["from_step"], entry["steps"], entry["seconds"], entry["valid_bpd"]) == (20, 10, 60.0, {"30": [6.0, 6.1]})
    info = load_pretrained(out).training_info
    assert (info["step_total"], info["seconds_total"]) == (30, 160.0)
    with pytest.raises(ValueError, match="no row at or before"):
        export(run, tmp_path / "out2", continues=earlier, from_step=5, log=lambda m: None)


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
    from biva_core.detect import Reference
    files = sorted(folder.glob("model*.safetensors"))
    assert files and all(f.stat().st_size <= 16 * 2**20 for f in files)
    assert all(t.dtype == torch.float16 for f in files for t in load_file(f).values() if t.is_floating_point())
    model = load_pretrained(folder)
    ref = Reference.read(folder)
    assert ref is not None and ref.images >= 100 and set(ref.default_ks) <= set(ref.llr)
    assert set(ref.ks) <= set(range(1, model.config.L))
    assert (folder / "metrics.jsonl").stat().st_size > 0
    assert (folder / "samples_t0.8.png").is_file() and (folder / "kl_per_latent.png").is_file()


def test_the_model_card_counts_the_whole_continued_record(tmp_path: Path) -> None:
    """The studio's Model tab shows the steps and seconds of all of the training, not the last run's."""
    from studio.card import card
    model = live_model(tiny_config(), seed=5)
    folder = save_pretrained(model, tmp_path / "w", training={"step": 5, "seconds": 36.0,
                                                            "step_total": 25, "seconds_total": 136.0})
    c = card("w", folder, load_pretrained(folder), "no reference", tmp_path / "card")
    assert "step 25, 136 s" in c.markdown


def test_an_export_warns_when_its_reference_is_too_small_to_flag_anything(tmp_path: Path) -> None:
    """10 valid images give the spec's detector (m = 2 statistics) a smallest p of 4/11 = 0.36 > alpha:
    the export says so and how many it needs; the detector's count is the least that can flag."""
    from biva_core.detect import Detector, Reference
    model = live_model(tiny_config(), seed=5)
    run = save_pretrained(model, tmp_path / "run", training={"step": 1})
    x = images(tiny_config(), 11, seed=1)
    said = []
    out = export(run, tmp_path / "small", test_image=x[:1], valid_images=x[1:], draws=2, log=said.append)
    det = Detector(Reference.read(out))
    assert det.smallest_p == pytest.approx(min(1.0, 2 * det.statistics / 11))
    warning = [m for m in said if m.startswith("WARNING")]
    assert len(warning) == 1 and f"it needs at least {det.images_needed}" in warning[0]
    n = det.images_needed
    assert 2 * det.statistics / (n + 1) < det.alpha <= 2 * det.statistics / n
    big = export(run, tmp_path / "big", test_image=x[:1], valid_images=images(tiny_config(), n, seed=2), draws=2,
                 log=said.append)
    assert len([m for m in said if m.startswith("WARNING")]) == 1 and Detector(Reference.read(big)).smallest_p < 0.05


def test_no_shipped_folder_names_a_path_of_the_machine_it_was_made_on():
    """config.json, results.json and the model card speak of runs/NAME, not /work/... or /tmp/..."""
    import re
    bad = []
    for folder in sorted((ROOT / "weights").iterdir()):
        for name in ("config.json", "results.json", "README.md", "reference.json"):
            path = folder / name
            if path.is_file() and re.search(r'"/(work|tmp|root|home)/|\s/(work|tmp|root|home)/', path.read_text()):
                bad.append(f"{folder.name}/{name}")
    assert not bad, bad
