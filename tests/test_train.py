"""The trainer: the train.py layout, exact resumption (a stopped and resumed run equals one run),
SIGTERM saving, warm starts, and two Gloo processes that stay identical."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biva_core.io.checkpoint import load_pretrained
from biva_core.data.folder import split_of
from biva_core.train.trainer import TrainConfig, Trainer

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
# the tiny model with dropout, so that the RNG stream matters to the result
CFG = tiny_config().replace(dropout_q=0.2, dropout_p=0.2)


def fast_config(**changes) -> TrainConfig:
    base = dict(steps=8, batch_size=4, warmup=3, log_every=2, eval_every=3, eval_images=6,
                ckpt_minutes=1e9, flip=True, num_threads=1)
    return TrainConfig(**{**base, **changes})


def data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


def quiet(_: str) -> None:
    pass


def state_of(t: Trainer) -> dict[str, torch.Tensor]:
    """Parameters, EMA and optimizer moments: everything an update depends on."""
    out = {f"model.{k}": v for k, v in t.model.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in t.ema.state_dict().items()})
    for pid, st in t.opt.state_dict()["state"].items():
        out.update({f"opt.{pid}.{n}": v for n, v in st.items()})
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


# ---------------------------------------------------------------- in-process

def test_resume_is_exact(tmp_path):
    """8 steps in one go == 4 steps, stop (with a validation at the stop), resume to 8. 20
    training images at batch 4 cross an epoch boundary; flips and dropout are on."""
    train, valid = data(20, 0), data(6, 1)
    whole = Trainer(CFG, fast_config(), train, valid, tmp_path / "whole", log=quiet)
    whole.run(progress=False)

    Trainer(CFG, fast_config(steps=4), train, valid, tmp_path / "split", log=quiet).run(progress=False)
    resumed = Trainer(CFG, fast_config(), train, valid, tmp_path / "split", log=quiet)
    resumed.load_state()
    assert (resumed.step, resumed.batches.epoch, resumed.batches.pos) == (4, 0, 16)
    resumed.run(progress=False)
    assert resumed.step == whole.step == 8
    assert_same(state_of(whole), state_of(resumed))
    # only the latest tensors file is kept, and scalars.json names it
    files = sorted(p.name for p in (tmp_path / "split" / "state").glob("tensors*"))
    assert files == [json.loads((tmp_path / "split" / "state" / "scalars.json").read_text())["tensors"]]


def test_validation_leaves_the_training_rng_alone(tmp_path):
    t = Trainer(CFG, fast_config(), data(8, 0), data(6, 1), tmp_path, log=quiet)
    before = torch.get_rng_state()
    t.validate_and_save()
    assert torch.equal(before, torch.get_rng_state())


def test_amx_means_bf16_on_a_cpu_with_amx_tiles_only(monkeypatch):
    from biva_core.train.trainer import uses_bf16
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for has_amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda has_amx=has_amx: has_amx)
        assert uses_bf16("amx", cpu) is has_amx
        assert not uses_bf16("amx", gpu) and not uses_bf16("none", cpu) and uses_bf16("bf16", cpu)


def test_auto_turns_on_channels_last_with_bf16_or_one_thread_and_compile_for_long_runs_only(monkeypatch):
    """channels_last / compile = "auto": on where the convolutions run bf16 on a CPU (channels-last
    also for float32 on one CPU thread), compile only for runs of COMPILE_STEPS steps or more
    without a time limit under COMPILE_MINUTES and never for a model with classes; "on" / "off"
    and the booleans of older configs choose."""
    from biva_core.train.config import COMPILE_MINUTES, COMPILE_STEPS
    from biva_core.train.trainer import step_options
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    long = TrainConfig(steps=COMPILE_STEPS)
    assert step_options(long, cpu) == (True, True, True)
    assert step_options(long, gpu) == (False, False, False)
    assert step_options(long, cpu, classes=10) == (True, True, False)
    assert step_options(long, cpu, distributed=True) == (True, True, False)
    assert step_options(TrainConfig(steps=COMPILE_STEPS - 1), cpu) == (True, True, False)
    assert step_options(TrainConfig(max_minutes=COMPILE_MINUTES - 1), cpu) == (True, True, False)
    assert step_options(TrainConfig(max_cpu_minutes=COMPILE_MINUTES), cpu) == (True, True, True)
    assert step_options(TrainConfig(amp="none"), cpu) == (False, False, False)
    assert step_options(TrainConfig(amp="none", channels_last="on", compile="on"), cpu) == (False, True, True)
    assert step_options(TrainConfig(channels_last=False, compile=False), cpu) == (True, False, False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert step_options(long, cpu) == (False, False, False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert step_options(long, cpu) == (False, True, False)
    assert step_options(long, gpu) == (False, False, False)
    assert step_options(TrainConfig(channels_last="off"), cpu) == (False, False, False)
    old = TrainConfig.from_dict({"channels_last": True, "compile": False})
    assert (old.channels_last, old.compile) == ("on", "off")
    with pytest.raises(ValueError, match="channels_last"):
        TrainConfig(channels_last="yes")


def test_a_bf16_step_follows_the_float32_one_and_validates_in_float32(tmp_path):
    """amp=bf16: the losses of three steps within 1% of float32's from the same start (both
    channels-last), the weights within a few Adamax steps; validation runs in float32 whatever the
    training precision, so its number is the float32 bound of the EMA weights."""
    runs, logged = {}, []
    for amp in ("none", "bf16"):
        t = Trainer(CFG, fast_config(amp=amp, flip=False, channels_last="on"), data(8, 0), data(6, 1), tmp_path / amp,
                    log=logged.append)
        torch.manual_seed(5)
        losses = [float(t.train_step(t.next_batch())["loss"]) for _ in range(3)]
        runs[amp] = losses, t
    assert logged[:2] == ["precision: float32; channels-last on; compile off",
                          "precision: bf16 convolutions (amp=bf16); channels-last on; compile off"]
    assert runs["bf16"][0] == pytest.approx(runs["none"][0], rel=1e-2) and runs["bf16"][0] != runs["none"][0]
    lr = max(runs["none"][1].lr_at(s) for s in range(3))
    for (k, a), b in zip(runs["none"][1].model.state_dict().items(), runs["bf16"][1].model.state_dict().values()):
        assert (a - b).abs().max() <= 3 * lr, k
    t = runs["bf16"][1]
    row = t.validate()
    twin = Trainer(CFG, fast_config(amp="none"), data(8, 0), data(6, 1), tmp_path / "twin", log=quiet)
    twin.ema.load_state_dict(t.ema.state_dict())
    assert row["valid_elbo"] == twin.validate()["valid_elbo"]


def test_init_warm_starts_from_a_pretrained_folder(tmp_path):
    first = Trainer(CFG, fast_config(steps=3, eval_every=3), data(12, 0), data(6, 1), tmp_path / "a", log=quiet)
    first.run(progress=False)
    shipped = load_pretrained(tmp_path / "a").state_dict()
    warm = Trainer(CFG, fast_config(seed=5), data(12, 0), data(6, 1), tmp_path / "b", init=str(tmp_path / "a"), log=quiet)
    for name, t in warm.model.state_dict().items():
        assert torch.equal(t, shipped[name]), name
        assert torch.equal(warm.ema.state_dict()[name], shipped[name]), name
    assert warm.step == 0 and not warm.opt.state  # the optimizer starts fresh
    cold = Trainer(CFG, fast_config(seed=5), data(12, 0), data(6, 1), tmp_path / "c", log=quiet)
    assert not all(torch.equal(t, shipped[n]) for n, t in cold.model.state_dict().items())


def test_init_partial_warm_starts_another_layout_and_says_what_is_fresh(tmp_path):
    first = Trainer(CFG, fast_config(steps=3, eval_every=3), data(12, 0), data(6, 1), tmp_path / "a", log=quiet)
    first.run(progress=False)
    shipped = load_pretrained(tmp_path / "a").state_dict()
    top = CFG.levels[-1]
    dense_top = CFG.replace(levels=CFG.levels[:-1] + (type(top)(top.blocks, top.channels, 5, top.stride, dense=True),))
    with pytest.raises(ValueError, match="init_partial"):
        Trainer(dense_top, fast_config(), data(12, 0), data(6, 1), tmp_path / "b", init=str(tmp_path / "a"), log=quiet)
    said = []
    warm = Trainer(dense_top, fast_config(init_partial=True), data(12, 0), data(6, 1), tmp_path / "c",
                   init=str(tmp_path / "a"), log=said.append)
    copied = [n for n, t in warm.model.state_dict().items() if n in shipped and torch.equal(t, shipped[n])]
    assert copied and "q_top_head.proj.weight" not in copied
    assert any("start fresh" in m and "q_top_head.proj.weight" in m for m in said)
    assert warm.run(progress=False)["step"] == 8


# ---------------------------------------------------------------- two processes (Gloo)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch.distributed as tdist
    try:
        t = Trainer(CFG, fast_config(steps=3, eval_every=2), data(16, 0), data(6, 1), Path(out) / "run", log=quiet)
        assert t.distributed and t.world == world and t.rank == rank
        t.run(progress=False)
        torch.save({k: v.clone() for k, v in state_of(t).items()}, Path(out) / f"rank{rank}.pt")
        torch.save(torch.get_rng_state(), Path(out) / f"rng{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_two_gloo_processes_stay_identical(tmp_path):
    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert_same(r0, r1)
    init = Trainer(CFG, fast_config(), data(16, 0), data(6, 1), tmp_path / "init", log=quiet)
    assert any(not torch.equal(v, r0[k]) for k, v in state_of(init).items() if k.startswith("model."))
    # each rank drew its own dropout masks and latents
    assert not torch.equal(torch.load(tmp_path / "rng0.pt", weights_only=True), torch.load(tmp_path / "rng1.pt", weights_only=True))
    run = tmp_path / "run"
    assert json.loads((run / "state" / "scalars.json").read_text())["world_size"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "valid_bpd" in r] == [2, 3]  # written once, by rank 0


# ---------------------------------------------------------------- train.py in a subprocess

def image_folder(root: Path, n_train: int = 12, n_valid: int = 3) -> Path:
    """A few random 8x8 PNGs whose names the folder loader's hash puts in train and valid."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    counts = {"train": 0, "valid": 0}
    want = {"train": n_train, "valid": n_valid}
    i = 0
    while counts != want:
        name = f"img{i:04d}.png"
        split = split_of(name)
        if split in want and counts[split] < want[split]:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name)
            counts[split] += 1
        i += 1
    return root


def train_py(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--preset", "tiny", "--data", "folder",
            "--data-dir", str(tmp_path / "images"), "--out", str(out), "--batch-size", "4", "--no-progress",
            "--set", "image_shape=[3,8,8]", "num_threads=1", "eval_images=0", *extra]


def env(tmp_path: Path) -> dict:
    return {**os.environ, "BIVA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_train_py_writes_the_pretrained_layout(tmp_path):
    image_folder(tmp_path / "images")
    out = tmp_path / "run"
    r = subprocess.run(train_py(tmp_path, out, "log_every=2", "eval_every=3", "--steps", "6"),
                       env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 6
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "samples_t1.0.png", "samples_t0.8.png",
                 "kl_per_latent.png", "state/scalars.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "valid_bpd" in r] == [3, 6]
    model = load_pretrained(out)
    assert model.config.image_shape == (3, 8, 8)
    assert model.training_info["step"] in (3, 6)


def test_sigterm_saves_and_resume_continues(tmp_path):
    image_folder(tmp_path / "images")
    out = tmp_path / "run"
    p = subprocess.Popen(train_py(tmp_path, out, "log_every=1", "eval_every=100000", "--steps", "100000"),
                         env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
            assert p.poll() is None, p.communicate()[1]
            assert time.time() < deadline, "no training steps logged in 120 s"
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr
    assert "signal" in stderr
    stopped = json.loads(stdout.strip().splitlines()[-1])["step"]
    state = json.loads((out / "state" / "scalars.json").read_text())
    assert 2 <= stopped < 100000 and state["step"] == stopped
    r = subprocess.run(train_py(tmp_path, out, "log_every=1", "eval_every=100000", "--steps", str(stopped + 2),
                                "--resume"), env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resumed at step {stopped}" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == stopped + 2


def test_unknown_training_key_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"stepz": 3})


def test_running_out_of_time_validates_the_last_step(tmp_path):
    t = Trainer(CFG, fast_config(eval_every=100, max_minutes=1e-9), data(8, 0), data(6, 1), tmp_path, log=quiet)
    t.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert t.step == 1 and [r["step"] for r in rows if "valid_bpd" in r] == [1]
    assert (tmp_path / "model.safetensors").is_file()


def test_a_cpu_time_budget_stops_the_run_by_the_process_cpu_clock(tmp_path, monkeypatch):
    """max_cpu_minutes counts the process's CPU time, not the wall clock: with a clock that gains
    10 s of CPU at each reading (one reading at the start, one after every step), a 0.5-minute
    budget ends the run after the 4th step (40 s > 30 s) and validates it, whatever the wall time."""
    import time as clock
    cpu = iter(range(0, 10_000, 10))
    monkeypatch.setattr(clock, "process_time", lambda: float(next(cpu)))
    t = Trainer(CFG, fast_config(eval_every=100, max_cpu_minutes=0.5), data(8, 0), data(6, 1), tmp_path, log=quiet)
    t.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert t.step == 4 and [r["step"] for r in rows if "valid_bpd" in r] == [4]
    with pytest.raises(ValueError, match="max_cpu_minutes"):
        fast_config(max_cpu_minutes=-1)


def test_dynamic_binarization_draws_afresh_each_step(tmp_path):
    """binarize=true: every batch is a Bernoulli(intensity) draw of the 8-bit images, new at every
    step, fixed by (seed, step) so that resuming redraws the same pixels."""
    from biva_core.model.config import LevelConfig, ModelConfig
    levels = (LevelConfig(blocks=1, channels=4, latent=2, stride=2), LevelConfig(blocks=1, channels=4, latent=2))
    cfg = ModelConfig(image_shape=(1, 8, 8), levels=levels, likelihood="bernoulli")
    grey = np.full((16, 1, 8, 8), 77, np.uint8)
    t = Trainer(cfg, fast_config(binarize=True, batch_size=16, flip=False), grey, (grey > 127).astype(np.uint8),
                tmp_path / "a", log=quiet)
    first = t.next_batch()
    t.step += 1
    second = t.next_batch()
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    assert abs(float(torch.cat([first, second]).mean()) - 77 / 255) < 0.08  # 2048 pixels: 5 sd
    u = Trainer(cfg, fast_config(binarize=True, batch_size=16, flip=False), grey, (grey > 127).astype(np.uint8),
                tmp_path / "b", log=quiet)
    assert torch.equal(u.next_batch(), first)
    with pytest.raises(ValueError, match="8-bit"):
        Trainer(cfg, fast_config(binarize=True), (grey > 127).astype(np.uint8), grey, tmp_path / "c", log=quiet)


def test_warm_up_ema_and_cosine_schedule(tmp_path):
    """The EMA decay starts at 0.1 and grows to the cap; the cosine schedule runs from lr to lr_min."""
    t = Trainer(tiny_config(), fast_config(ema=0.999, lr=1e-3, lr_min=1e-5, lr_schedule="cosine", warmup=0,
                                           steps=100), data(8, 0), data(4, 1), tmp_path, log=quiet)
    assert t.ema_decay(0) == pytest.approx(0.1) and t.ema_decay(90) == pytest.approx(91 / 100)
    assert t.ema_decay(10 ** 6) == 0.999
    assert t.lr_at(0) == pytest.approx(1e-3) and t.lr_at(50) == pytest.approx((1e-3 + 1e-5) / 2)
    assert t.lr_at(100) == pytest.approx(1e-5) and t.lr_at(500) == pytest.approx(1e-5)
    before = [p.detach().clone() for p in t.ema.parameters()]
    t.train_step(t.next_batch())  # step 0: the EMA moves 90% of the way to the new weights
    for e, b, p in zip(t.ema.parameters(), before, t.model.parameters()):
        assert torch.allclose(e, 0.1 * b + 0.9 * p, atol=1e-6)
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(tiny_config(), fast_config(lr_schedule="linear"), data(8, 0), data(4, 1), tmp_path / "x", log=quiet)


@pytest.mark.parametrize("sync_free", ["on", "off"])
def test_a_skipped_update_changes_nothing(tmp_path, sync_free):
    """skip_threshold below every gradient norm: computed on the device and undone (sync_free) or
    branched around (a host read), parameters, optimizer moments and the EMA stay as they were
    (and the skip is counted)."""
    t = Trainer(tiny_config(), fast_config(skip_threshold=1e-12, sync_free=sync_free), data(8, 0), data(4, 1),
                tmp_path, log=quiet)
    t.train_step(t.next_batch())  # the optimizer's state exists after a first (skipped) step
    before = state_of(t)
    r = t.train_step(t.next_batch())
    assert float(r["skipped"]) == 1.0 and torch.isfinite(r["loss"])
    assert_same(before, state_of(t))
    u = Trainer(tiny_config(), fast_config(sync_free=sync_free), data(8, 0), data(4, 1), tmp_path / "b", log=quiet)
    first = u.model.out_conv.weight.detach().clone()
    r = u.train_step(u.next_batch())
    assert float(r["skipped"]) == 0.0 and not torch.equal(u.model.out_conv.weight, first)  # applied


def test_the_compiled_step_matches_the_eager_one(tmp_path):
    """compile=true (torch.compile of the forward pass and its backward) gives the eager run's
    losses and parameters within float tolerance over a few steps. Inductor draws random numbers
    with its own generator; fallback_random makes it use torch's, so both runs draw the same z."""
    import torch._inductor.config as inductor
    runs = {}
    old, inductor.fallback_random = inductor.fallback_random, True
    for compiled in (False, True):
        t = Trainer(CFG, fast_config(compile=compiled, flip=False, amp="none"), data(8, 0), data(4, 1),
                    tmp_path / str(compiled), log=quiet)
        torch.manual_seed(5)
        losses = [float(t.train_step(t.next_batch())["loss"]) for _ in range(3)]
        runs[compiled] = (losses, {k: v.detach().clone() for k, v in t.model.state_dict().items()})
    inductor.fallback_random = old
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4, abs=1e-5)
    # Adamax moves a weight by about lr * sign(gradient) early on, whatever the gradient's size: where
    # a gradient is at rounding level (the zero-initialised last convolutions), the two runs can
    # step it opposite ways. So the parameters agree within a few such steps, not to float precision.
    lr = max(t.lr_at(s) for s in range(3))
    for k, v in runs[False][1].items():
        assert torch.allclose(runs[True][1][k], v, rtol=1e-3, atol=0.02 * lr), k


def test_the_sync_free_update_equals_the_branch(tmp_path):
    """sync_free=on (kept or undone on the device) and off (a host branch) train to the same
    parameters and EMA over a few steps."""
    runs = {}
    for mode in ("on", "off"):
        t = Trainer(CFG, fast_config(sync_free=mode), data(8, 0), data(4, 1), tmp_path / mode, log=quiet)
        for _ in range(4):
            t.train_step(t.next_batch())
        runs[mode] = state_of(t)
    for k, v in runs["off"].items():
        assert torch.allclose(runs["on"][k], v, rtol=1e-5, atol=1e-7), k


# ---------------------------------------------------------------- the update guard

class Planted(Trainer):
    """A trainer with planted trouble: at step `blow_up` every weight is scaled so that the next
    gradients are far above the recent ones (as after one bad update); from step `poison` on
    every training batch is NaN (a run that cannot learn)."""
    blow_up: int | None = None
    poison: int | None = None

    def train_step(self, x):
        if self.poison is not None and self.step >= self.poison:
            x = torch.full_like(x, float("nan"))
        r = super().train_step(x)
        if self.step == self.blow_up:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(30.0)
        return r


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_guard_recovers_from_an_exploding_step(tmp_path):
    """Weights thrown far off at step 30: the next updates are skipped, after max_skips in a row
    the state of a healthy stretch before step 30 comes back at half the learning rate, the run
    learns on and ends near where it was, and the rollback is in the log."""
    cfg = fast_config(steps=80, log_every=5, eval_every=40, warmup=5, lr=2e-3, max_skips=4)
    t = Planted(CFG, cfg, data(32, 0), data(8, 1), tmp_path / "run", log=quiet)
    t.blow_up = 30
    t.run(progress=False)
    rows = rows_of(tmp_path / "run")
    events = [r for r in rows if r.get("event")]
    assert [e["event"] for e in events] == ["rollback"], events
    assert events[0]["restored_step"] in (20, 25) and events[0]["step"] <= 30 + cfg.max_skips
    assert t.guard.lr_scale == 0.5 and t.stopped_why is None
    train = [r for r in rows if "bpd" in r]
    before = next(r["bpd"] for r in train if r["step"] == 30)
    assert train[-1]["step"] == 80 and train[-1]["skipped"] == 0 and train[-1]["bpd"] < before + 0.5
    assert sum(r["skipped"] for r in train) <= cfg.max_skips + 1


def test_a_run_that_cannot_learn_stops_with_a_message_and_its_weights(tmp_path):
    """NaN batches from step 12 on: every update is skipped, each rollback fails again, after
    max_rollbacks the run stops long before its last step, says why, and leaves loadable weights
    and a resume state."""
    messages = []
    cfg = fast_config(steps=500, log_every=4, eval_every=1000, warmup=2, max_skips=3, max_rollbacks=2)
    t = Planted(CFG, cfg, data(16, 0), data(8, 1), tmp_path / "run", log=messages.append)
    t.poison = 12
    result = t.run(progress=False)
    assert "cannot learn" in result["stopped"] and str(tmp_path / "run") in result["stopped"]
    assert t.step == 12 + 3 * (cfg.max_rollbacks + 1)  # three skips before each of three rollbacks
    assert [r["event"] for r in rows_of(tmp_path / "run") if r.get("event")] == ["rollback", "rollback", "stopped"]
    assert any(m.startswith("training stopped: the run cannot learn") for m in messages)
    model = load_pretrained(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "run" / "state" / "scalars.json").is_file()


# the gradient norms of the first 60 healthy steps of a 32x32 face model on 159 images (the auto
# preset, batch 48, lr warming up over 200 steps; 2026-12-07): 30 times larger by step 53
EARLY_NORMS = [0.20, 0.20, 0.20, 0.20, 0.21, 0.20, 0.21, 0.21, 0.20, 0.21, 0.21, 0.21, 0.21, 0.21, 0.22, 0.22,
               0.22, 0.24, 0.24, 0.25, 0.26, 0.28, 0.30, 0.31, 0.33, 0.36, 0.40, 0.43, 0.48, 0.54, 0.60, 0.67,
               0.77, 0.88, 0.96, 1.08, 1.17, 1.20, 1.26, 2.30, 3.94, 3.54, 2.99, 2.10, 1.87, 1.81, 2.00, 2.03,
               2.51, 3.42, 3.40, 4.66, 5.78, 7.21, 3.46, 3.61, 3.10, 2.61, 2.79, 3.24]


def test_the_norms_early_growth_is_not_skipped():
    """Ten times a median of the recent norms lags their early growth and skipped 12 of these 60
    healthy updates (the run rolled back to step 0); ten times their 90th percentile skips none,
    and still skips a spike of 100x right after."""
    from biva_core.train.guard import UpdateGuard
    g = UpdateGuard(factor=10, threshold=1000.0, max_skips=5, max_rollbacks=3, device=torch.device("cpu"))
    loss = torch.tensor(1.0)
    assert [float(g.decide(torch.tensor(v), loss)) for v in EARLY_NORMS] == [1.0] * len(EARLY_NORMS)
    assert float(g.decide(torch.tensor(324.0), loss)) == 0.0
    accepted, skipped = [], 0                                    # what the median rule did to them
    for v in EARLY_NORMS:
        if len(accepted) >= 20 and v >= 10 * np.median(accepted[-100:]):
            skipped += 1
        else:
            accepted.append(v)
    assert skipped == 12


def test_the_adaptive_threshold_skips_a_spike_and_keeps_a_steady_large_norm():
    """The limit is skip_factor x the 90th percentile of the accepted norms once 20 are in, the
    fixed skip_threshold before: a norm of 2,000 passes when the norms have been 800 to 990 (the
    fixed rule would skip it forever), a spike of 50x is skipped, NaN always."""
    from biva_core.train.guard import UpdateGuard
    g = UpdateGuard(factor=10, threshold=1000.0, max_skips=5, max_rollbacks=3, device=torch.device("cpu"))
    loss = torch.tensor(1.0)
    assert float(g.decide(torch.tensor(1500.0), loss)) == 0.0       # fixed threshold at first
    for v in np.linspace(800, 990, 20):
        assert float(g.decide(torch.tensor(float(v)), loss)) == 1.0
    assert float(g.limit()) == pytest.approx(10 * np.quantile(np.linspace(800, 990, 20), 0.9), rel=0.01)
    assert float(g.decide(torch.tensor(2000.0), loss)) == 1.0
    assert float(g.decide(torch.tensor(50_000.0), loss)) == 0.0
    assert float(g.decide(torch.tensor(float("nan")), loss)) == 0.0
    assert float(g.decide(torch.tensor(10.0), torch.tensor(float("inf")))) == 0.0
    assert int(g.in_a_row) == 3 and not g.stuck()
    assert float(g.decide(torch.tensor(1000.0), loss)) == 1.0 and int(g.in_a_row) == 0
    with pytest.raises(ValueError, match="skip_factor"):
        UpdateGuard(factor=1.0, threshold=1.0, max_skips=5, max_rollbacks=3, device=torch.device("cpu"))


# ---------------------------------------------------------------- your own folder

def own_folder(root: Path, n: int, size: int, grey: bool) -> Path:
    """n images of size x size: smooth random colour fields (or grey ones, saved as RGB PNGs half
    the time, as phone photos of prints are)."""
    rng = np.random.default_rng(size + grey)
    root.mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 1 if grey else 3), dtype=np.uint8)
        image = Image.fromarray(small.squeeze(-1) if grey else small).resize((size, size), Image.BILINEAR)
        (image.convert("RGB") if grey and i % 2 else image).save(root / f"img_{i:03d}.png")
    return root


@pytest.mark.parametrize("size, grey, want_size, want_L", [(28, True, 28, 6), (32, False, 32, 15),
                                                            (64, True, 64, 20), (70, False, 64, 20)])
def test_train_py_without_a_preset_fits_the_folder(tmp_path, monkeypatch, capsys, size, grey, want_size, want_L):
    """`train.py --data folder --data-dir DIR --out OUT` alone: the auto preset reads the folder's
    channels (grey folders make grey models) and size, splits valid images off, trains, and the run
    loads as a model of that shape."""
    from biva_core.train.cli import main
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    folder = own_folder(tmp_path / "mine", 60, size, grey)
    main(["--data", "folder", "--data-dir", str(folder), "--out", str(tmp_path / "run"), "--steps", "2",
          "--batch-size", "2", "--no-progress", "--set", "num_threads=1", "eval_every=2", "eval_images=4",
          "log_every=1"])
    err = capsys.readouterr().err
    assert f"auto preset: {'grey' if grey else 'RGB'} images of about {size} px -> a {want_size}x{want_size} model " \
           f"with L = {want_L} levels" in err
    model = load_pretrained(tmp_path / "run")
    assert model.config.image_shape == (1 if grey else 3, want_size, want_size) and model.config.L == want_L


def test_a_preset_takes_the_folders_channels_and_other_data_needs_a_preset(tmp_path, monkeypatch, capsys):
    from biva_core.train.cli import main
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "cache"))
    folder = own_folder(tmp_path / "rgb", 40, 8, grey=False)
    args = ["--preset", "tiny", "--data", "folder", "--data-dir", str(folder), "--steps", "1", "--batch-size", "2",
            "--no-progress", "--set", "num_threads=1", "eval_every=1", "eval_images=2"]
    main(["--out", str(tmp_path / "a"), *args, "image_shape=[1,8,8]"])   # asked for grey: converted
    assert load_pretrained(tmp_path / "a").config.image_shape == (1, 8, 8)
    grey = own_folder(tmp_path / "grey", 40, 8, grey=True)
    main(["--out", str(tmp_path / "b"), *args, "--data-dir", str(grey)])   # a grey folder: a grey model
    assert load_pretrained(tmp_path / "b").config.image_shape == (1, 8, 8)
    assert "tiny: grey folder, so image_shape=[1, 8, 8]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--preset is required for --data mnist"):
        main(["--data", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="too small for a model"):
        main(["--data", "folder", "--data-dir", str(own_folder(tmp_path / "tiny", 5, 8, grey=True)),
              "--out", str(tmp_path / "d")])
