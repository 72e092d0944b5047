"""The resume state of a training run (OUT/state/): what `--resume` needs to continue bit for bit.

    state/tensors-<step>.safetensors   weights, EMA, optimizer moments, every rank's RNG, the guard's norms
    state/scalars.json                 step, epoch and position in the data order, best scores, seconds,
                                       the KL history, the optimizer's groups, both configs, and the
                                       name of the tensor file it goes with

A crash at any point leaves a consistent pair: the tensors are written first, then scalars.json
replaces the old one atomically, then older tensor files are removed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from biva_core.io.files import atomic_write
from biva_core.model.config import ModelConfig
from biva_core.train import distributed as dist


def save(trainer) -> None:
    """Everything --resume needs. Collective: every rank sends its RNG state, rank 0 writes."""
    rng = dist.gather_rng(trainer.device)
    if trainer.rank:
        return
    d = trainer.out / "state"
    d.mkdir(exist_ok=True)
    tensors = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
    tensors.update({f"rng.{r}": v for r, v in enumerate(rng)})
    guard_tensors, guard_scalars = trainer.guard.state()
    tensors.update(guard_tensors)
    opt = trainer.opt.state_dict()
    for pid, st in opt["state"].items():
        for name, v in st.items():
            tensors[f"opt.{pid}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    name = f"tensors-{trainer.step:09d}.safetensors"
    atomic_write(d / name, lambda p: save_file(tensors, p))
    scalars = {"step": trainer.step, "epoch": trainer.batches.epoch, "pos": trainer.batches.pos,
               "best_bpd": trainer.best_bpd,
               "best_error": trainer.best_error if math.isfinite(trainer.best_error) else None,
               "seconds": trainer.seconds, "kl_history": trainer.kl_history, "tensors": name,
               "world_size": trainer.world, "param_groups": opt["param_groups"], "guard": guard_scalars,
               "train_config": trainer.cfg.to_dict(), "model_config": trainer.model.config.to_dict()}
    atomic_write(d / "scalars.json", lambda p: Path(p).write_text(json.dumps(scalars)))
    for old in d.glob("tensors*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load(trainer) -> None:
    """Restore a run saved by `save` (on every rank)."""
    d = trainer.out / "state"
    if not (d / "scalars.json").is_file():
        raise FileNotFoundError(f"{d / 'scalars.json'}: no training state to resume from")
    scalars = json.loads((d / "scalars.json").read_text())
    if ModelConfig.from_dict(scalars["model_config"]) != trainer.model.config:  # JSON has lists, not tuples
        raise ValueError(f"{d}: the saved run has another model config; resume with the same --preset/--set")
    tensors = load_file(d / scalars.get("tensors", "tensors.safetensors"), device=str(trainer.device))
    trainer.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    trainer.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.cpu() if name == "step" else v
    trainer.opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    trainer.step, trainer.batches.epoch, trainer.batches.pos = scalars["step"], scalars["epoch"], scalars["pos"]
    trainer.best_bpd, trainer.seconds = scalars["best_bpd"], scalars["seconds"]
    trainer.best_error = math.inf if scalars.get("best_error") is None else scalars["best_error"]
    trainer.kl_history = [tuple(r) for r in scalars["kl_history"]]
    trainer.guard.load(tensors, scalars.get("guard", {}))
    if f"rng.{trainer.rank}" in tensors:
        dist.set_rng(tensors[f"rng.{trainer.rank}"].cpu(), trainer.device)
    elif "torch_rng" in scalars and trainer.rank == 0:  # the first state format: rank 0's CPU RNG
        torch.set_rng_state(torch.tensor(scalars["torch_rng"], dtype=torch.uint8))
    else:  # more ranks than the saved run: a fresh stream (the run is no longer bit-exact)
        trainer.log(f"rank {trainer.rank}: no saved RNG state (saved with {scalars.get('world_size', 1)} ranks)")
    if scalars.get("world_size", 1) != trainer.world and trainer.rank == 0:
        trainer.log(f"resuming a {scalars.get('world_size', 1)}-rank run on {trainer.world} ranks")
