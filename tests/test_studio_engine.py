"""The studio engine on tiny models: each action equals the model operation it wraps (same seed,
same pixels), bad input is refused with a message naming the file, and every image mode loads."""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import params
from studio.__main__ import main
from studio.engine import Studio
from studio.models import discover
from biva_core.data.prepare import CELEBA_ALIGNED, MAX_PIXELS, crop_box, prepare
from studio.params import default_ks, derive, parse_ks, parse_temperature
from biva_core.detect import Detector, Reference, compressed_bits_per_dim

from studio_weights import make_weights, tensor_of_png, write_bad_files

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "celeba64"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def studio(dirs, tmp_path_factory) -> Studio:
    s = Studio([dirs[n] for n in ("celeba_tiny", "gray_tiny", "binary_tiny", "broken")], strict=False,
               workdir=tmp_path_factory.mktemp("out"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def save(image: Image.Image, path: Path) -> str:
    image.save(path)
    return str(path)


def cell(grid: Image.Image, x: int, y: int, size: int, step: int) -> torch.Tensor:
    """The image drawn at (x, y) as size x size cells enlarged by `step`: (C, size, size) in [0, 1]."""
    a = np.asarray(grid.convert("RGB"), np.float32)
    a = a[y + step // 2:y + size * step:step, x + step // 2:x + size * step:step]  # one pixel per cell
    return torch.from_numpy(a / 255).permute(2, 0, 1)


# ---------------------------------------------------------------------- loading


def test_loads_each_model_once_and_reports_broken_ones(studio, dirs):
    assert studio.names == ["celeba_tiny", "gray_tiny", "binary_tiny", "broken"]
    assert studio.entries["celeba_tiny"].face and not studio.entries["gray_tiny"].face
    assert "model.safetensors" in studio.entries["broken"].error
    with pytest.raises(ValueError, match="'broken' could not be loaded"):
        studio.sample("broken", 2)
    with pytest.raises(ValueError, match="unknown model 'nope'.*celeba_tiny"):
        studio.sample("nope", 2)


def test_strict_loading_names_the_folder(dirs, tmp_path):
    with pytest.raises(ValueError, match="cannot load weights .*broken"):
        Studio([dirs["broken"]])
    with pytest.raises(ValueError, match="no such folder"):
        Studio([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no model to serve"):
        Studio([])
    with pytest.raises(ValueError, match="not a torch device"):
        Studio([dirs["gray_tiny"]], device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Studio([dirs["gray_tiny"]], device="cuda")


def test_discover_puts_face_models_first(tmp_path):
    for name in ("mnist", "celeba128", "celeba64", "faces_x", "cifar", "no_config"):
        (tmp_path / name).mkdir()
        if name != "no_config":
            (tmp_path / name / "config.json").write_text("{}")
    assert [p.name for p in discover(tmp_path)] == ["celeba64", "celeba128", "faces_x", "cifar", "mnist"]
    assert discover(tmp_path / "absent") == []


def test_cli_errors_exit_2_with_a_message(dirs, tmp_path, capsys, monkeypatch):
    assert main(["--weights", str(tmp_path / "missing")]) == 2
    assert "weights folder not found" in capsys.readouterr().err
    assert main(["--weights", str(dirs["broken"])]) == 2
    assert "cannot load weights" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    assert main([]) == 2
    assert "no model under" in capsys.readouterr().err


# ---------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("kind, message", [("text", "not an image"), ("truncated", "corrupt or truncated"),
                                           ("empty", "empty"), ("bomb", "too large"),
                                           ("garbage_jpg", "corrupt or truncated|not an image")])
def test_bad_files_are_refused_with_the_file_name(studio, bad, kind, message):
    config = studio.entries["celeba_tiny"].model.config
    with pytest.raises(ValueError, match=message) as err:
        prepare(bad[kind], config, face=True)
    assert str(err.value).startswith(bad[kind].name)


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 100, 100 / 255), ("I;16", 32896, 128 / 255), ("RGBA", (0, 0, 0, 0), 1.0), ("LA", (0, 0), 1.0),
    ("P", 7, None), ("1", 1, 1.0), ("CMYK", (0, 0, 0, 0), 1.0), ("RGB", (10, 20, 30), None)])
def test_every_image_mode_becomes_a_model_input(studio, tmp_path, mode, value, expected):
    if mode == "I;16":
        image = Image.fromarray(np.full((12, 12), value, np.uint16))
    else:
        image = Image.new(mode, (12, 12), value)
    path = save(image, tmp_path / f"img.{'tif' if mode == 'CMYK' else 'png'}")
    for name in ("celeba_tiny", "gray_tiny", "binary_tiny"):
        config = studio.entries[name].model.config
        p = prepare(path, config, face=False)
        assert p.x.shape == config.image_shape and 0 <= p.x.min() and p.x.max() <= 1
        if expected is not None and name == "celeba_tiny":
            assert torch.allclose(p.x, torch.full_like(p.x, expected), atol=1 / 255)
        if name == "binary_tiny":
            assert set(p.x.unique().tolist()) <= {0.0, 1.0}


def test_crop_rules():
    assert crop_box(CELEBA_ALIGNED, (64, 64), face=True)[0] == (15, 40, 163, 188)
    assert crop_box(CELEBA_ALIGNED, (64, 64), face=False)[0] == (0, 20, 178, 198)
    assert crop_box((64, 64), (64, 64), face=True) == ((0, 0, 64, 64), "already the model's size: used as it is")
    assert crop_box((300, 100), (8, 8), face=False)[0] == (100, 0, 200, 100)


# ---------------------------------------------------------------------- actions


@pytest.mark.parametrize("n", [5, 10])
def test_sample_equals_the_model_with_derived_seeds(studio, n):
    model = studio.entries["celeba_tiny"].model
    r = studio.sample("celeba_tiny", n, "0.7", 11)
    expected = torch.cat([model.sample(min(8, n - s), temperature=0.7, seed=derive(11, c))
                          for c, s in enumerate(range(0, n, 8))])
    got = torch.stack([tensor_of_png(p) for p in r.paths])
    assert torch.allclose(got, expected, atol=1e-6)
    again = studio.sample("celeba_tiny", n, "0.7", 11)
    assert [Path(p).read_bytes() for p in again.paths] == [Path(p).read_bytes() for p in r.paths]
    with zipfile.ZipFile(r.archive) as z:
        names = z.namelist()
        assert len(names) == n + 2 and json.loads(z.read("settings.json"))["seed"] == 11


def test_sample_arguments(studio):
    L = studio.entries["celeba_tiny"].L
    r = studio.sample("celeba_tiny", 2, ",".join(["0.5"] * L), None)
    assert 0 <= r.seed < 2 ** 32 and r.temperature == [0.5] * L
    assert studio.sample("binary_tiny", 3, 1.0, 0).paths
    for args, message in [((0,), "count"), ((65,), "count"), ((2.5,), "count"), ((2, "0.5, 0.5"), "one per level"),
                          ((2, "hot"), "temperature"), ((2, "-1"), r"\(0, 10\]"), ((2, "1", -3), "seed")]:
        with pytest.raises(ValueError, match=message):
            studio.sample("celeba_tiny", *args)


def test_reconstruct_shows_input_and_reconstruction_and_skips_bad_files(studio, bad, tmp_path):
    entry = studio.entries["celeba_tiny"]
    path = save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)), tmp_path / "a.png")
    r = studio.reconstruct("celeba_tiny", [path, str(bad["text"])])
    assert len(r.panels) == 1 and r.skipped and "notes.txt" in r.skipped[0]
    x = prepare(path, entry.model.config, face=True).x[None]
    panel = Image.open(r.panels[0][0])
    got = cell(panel, panel.width - 6 - 128, 6, 8, 16)  # the last cell: the reconstruction, 16x enlarged
    assert torch.allclose(got, entry.model.reconstruct(x)[0], atol=1e-6)
    assert r.rows[0][3] == round(float(entry.model.elbo(x, seed=derive(0, 0))["bpd"][0]), 4)
    assert r.rows[0][2].startswith("centre crop 20x20")
    with pytest.raises(ValueError, match="no image given"):
        studio.reconstruct("celeba_tiny", [])
    with pytest.raises(ValueError, match="truncated.png: corrupt"):
        studio.reconstruct("celeba_tiny", [str(bad["truncated"])])


def test_hierarchy_rows_are_resamples_above_k(studio, tmp_path):
    entry = studio.entries["celeba_tiny"]
    path = save(Image.new("RGB", (8, 8), (200, 120, 40)), tmp_path / "b.png")
    x = prepare(path, entry.model.config, face=True).x[None]
    r = studio.hierarchy("celeba_tiny", path, "0, 2,3", 3, "0.9", 5)
    assert r.ks == [0, 2, 3]
    grid = Image.open(r.grid)
    origin = lambda row, col: (110 + 4 + col * 132, 20 + 4 + row * 132)  # noqa: E731  label, pad, header, 128+4
    recon = entry.model.reconstruct(x)[0]
    for col in (1, 2, 3):  # 8x8 images in cells of 128 pixels: 16 pixels a model pixel
        assert torch.allclose(cell(grid, *origin(0, col), 8, 16), recon, atol=1e-6)
    draws = entry.model.resample(x, 2, 3, temperature=0.9, seed=derive(5, 2))[0]
    for col in (1, 2, 3):
        assert torch.allclose(cell(grid, *origin(1, col), 8, 16), draws[col - 1], atol=1e-6)
    again = studio.hierarchy("celeba_tiny", path, [0, 2, 3], 3, "0.9", 5)
    assert Path(r.grid).read_bytes() == Path(again.grid).read_bytes()
    with pytest.raises(ValueError, match="k must be a whole number from 0 to 3"):
        studio.hierarchy("celeba_tiny", path, "0,4")
    with pytest.raises(ValueError, match="draws per row"):
        studio.hierarchy("celeba_tiny", path, "0", 17)
    with pytest.raises(ValueError, match="no image given"):
        studio.hierarchy("celeba_tiny", None)


def test_mix_goes_from_a_to_b(studio, tmp_path):
    entry = studio.entries["celeba_tiny"]
    a = save(Image.new("RGB", (8, 8), (250, 10, 10)), tmp_path / "a.png")
    b = save(Image.new("RGB", (8, 8), (10, 10, 250)), tmp_path / "b.png")
    grid = Image.open(studio.mix("celeba_tiny", a, b, [0, 3]))
    xa, xb = (prepare(p, entry.model.config, face=True).x[None] for p in (a, b))
    origin = lambda col: (80 + 4 + col * 132, 20 + 4)  # noqa: E731
    assert torch.allclose(cell(grid, *origin(1), 8, 16), entry.model.reconstruct(xa)[0], atol=1e-6)
    assert torch.allclose(cell(grid, *origin(2), 8, 16), entry.model.reconstruct(xb)[0], atol=1e-6)
    with pytest.raises(ValueError, match="no image B given"):
        studio.mix("celeba_tiny", a, None)


def test_interpolation_row_runs_from_a_to_b(studio, tmp_path):
    """At k = 0, temperature 0: the row's first and last steps are the reconstructions of A and B."""
    entry = studio.entries["celeba_tiny"]
    a = save(Image.new("RGB", (8, 8), (250, 10, 10)), tmp_path / "a.png")
    b = save(Image.new("RGB", (8, 8), (10, 10, 250)), tmp_path / "b.png")
    grid = Image.open(studio.interpolate("celeba_tiny", a, b, 0, 4, "0", 1))
    xa, xb = (prepare(p, entry.model.config, face=True).x[None] for p in (a, b))
    origin = lambda col: (110 + 4 + col * 132, 20 + 4)  # noqa: E731
    assert grid.height >= 128 + 20
    assert torch.allclose(cell(grid, *origin(1), 8, 16), entry.model.reconstruct(xa)[0], atol=1e-6)
    assert torch.allclose(cell(grid, *origin(4), 8, 16), entry.model.reconstruct(xb)[0], atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        studio.interpolate("celeba_tiny", a, b, 0, 1)


def test_anomaly_is_the_detector_with_the_reference_and_csv(studio, tmp_path):
    """Each row: the model's scores for that image (seed derived per image) tested by the
    detector against the reference; K must be the reference's; pixel maps come per image."""
    entry = studio.entries["celeba_tiny"]
    noise = [np.random.default_rng(i).integers(0, 255, (8, 8, 3), np.uint8) for i in range(3)]
    paths = [save(Image.fromarray(a), tmp_path / f"{i}.png") for i, a in enumerate(noise)]
    paths.append(save(Image.new("RGB", (8, 8), (128, 128, 128)), tmp_path / "flat.png"))
    r = studio.anomaly("celeba_tiny", paths, 2, 1, 0.05, 4)
    det = Detector(entry.reference, k=2, alpha=0.05)
    for i, row in enumerate(r.rows):
        x = prepare(paths[i], entry.model.config, face=True).x[None]
        s = entry.model.scores(x, [2], K=1, seed=derive(4, i))
        v = det.test([float(s.bpd[0])], [float(s.llr[2][0])])
        assert row[1] == ("ANOMALY" if v.flagged[0] else "typical")
        assert row[2] == float(f"{v.p[0]:.3g}") and row[6] == round(float(s.bpd[0]), 4)
        assert row[7] == round(float(s.llr[2][0]), 1)
    assert "K=1" in r.note and "flagged" in r.note and len(r.maps) == 4
    assert Image.open(r.maps[0][0]).height >= 128
    with open(r.csv) as f:
        table = list(csv.reader(f))
    assert table[0] == r.headers and len(table) == 5
    assert studio.anomaly("celeba_tiny", paths, maps=False).maps == []
    both = studio.anomaly("celeba_tiny", paths, "2, 1", 1, 0.05, 4, maps=False)   # several k: Bonferroni over all
    det = Detector(entry.reference, k=[1, 2], alpha=0.05)
    assert both.headers[4:7] == ["p bits/dim (side)", "p LLR>1 (side)", "p LLR>2 (side)"] and "LLR>1, LLR>2" in both.note
    for i, row in enumerate(both.rows):
        x = prepare(paths[i], entry.model.config, face=True).x[None]
        s = entry.model.scores(x, [1, 2], K=1, seed=derive(4, i))
        v = det.test([float(s.bpd[0])], {k: [float(s.llr[k][0])] for k in (1, 2)})
        assert row[1] == ("ANOMALY" if v.flagged[0] else "typical") and row[2] == float(f"{v.p[0]:.3g}")
        assert row[8:10] == [round(float(s.llr[1][0]), 1), round(float(s.llr[2][0]), 1)]
    # both codecs' complexity statistics, combined by the reference's joint density
    joint = studio.anomaly("celeba_tiny", paths, 2, 1, 0.05, 4, maps=False, complexity="png jpeg2000", combine="density")
    det = Detector(entry.reference, k=2, alpha=0.05, complexity=["png", "jpeg2000"], combine="density")
    assert joint.headers[-1] == "atypicality" and "p bits/dim - jpeg2000 (side)" in joint.headers
    assert "p of their joint density" in joint.note and "bits/dim - png bits/dim, bits/dim - jpeg2000 bits/dim" in joint.note
    for i, row in enumerate(joint.rows):
        x = prepare(paths[i], entry.model.config, face=True).x[None]
        s = entry.model.scores(x, [2], K=1, seed=derive(4, i))
        sizes = {c: compressed_bits_per_dim(x, c).numpy() for c in ("png", "jpeg2000")}
        v = det.test([float(s.bpd[0])], [float(s.llr[2][0])], compressed=sizes)
        assert row[2] == float(f"{v.p[0]:.3g}") and row[-1] == round(float(v.atypicality[0]), 2)
        assert row[1] == ("ANOMALY" if v.flagged[0] else "typical")
    assert Image.open(joint.plot).height > 4 * Image.open(r.plot).height // 2   # five histograms against two
    assert studio.anomaly("celeba_tiny", paths, None, 0, 0.05, 4, maps=False).rows == \
        studio.anomaly("celeba_tiny", paths, list(entry.reference.default_ks), entry.reference.K, 0.05, 4,
                       maps=False).rows          # no k and K = 0: the reference's
    no_ref = studio.anomaly("gray_tiny", paths, 1)
    assert no_ref.rows[0][1] == "n/a" and no_ref.rows[0][2] is None and "reference.json" in no_ref.note
    for args, message in [((0,), "k must"), ((3,), "k must"), (([1, 3],), "k must"), (("1, a",), "whole numbers"),
                          ((1, -1), "K"), ((1, 2), "made with K=1"),
                          ((1, 1, 0.9), "alpha")]:
        with pytest.raises(ValueError, match=message):
            studio.anomaly("celeba_tiny", paths, *args)


def test_model_card_and_latents(studio):
    c = studio.model_card("celeba_tiny")
    params = sum(p.numel() for p in studio.entries["celeba_tiny"].model.parameters())
    assert f"{params:,}" in c.markdown and "40 images of the valid split" in c.markdown
    assert Image.open(c.curves).size == (900, 520) and Image.open(c.kl_plot).size == (60, 40)
    assert [Path(p).name for p in c.samples] == ["samples_t1.0.png"]
    assert json.loads(c.config)["image_shape"] == [3, 8, 8]
    g = studio.model_card("gray_tiny")
    assert g.curves is None and g.kl_plot is None and g.samples == [] and "absent" in g.markdown
    report = studio.model_latents("celeba_tiny")
    n = studio.entries["celeba_tiny"].model.config.n_latents
    assert len(report.rows) == n and "example images" in report.note
    assert all(0 <= row[3] <= row[4] for row in report.rows)
    assert "samples of the model" in studio.model_latents("gray_tiny").note


def test_old_outputs_are_removed_but_the_cached_card_stays(studio, monkeypatch):
    card = studio.model_card("celeba_tiny")
    old = studio.sample("celeba_tiny", 1, "1.0", 0)
    monkeypatch.setattr("studio.engine.KEEP_OUTPUTS_S", -1.0)
    studio.sample("celeba_tiny", 1, "1.0", 0)
    assert not Path(old.archive).exists() and Path(card.curves).is_file()
    assert studio.model_card("celeba_tiny") is card


def test_unreadable_reference_is_reported(dirs, tmp_path):
    import shutil
    folder = Path(shutil.copytree(dirs["celeba_tiny"], tmp_path / "celeba_bad_ref"))
    (folder / "reference.json").write_text('{"bpd": [1, 2]}')
    s = Studio([folder], workdir=tmp_path / "out")
    assert "not a valid reference file" in s.entries["celeba_bad_ref"].reference_error
    assert "unreadable" in s.model_card("celeba_bad_ref").markdown
    assert s.anomaly("celeba_bad_ref", [str(next((ROOT / "studio" / "examples").glob("*.png")))]).rows[0][1] == "n/a"


# ---------------------------------------------------------------------- small pieces


def test_parsers_and_statistics():
    assert default_ks(20) == [0, 1, 2, 4, 7, 10, 12, 15, 18, 20] and default_ks(3) == [0, 1, 2, 3]
    assert parse_ks("3, 1,1", 5) == [1, 3] and parse_ks([0, "2"], 5) == [0, 2]
    with pytest.raises(ValueError, match="at least one k"):
        parse_ks(" , ", 5)
    assert parse_temperature("0.5", 3) == 0.5 and parse_temperature("1,2,3", 3) == [1.0, 2.0, 3.0]
    assert len({derive(1, c) for c in range(100)} | {derive(2, 0)}) == 101
    assert params.check_seed("") >= 0 and params.check_seed(7.0) == 7


def test_reference_file_round_trip(dirs):
    ref = Reference.read(dirs["celeba_tiny"])
    assert ref.images == 40 and sorted(ref.llr) == [1, 2] and len(ref.bpd) == 40
    assert all(abs(a - (b - c)) < 1e-3 for a, b, c in zip(ref.llr[1], ref.l0, ref.lk[1]))
    assert Reference.read(dirs["gray_tiny"]) is None


# ---------------------------------------------------------------------- the shipped model


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="no shipped weights/celeba64")
def test_shipped_celeba64_smoke(tmp_path):
    s = Studio([SHIPPED], workdir=tmp_path)
    r = s.sample("celeba64", 2, "0.8", 0)
    assert Image.open(r.paths[0]).size == (64, 64)
    examples = s.examples("celeba64")
    rec = s.reconstruct("celeba64", examples[-1:])  # the aligned 178x218 JPEG: the CelebA crop
    assert rec.rows[0][1] == "178x218" and "crop box (15, 40, 163, 188)" in rec.rows[0][2]
    assert 3.0 < rec.rows[0][3] < 6.5
    a = s.anomaly("celeba64", examples[:1])
    assert a.rows[0][1] in ("ANOMALY", "typical") and 0 < a.rows[0][2] <= 1


SHIPPED_ALL = sorted(p for p in (ROOT / "weights").glob("*") if (p / "config.json").is_file())


@pytest.mark.parametrize("folder", SHIPPED_ALL, ids=[p.name for p in SHIPPED_ALL])
def test_every_shipped_model_has_in_and_out_of_distribution_examples(folder, tmp_path):
    """Each shipped model offers examples of its own data and out-of-distribution ones, and each
    example prepares into an input of the model's shape."""
    s = Studio([folder], workdir=tmp_path)
    own, every = s.examples(folder.name), s.examples(folder.name, ood=True)
    ood = [e for e in every if Path(e).name.startswith("ood_")]
    assert own and len(ood) >= 2 and not any(Path(e).name.startswith("ood_") for e in own)
    entry = s.entries[folder.name]
    for e in own + ood:
        assert prepare(e, entry.model.config, face=entry.face).x.shape == entry.model.config.image_shape


def test_pixel_budget_per_request_and_the_documented_limit(studio, tmp_path):
    """Five 36 MP uploads (each under the 40 MP limit) exceed the per-request budget before any is
    decoded; a 90 MP image is refused with the 40 MP limit that the README documents."""
    from studio_weights import bomb_png
    from studio.engine import MAX_REQUEST_PIXELS
    big = []
    for i in range(5):
        big.append(tmp_path / f"big{i}.png")
        big[-1].write_bytes(bomb_png(6000, 6000))
    assert 5 * 36e6 > MAX_REQUEST_PIXELS > 4 * 36e6 and 36e6 < MAX_PIXELS
    with pytest.raises(ValueError, match="180 megapixels together; one request takes at most 160"):
        studio.reconstruct("celeba_tiny", [str(p) for p in big])
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png(10_000, 9_000))
    with pytest.raises(ValueError, match="huge.png: image too large .*the limit is 40 megapixels"):
        studio.reconstruct("celeba_tiny", [str(huge)])


def test_seeds_are_whole_numbers_and_the_card_names_no_server_path(studio, dirs):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        studio.sample("celeba_tiny", 2, "0.8", 7.5)
    assert studio.sample("celeba_tiny", 1, "0.8", 7.0).seed == 7
    assert str(dirs["celeba_tiny"]) not in studio.model_card("celeba_tiny").markdown


def test_the_sample_tab_says_how_far_a_model_was_trained(tmp_path, dirs):
    """A model trained a few steps samples near its mean image: the Sample tab's line says so."""
    studio = Studio([dirs["celeba_tiny"], dirs["gray_tiny"]], workdir=tmp_path / "out")
    try:
        early = studio.model_summary("celeba_tiny")          # recorded: step 30, best valid 7.5
        assert "trained 30 steps" in early and "best valid 7.500 bits/dim" in early and "early model" in early
        assert "no training record" in studio.model_summary("gray_tiny")
    finally:
        studio.close()


def test_run_views_tolerate_folders_being_written(tmp_path, dirs):
    """metrics.jsonl with a half-written last line, a run with nothing logged yet, a foreign folder:
    each gives a view or a message, never an exception; runs outside the runs folder are refused."""
    from studio.runs import read_run
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    from conftest import tiny_config
    rows = [{"step": s, "bpd": 5.0 - s / 100, "seconds": 10.0 * s, "images_per_s": 40.0,
             "kl": [0.05, 1.0, 2.0, 3.0, 2.0 * s]} for s in (10, 20, 30)]
    rows.append({"step": 30, "seconds": 300.0, "valid_bpd": 4.5, "raw_valid_bpd": 4.6,
                 "valid_kl": [1.0, 2.0, 3.0, 4.0, 5.0]})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 40, "bp')
    (run / "state").mkdir()
    (run / "state" / "scalars.json").write_text(json.dumps({"step": 30, "train_config": {"steps": 60},
                                                            "model_config": tiny_config().to_dict()}))
    v = read_run(run)
    assert len(v.bpd) == 3 + 2 and set(v.bpd["series"]) == {"train (batch)", "valid, EMA weights", "valid, raw weights"}
    assert list(v.kl["latent"]) == ["z1_bu", "z1_td", "z2_bu", "z2_td", "z3"] and len(v.speed) == 3
    assert "step 30 of 60" in v.status and "best valid 4.5000" in v.status and "h left" in v.status
    # 0.1 steps/s and 30 steps to go (300 s), but a wall budget of 5.25 minutes leaves 15 s; a CPU budget is named
    scalars = json.loads((run / "state" / "scalars.json").read_text())
    scalars["train_config"].update(max_minutes=5.25, max_cpu_minutes=120.4)
    (run / "state" / "scalars.json").write_text(json.dumps(scalars))
    budget = read_run(run).status
    assert "about 0.00 h left" in budget and "stops after 120.4 CPU minutes" in budget, budget
    assert not v.has_weights
    hours, names, kl = v.figure2      # Figure 2: the training batches' KL of every latent, by hours
    assert hours == [10 / 360, 20 / 360, 30 / 360] and names == list(v.kl["latent"]) and kl[2][-1] == 60.0
    (tmp_path / "runs" / "new").mkdir()
    (tmp_path / "runs" / "new" / "metrics.jsonl").write_text("")
    assert "nothing logged yet" in read_run(tmp_path / "runs" / "new").status
    (tmp_path / "runs" / "photos").mkdir()
    assert "not a training run" in read_run(tmp_path / "runs" / "photos").status
    s = Studio([dirs["celeba_tiny"]], workdir=tmp_path / "out", runs=tmp_path / "runs")
    assert {Path(p).name for p in s.runs()} == {"new", "r1"}  # photos/ is not a run
    with pytest.raises(ValueError, match="not a run under runs/"):
        s.run_view(str(tmp_path))
    with pytest.raises(ValueError, match="not a run under runs/"):     # no way out by ..
        s.run_view(str(tmp_path / "runs" / ".." / "elsewhere"))
    # a run kept elsewhere and linked into the runs folder is one of its runs
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(run / "metrics.jsonl", tmp_path / "elsewhere" / "metrics.jsonl")
    (tmp_path / "runs" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    linked = [p for p in s.runs() if Path(p).name == "linked"]
    assert linked and "linked" in s.run_view(linked[0]).status
    with pytest.raises(ValueError, match="no weights yet"):
        s.load_run(str(run))


def test_the_runs_view_shows_the_guards_word_and_no_time_left_for_a_stopped_run(tmp_path):
    """A rollback is shown as a warning, a guard's stop as "Stopped" with its message; a run whose
    log has not moved for 10 minutes shows no time left."""
    import os
    import time as _time
    from studio.runs import read_run
    run = tmp_path / "r"
    run.mkdir()
    rows = [{"step": s, "bpd": 5.0, "seconds": 10.0 * s, "images_per_s": 40.0} for s in (10, 20, 30)]
    rows.append({"step": 33, "seconds": 330.0, "event": "rollback", "restored_step": 20, "message": "restored step 20"})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "state").mkdir()
    (run / "state" / "scalars.json").write_text(json.dumps({"step": 33, "train_config": {"steps": 600}}))
    v = read_run(run)
    assert "**Warning** (1 rollback(s)): restored step 20" in v.status and "h left" in v.status
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 36, "seconds": 360.0, "event": "stopped", "message": "the run cannot learn"}) + "\n")
    assert "**Stopped:** the run cannot learn" in read_run(run).status
    old = _time.time() - 3600
    os.utime(run / "metrics.jsonl", (old, old))
    assert "h left" not in read_run(run).status and "last log 60 min ago" in read_run(run).status


def test_a_model_with_classes_samples_a_row_per_class_and_shows_q_y(tmp_path):
    """Sample draws `count` images of every class (a row each, the same images as model.sample with
    that label); reconstruct and anomaly add q(y | x), its two likeliest classes, to each row."""
    from biva_core import save_pretrained
    from conftest import images, live_model, tiny_config
    model = live_model(tiny_config(kind="bernoulli").replace(classes=3), seed=7)
    s = Studio([save_pretrained(model, tmp_path / "digits_ssl")], workdir=tmp_path / "out")
    try:
        r = s.sample("digits_ssl", 2, "0.7", 5)
        assert len(r.paths) == 6 and [c for _, c in r.gallery] == ["class 0", "class 1", "class 2"]
        for y in range(3):
            want = model.sample(2, temperature=0.7, seed=derive(5, 0, y), label=y)
            got = torch.stack([tensor_of_png(p) for p in r.paths[2 * y:2 * y + 2]])
            assert torch.allclose(got, want, atol=0.51 / 255)                  # Bernoulli means, as 8-bit PNGs
        # one class alone: the same images as among all, in its one row
        one = s.sample("digits_ssl", 2, "0.7", 5, label="2")
        assert [c for _, c in one.gallery] == ["class 2"] and len(one.paths) == 2
        assert all(torch.equal(tensor_of_png(a), tensor_of_png(b)) for a, b in zip(one.paths, r.paths[4:6]))
        # a class row stays readable at the page's width: 16 images in two lines of 8 (as wide as 4 are high)
        big = s.sample("digits_ssl", 16, "0.7", 5)
        row = Image.open(big.class_rows[0][0])
        assert row.width <= 4.1 * row.height and row.height >= 100
        with pytest.raises(ValueError, match="class must be a whole number from 0 to 2"):
            s.sample("digits_ssl", 2, "0.7", 5, label=3)
        x = images(model.config, 1)
        path = str(tmp_path / "one.png")
        Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(path)
        rec = s.reconstruct("digits_ssl", [path])
        probs = model.classify(x)[0]
        best = int(probs.argmax())
        assert rec.headers[-1] == "class: q(y | x)" and rec.rows[0][-1].startswith(f"{best} ({float(probs[best]):.2f})")
        an = s.anomaly("digits_ssl", [path], k=1, K=1, maps=False)
        assert an.headers[-1] == "class: q(y | x)" and an.rows[0][-1] == rec.rows[0][-1]
    finally:
        s.close()


def test_the_runs_view_draws_its_pictures_once_per_log_line(tmp_path, dirs):
    """The curves and Figure 2 are drawn into the studio's folder, kept while the log is unchanged,
    and replaced (not added to) when the run logs again."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    rows = [{"step": s, "bpd": 5.0 - s / 100, "seconds": 10.0 * s, "kl": [0.05, 1.0, 2.0]} for s in (10, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    studio = Studio([dirs["celeba_tiny"]], workdir=tmp_path / "out", runs=tmp_path / "runs")
    try:
        first = studio.run_view(str(run)).pictures
        assert set(first) == {"curves", "figure2"} and all(Image.open(p).width > 400 for p in first.values())
        assert studio.run_view(str(run)).pictures == first                       # nothing new: the same files
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 30, "bpd": 4.6, "seconds": 300.0, "kl": [0.05, 1.0, 2.0]}) + "\n")
        os.utime(run / "metrics.jsonl", ns=(time.time_ns(), time.time_ns() + 10**9))
        again = studio.run_view(str(run)).pictures
        assert again != first and not any(Path(p).exists() for p in first.values())
        assert sorted(p.name.split("-")[2] for p in (tmp_path / "out" / "kept").glob("run-r1-*.png")) == ["curves", "figure2"]
    finally:
        studio.close()
