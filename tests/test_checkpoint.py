"""save -> load gives the same model (one file, shards, half-precision storage), and every broken
folder fails with a CheckpointError that names the file at fault."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biva_core import BIVA, load_pretrained, save_pretrained
from biva_core.io.checkpoint import CONFIG, INDEX, SINGLE, CheckpointError, read_config, warm_start

from conftest import images, live_model, tiny_config


@pytest.fixture(scope="module")
def model() -> BIVA:
    return live_model(tiny_config(), seed=3)


def outputs(model: BIVA, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"elbo": model.elbo(x, seed=0)["elbo"], "sample": model.sample(3, seed=1),
            "resample": model.resample(x[:1], 2, 2, seed=2), "reconstruct": model.reconstruct(x)}


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("model-*-of-*.safetensors"))


@pytest.mark.parametrize("max_shard_mb", [None, 0.1])
def test_save_load_gives_identical_outputs(model: BIVA, tmp_path: Path, max_shard_mb: float | None) -> None:
    out = save_pretrained(model, tmp_path, training={"step": 7}, max_shard_mb=max_shard_mb)
    if max_shard_mb is None:
        assert (out / SINGLE).is_file() and not (out / INDEX).exists() and not shards(out)
    else:
        files = shards(out)
        assert len(files) >= 3 and not (out / SINGLE).exists()
        weight_map = json.loads((out / INDEX).read_text())["weight_map"]
        assert set(weight_map) == set(model.state_dict())
        assert set(weight_map.values()) == {f.name for f in files}
        assert all(f.stat().st_size <= 0.1 * 2 ** 20 for f in files)  # the whole file, header included
    loaded = load_pretrained(out)
    assert loaded.config == model.config and loaded.training_info == {"step": 7}
    assert not loaded.training
    ref = model.state_dict()
    for name, t in loaded.state_dict().items():
        assert t.dtype == ref[name].dtype and torch.equal(t, ref[name]), name
    x = images(model.config, 2, seed=1)
    want, got = outputs(model, x), outputs(loaded, x)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_resave_replaces_shards_with_one_file_and_back(model: BIVA, tmp_path: Path) -> None:
    save_pretrained(model, tmp_path, max_shard_mb=0.1)
    save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, SINGLE]
    save_pretrained(model, tmp_path, max_shard_mb=0.1)
    assert not (tmp_path / SINGLE).exists() and (tmp_path / INDEX).is_file()
    x = images(model.config, 2, seed=2)
    assert torch.equal(load_pretrained(tmp_path).elbo(x, seed=0)["elbo"], model.elbo(x, seed=0)["elbo"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage_loads_upcast(model: BIVA, tmp_path: Path, dtype: torch.dtype) -> None:
    save_pretrained(model, tmp_path, dtype=dtype, max_shard_mb=0.1)
    stored = {}
    for f in shards(tmp_path):
        stored.update(load_file(f))
    assert all(t.dtype == dtype for t in stored.values())
    loaded = load_pretrained(tmp_path)
    ref = model.state_dict()
    for name, t in loaded.state_dict().items():
        assert t.dtype == torch.float32
        assert torch.equal(t, ref[name].to(dtype).float()), name     # exactly the rounded weights
    x = images(model.config, 4, seed=3)
    want, got = model.elbo(x, seed=0)["elbo"], loaded.elbo(x, seed=0)["elbo"]
    assert ((got - want).abs() / want.abs()).max() < 1e-2


# ---------------------------------------------------------------- broken folders

@pytest.fixture
def sharded(model: BIVA, tmp_path: Path) -> Path:
    return save_pretrained(model, tmp_path / "sharded", max_shard_mb=0.1)


@pytest.fixture
def single(model: BIVA, tmp_path: Path) -> Path:
    return save_pretrained(model, tmp_path / "single")


def load_error(folder: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_pretrained(folder)
    return str(info.value)


def test_missing_folder(tmp_path: Path) -> None:
    assert str(tmp_path / "nope") in load_error(tmp_path / "nope")


def test_missing_config(single: Path) -> None:
    (single / CONFIG).unlink()
    assert str(single / CONFIG) in load_error(single)


def test_missing_weights_file(single: Path) -> None:
    (single / SINGLE).unlink()
    assert str(single / SINGLE) in load_error(single)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_truncated_file(single: Path, sharded: Path, keep: float) -> None:
    """Cut into the data, just before the end, and into the header."""
    for f in (single / SINGLE, shards(sharded)[1]):
        data = f.read_bytes()
        f.write_bytes(data[:int(len(data) * keep)])
        msg = load_error(f.parent)
        assert str(f) in msg and "truncated" in msg


def test_shard_listed_in_index_is_missing(sharded: Path) -> None:
    gone = shards(sharded)[-1]
    gone.unlink()
    msg = load_error(sharded)
    assert str(gone) in msg and "missing" in msg


def test_index_that_misplaces_a_tensor(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    first, second = shards(sharded)[:2]
    name = next(n for n, f in index["weight_map"].items() if f == first.name)
    index["weight_map"][name] = second.name
    (sharded / INDEX).write_text(json.dumps(index))
    msg = load_error(sharded)
    assert first.name in msg and name in msg


def test_shape_mismatch_with_config(single: Path) -> None:
    data = json.loads((single / CONFIG).read_text())
    data["model"]["levels"][0]["latent"] += 1
    (single / CONFIG).write_text(json.dumps(data))
    msg = load_error(single)
    assert CONFIG in msg and "shape" in msg


def test_config_with_other_levels_names_missing_tensors(single: Path) -> None:
    data = json.loads((single / CONFIG).read_text())
    data["model"]["levels"][0]["blocks"] += 1
    (single / CONFIG).write_text(json.dumps(data))
    msg = load_error(single)
    assert CONFIG in msg and "missing" in msg and "stacks.0.blocks.1." in msg


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_unknown_format_version(single: Path, version) -> None:
    data = json.loads((single / CONFIG).read_text())
    data["format_version"] = version
    (single / CONFIG).write_text(json.dumps(data))
    msg = load_error(single)
    assert str(single / CONFIG) in msg and "format_version" in msg


def test_bad_config_json(single: Path) -> None:
    (single / CONFIG).write_text('{"format_version": 1, "model": ')
    assert str(single / CONFIG) in load_error(single)
    data = {"format_version": 1, "model": {**json.loads(json.dumps(tiny_config().to_dict())), "depth": 3}}
    (single / CONFIG).write_text(json.dumps(data))
    msg = load_error(single)
    assert str(single / CONFIG) in msg and "depth" in msg


def test_read_config_round_trip(model: BIVA, single: Path) -> None:
    config, training = read_config(single)
    assert config == model.config and training == {}


# ---------------------------------------------------------------- warm start into another layout

def test_warm_start_copies_every_tensor_that_matches_and_names_the_rest(model: BIVA, single: Path) -> None:
    """A dense top instead of a conv one: strict refuses and changes nothing; partial copies every
    tensor of the same name and shape and returns exactly the others, which keep their init."""
    cfg = model.config
    top = cfg.levels[-1]
    other = BIVA(cfg.replace(levels=cfg.levels[:-1] + (type(top)(top.blocks, top.channels, 5, top.stride, dense=True),)))
    before = {n: t.clone() for n, t in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="init_partial"):
        warm_start(other, single)
    assert all(torch.equal(t, before[n]) for n, t in other.state_dict().items())

    fresh = warm_start(other, single, partial=True)
    source, after = model.state_dict(), other.state_dict()
    mismatched = sorted(n for n, t in after.items() if n not in source or source[n].shape != t.shape)
    assert fresh == mismatched and any(n.startswith("q_top_head.") for n in fresh)
    for name, t in after.items():
        assert torch.equal(t, before[name] if name in fresh else source[name]), name


def test_warm_start_into_the_same_layout_copies_everything(model: BIVA, single: Path) -> None:
    other = BIVA(model.config)
    assert warm_start(other, single) == []
    x = images(model.config, 2)
    assert torch.equal(other.eval().elbo(x, seed=0)["elbo"], model.elbo(x, seed=0)["elbo"])


def test_warm_start_with_nothing_in_common_is_refused(single: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing matches"):
        cfg = tiny_config()
        levels = tuple(type(lv)(lv.blocks, lv.channels + 1, lv.latent + 1, lv.stride, lv.dense) for lv in cfg.levels)
        warm_start(BIVA(cfg.replace(levels=levels, mixtures=cfg.mixtures + 1)), single, partial=True)
