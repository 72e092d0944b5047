"""Configs: presets build (on the meta device: no memory, no time), the reference shapes of
docs/biva.md hold, JSON round trips, and bad input is an error that names the key."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from biva_core import BIVA, PRESETS, LevelConfig, ModelConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_round_trips(name: str) -> None:
    cfg = preset(name)
    with torch.device("meta"):
        model = BIVA(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    extra = 1 if cfg.classes else 0                                     # a class y is named last
    assert len(model.latent_names()) == cfg.n_latents + extra and cfg.n_latents == 2 * cfg.L - 1
    assert len(set(model.latent_names())) == cfg.n_latents + extra
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.levels[0], LevelConfig)


@pytest.mark.parametrize("name", ["celeba64", "celeba64_cpu", "celeba64_cpu_bottleneck"])
def test_celeba64_shape(name: str) -> None:
    """L = 20, N = 39, 64x64x3, latents at 32x32 and below."""
    cfg = preset(name)
    assert cfg.L == 20 and cfg.n_latents == 39 and cfg.image_shape == (3, 64, 64)
    assert max(h for h, _ in cfg.resolutions()) == 32
    with torch.device("meta"):
        model = BIVA(cfg)
    assert model.latent_names()[0] == "z1_bu" and model.latent_names()[-1] == "z20"
    assert [model.latent_level(i) for i in (0, 1, 2, 37, 38)] == [1, 1, 2, 19, 20]


def test_cpu_face_preset_puts_its_depth_where_it_is_cheap() -> None:
    """celeba64_cpu: most of its 20 levels at 8x8 and 4x4, few channels at 32x32, the same
    likelihood as celeba64, and the candidate it was chosen as."""
    import importlib.util
    cfg, gpu = preset("celeba64_cpu"), preset("celeba64")
    sizes = [h for h, _ in cfg.resolutions()]
    assert sum(s <= 8 for s in sizes) >= 12 and sizes.count(32) <= 2
    assert all(lv.channels <= 32 for lv, s in zip(cfg.levels, sizes) if s == 32)
    assert (cfg.likelihood, cfg.mixtures) == (gpu.likelihood, gpu.mixtures) == ("dmol", 10)
    with torch.device("meta"):
        assert sum(p.numel() for p in BIVA(cfg).parameters()) < sum(p.numel() for p in BIVA(gpu).parameters()) / 3
    spec = importlib.util.spec_from_file_location("fc", Path(__file__).parents[1] / "experiments" / "face_candidates.py")
    fc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fc)
    assert fc.candidate("A") == cfg


def test_reference_presets_follow_the_released_code() -> None:
    mnist, cifar = preset("binarized_mnist"), preset("cifar10")
    assert mnist.L == 6 and mnist.likelihood == "bernoulli" and all(lv.dense for lv in mnist.levels)
    assert [lv.latent for lv in mnist.levels] == [48, 40, 32, 24, 16, 8]
    assert [h for h, _ in mnist.resolutions()] == [28, 14, 14, 7, 7, 7]
    assert (mnist.dropout_q, mnist.dropout_p) == (0.5, 0.5)
    assert cifar.L == 15 and cifar.mixtures == 10 and (cifar.dropout_q, cifar.dropout_p) == (0.2, 0.0)
    res = [h for h, _ in cifar.resolutions()]
    assert res == [16] * 10 + [8] * 4 + [4]
    assert [lv.latent for lv in cifar.levels] == list(range(38, 19, -2)) + [18, 16, 14, 12, 10]


def test_tiny_forward_shapes() -> None:
    cfg = preset("tiny")
    model = BIVA(cfg).eval()
    out = model.elbo(torch.rand(2, *cfg.image_shape), seed=0)
    assert out["kl"].shape == (2, cfg.n_latents) and out["elbo"].shape == (2,)


@pytest.mark.parametrize("variant,n", [("lvae", 3), ("lvae+", 3), ("biva", 5)])
def test_variant_counts(variant: str, n: int) -> None:
    cfg = preset("tiny").replace(variant=variant)
    assert cfg.n_latents == n


def test_json_numbers_are_accepted_where_they_fit() -> None:
    d = _tiny_dict()
    d["dropout_q"] = 0                                           # an int where a float is expected
    assert ModelConfig.from_dict(d).dropout_q == 0.0


def _tiny_dict() -> dict:
    return json.loads(json.dumps(preset("tiny").to_dict()))


@pytest.mark.parametrize("where", ["model", "level"])
def test_unknown_key_is_named(where: str) -> None:
    d = _tiny_dict()
    (d if where == "model" else d["levels"][1])["widht"] = 3
    with pytest.raises(ValueError, match="widht"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("key", ["image_shape", "levels"])
def test_missing_key_is_named(key: str) -> None:
    d = _tiny_dict()
    del d[key]
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(d)


def test_missing_level_key_is_named() -> None:
    d = _tiny_dict()
    del d["levels"][0]["channels"]
    with pytest.raises(ValueError, match="channels"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("key,value", [
    ("likelihood", "gaussian"), ("variant", "nvae"), ("mixtures", 0), ("dropout_q", 1.0),
    ("dropout_p", -0.1), ("image_shape", [2, 8, 8]), ("levels", []),
    # wrong JSON types: each must name its key, not fail deep inside with a bare TypeError
    ("mixtures", "10"), ("mixtures", 2.5), ("mixtures", True), ("dropout_q", "0.1"), ("variant", None),
    ("image_shape", [8, 8]), ("image_shape", ["a", 8, 8]), ("image_shape", 64), ("levels", 5),
    ("block", "resnet"), ("block", None),
])
def test_bad_value_is_named(key: str, value) -> None:
    d = _tiny_dict()
    d[key] = value
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("key,value", [("stride", 3), ("blocks", 0), ("channels", 0), ("latent", -1),
                                       ("blocks", "3"), ("blocks", 1.5), ("dense", "yes"), ("stride", 2.0)])
def test_bad_level_value_is_named(key: str, value) -> None:
    d = _tiny_dict()
    d["levels"][0][key] = value
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(d)


def test_stride_that_does_not_divide_the_resolution() -> None:
    d = _tiny_dict()
    d["levels"][1]["stride"] = 2
    d["levels"].append({**d["levels"][1]})                      # 8 -> 4 -> 2 -> 1 -> 1/2
    d["levels"][2]["stride"] = 2
    with pytest.raises(ValueError, match=r"levels\[3\]\.stride"):
        ModelConfig.from_dict(d)


def test_block_defaults_to_gated_and_bottleneck_needs_four_channels() -> None:
    """Configs saved before the `block` key existed load as the gated block; a bottleneck of
    channels / 4 needs at least 4 channels at every level."""
    d = _tiny_dict()
    d.pop("block", None)
    assert ModelConfig.from_dict(d).block == "gated"
    assert ModelConfig.from_dict({**d, "block": "bottleneck"}).block == "bottleneck"
    d["levels"][1]["channels"] = 3
    ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="bottleneck needs >= 4 channels"):
        ModelConfig.from_dict({**d, "block": "bottleneck"})


def test_retired_model_switches_load_when_off_and_are_refused_when_on() -> None:
    """class_posterior, class_means and class_everywhere left with their code: a config that stores
    them off (the shipped ones do) loads as the same model; one that stores one on is refused by name."""
    from biva_core.model.config import RETIRED
    d = {**_tiny_dict(), "classes": 2}
    assert ModelConfig.from_dict({**d, **RETIRED}) == ModelConfig.from_dict(d)
    for key in RETIRED:
        with pytest.raises(ValueError, match=f"config: {key} was retired.*docs/notes/2026-12-07-retired-switches.md"):
            ModelConfig.from_dict({**d, key: True})
        with pytest.raises(ValueError, match=key):
            ModelConfig.from_dict({**d, key: 0})                # not the stored off value: refused too


def cli_configs(*items: str, labels: int | None = None):
    """train.py's --preset mnist_ssl --data mnist_binary --set ITEMS, as configs (no data read)."""
    import argparse
    from biva_core.train.cli import build_configs
    args = argparse.Namespace(preset="mnist_ssl", data="mnist_binary", data_dir=None, set=list(items), steps=None,
                              batch_size=None, max_minutes=None, max_cpu_minutes=None, labels=labels)
    return build_configs(args, log=lambda m: None)


def test_train_py_refuses_a_retired_model_switch_by_name() -> None:
    assert cli_configs("class_means=false")[0] == preset("mnist_ssl")
    with pytest.raises(SystemExit, match="class_everywhere was retired"):
        cli_configs("class_everywhere=true")


def test_bernoulli_needs_one_channel() -> None:
    with pytest.raises(ValueError, match="likelihood"):
        preset("tiny").replace(likelihood="bernoulli")


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="levels"):
        ModelConfig.from_dict({**_tiny_dict(), "levels": [[1, 16, 4, 2, False]] * 3})


def test_config_is_frozen_and_unknown_preset_is_named() -> None:
    cfg = preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mixtures = 5
    with pytest.raises(ValueError, match="celeba128"):
        preset("celeba128")


# ---------------------------------------------------------------- the training config

def test_train_config_checks_types_and_ranges_when_made():
    from biva_core.train.config import TrainConfig
    for bad, key in ((dict(snapshots=1), "snapshots"), (dict(steps=2.5), "steps"), (dict(lr="fast"), "lr"),
                     (dict(flip="yes"), "flip"), (dict(lr_schedule="linear"), "lr_schedule"),
                     (dict(amp="auto"), "amp"), (dict(amp="fp16"), "amp"), (dict(ema=1.0), "ema"), (dict(batch_size=0), "batch_size"),
                     (dict(skip_factor=1.0), "skip_factor"), (dict(ssl={"alpha": 1.0}), "ssl")):
        with pytest.raises(ValueError, match=f"train config: {key}="):
            TrainConfig(**bad)
    assert TrainConfig(lr=1).lr == 1  # a JSON whole number is a float


def test_retired_training_switches_load_when_off_and_are_refused_when_on():
    from biva_core.train.config import RETIRED, TrainConfig
    old = {**dataclasses.asdict(TrainConfig()),
           **RETIRED, "amp": "auto"}
    cfg = TrainConfig.from_dict(old)
    assert cfg.amp == "none" and cfg == TrainConfig(amp="none")
    for key in RETIRED:
        with pytest.raises(ValueError, match=f"{key} was retired.*docs/notes/2026-12-07-retired-switches.md"):
            TrainConfig.from_dict({key: 1})


def test_the_semi_supervised_configs_round_trip_through_json_and_name_their_bad_keys():
    from biva_core.train.config import Consistency, SemiSupervised, TrainConfig
    cfg = TrainConfig(ssl=SemiSupervised(labels=100, alpha=1.0, consistency=Consistency(weight=1.0, teacher="ema")))
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert stored["ssl"]["consistency"]["teacher"] == "ema" and TrainConfig.from_dict(stored) == cfg
    assert TrainConfig.from_dict({"ssl": {"consistency": {"weight": 1}, "labels": 4}}).ssl.consistency.weight == 1
    for bad, key in (({"ssl": {"alfa": 1}}, r"\['ssl.alfa'\]"), ({"ssl": {"consistency": {"wieght": 1}}}, "ssl.consistency.wieght"),
                     ({"ssl": 3}, "ssl must be a JSON object"), ({"ssl": {"alpha": "1"}}, "ssl.alpha='1' must be float"),
                     ({"ssl": {"labelled_batch": 0}}, "ssl.labelled_batch=0"),
                     ({"ssl": {"consistency": {"batch": 2.0}}}, "ssl.consistency.batch=2.0 must be int"),
                     ({"ssl": {"consistency": {"shift": -1}}}, "ssl.consistency.shift=-1")):
        with pytest.raises(ValueError, match=key):
            TrainConfig.from_dict(bad)
    with pytest.raises(ValueError, match="ssl=.* must be SemiSupervised"):
        TrainConfig(ssl={"alpha": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ssl.consistency.weight = 0.0


def test_an_older_configs_flat_semi_supervised_keys_load_into_the_sub_configs():
    """Runs and shipped folders saved before the sub-configs store ssl_alpha, ssl_consistency, labels,
    ...: they load to the same config as the nested keys (so those runs resume as they were)."""
    from biva_core.train.config import LEGACY, TrainConfig, flatten
    stored = json.loads((Path(__file__).resolve().parents[1] / "weights" / "mnist_ssl100" / "config.json")
                        .read_text())["training"]["train_config"]
    assert set(LEGACY) <= set(stored)                                  # the shipped folder predates them
    ssl = TrainConfig.from_dict(stored).ssl
    assert (ssl.labels, ssl.labelled_batch, ssl.alpha) == (stored["labels"], stored["labelled_batch"], stored["ssl_alpha"])
    c = ssl.consistency
    assert (c.weight, c.threshold, c.batch, c.shift, c.rotate, c.elastic, c.elastic_sigma, c.teacher) == tuple(
        stored[k] for k in ("ssl_consistency", "ssl_threshold", "ssl_consistency_batch", "ssl_shift", "ssl_rotate",
                            "ssl_elastic", "ssl_elastic_sigma", "ssl_teacher"))
    new = TrainConfig.from_dict(stored).to_dict()
    assert {LEGACY.get(k, k): v for k, v in stored.items() if k in LEGACY} == \
        {k: v for k, v in flatten(new).items() if k in LEGACY.values()}
    with pytest.raises(ValueError, match="ssl_alpha and ssl.alpha are one key, given twice"):
        TrainConfig.from_dict({"ssl_alpha": 1.0, "ssl": {"alpha": 1.0}})


def test_train_py_takes_the_semi_supervised_keys_dotted_and_by_their_older_flat_names():
    from biva_core.train.config import Consistency, SemiSupervised
    flat = cli_configs("ssl_alpha=1", "ssl_consistency=1", "ssl_teacher=ema", "labelled_batch=8", labels=100)[1]
    dotted = cli_configs("ssl.alpha=1", "ssl.consistency.weight=1", "ssl.consistency.teacher=ema",
                         "ssl.labelled_batch=8", labels=100)[1]
    assert flat == dotted and flat.ssl == SemiSupervised(labels=100, labelled_batch=8, alpha=1.0,
                                                         consistency=Consistency(weight=1.0, teacher="ema"))
    assert cli_configs("labels=20", "ssl.consistency={\"weight\": 2}")[1].ssl.consistency == Consistency(weight=2.0)
    for items, message in ((("ssl.alfa=1",), r"unknown key\(s\) \['ssl.alfa'\]"), (("sll_alpha=1",), "--set sll_alpha: unknown"),
                           (("ssl_consistency=1",), "ssl.consistency.weight=1 needs labels"),
                           (("ssl_q_hold=200",), "ssl_q_hold was retired"), (("steps.x=1",), "steps=200000 has no keys")):
        with pytest.raises(SystemExit, match=message):
            cli_configs(*items)


@pytest.mark.parametrize("folder", sorted(p for p in (Path(__file__).resolve().parents[1] / "weights").iterdir()
                                          if (p / "config.json").is_file()), ids=lambda p: p.name)
def test_every_shipped_folders_training_config_loads(folder):
    import json
    from biva_core.train.config import TrainConfig
    stored = json.loads((folder / "config.json").read_text())["training"]["train_config"]
    cfg = TrainConfig.from_dict(stored)
    # older folders' "auto" loads as "none"; "amx" is bf16 where the CPU has AMX tiles, else float32
    assert cfg.batch_size == stored["batch_size"] and cfg.amp in ("none", "bf16", "amx")
