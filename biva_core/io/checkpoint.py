"""The pretrained layout: `config.json` + safetensors weights, sharded the Hugging Face way.

    DIR/config.json                        {"format_version", "model": ModelConfig, "training": {...}}
    DIR/model.safetensors                  one file, or when larger than the shard size:
    DIR/model-00001-of-0000N.safetensors   + DIR/model.safetensors.index.json (weight_map)

Loading is strict (every tensor present, no extra ones, shapes equal) and never unpickles.
Weights may be stored in float16 / bfloat16; loading upcasts to float32.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from biva_core.io.files import atomic_write
from biva_core.model.config import ModelConfig
from biva_core.model import BIVA

FORMAT_VERSION = 1
CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A pretrained folder that cannot be loaded; the message names the file."""


def save_pretrained(model: BIVA, directory: str | os.PathLike, *, training: dict | None = None,
                    dtype: torch.dtype | None = None, max_shard_mb: float | None = None) -> Path:
    """Write config.json and the weights (as `dtype`, default their own) to `directory`,
    sharded into files of at most `max_shard_mb` MiB when given. Returns the folder."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: (t.detach().to(dtype) if dtype is not None and t.is_floating_point() else t.detach())
             .contiguous().cpu() for name, t in model.state_dict().items()}
    limit = None if max_shard_mb is None else int(max_shard_mb * 2 ** 20)
    shards: list[dict] = [{}]
    size = 1024  # the file's JSON header: its fixed part and, below, one entry per tensor
    for name, t in state.items():
        # data + header entry ({"name":{"dtype":"F16","shape":[...],"data_offsets":[a,b]}})
        nbytes = t.numel() * t.element_size() + len(name) + 24 * len(t.shape) + 96
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 1024
        shards[-1][name] = t
        size += nbytes
    old = set(out.glob("model*.safetensors")) | ({out / INDEX} if (out / INDEX).exists() else set())
    if len(shards) == 1:
        names = [SINGLE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for fname, shard in zip(names, shards):
        atomic_write(out / fname, lambda p, s=shard: save_file(s, p, metadata={"format": "pt"}))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {n: f for f, s in zip(names, shards) for n in s}}
        atomic_write(out / INDEX, lambda p: Path(p).write_text(json.dumps(index, indent=2)))
    config = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), "training": training or {}}
    atomic_write(out / CONFIG, lambda p: Path(p).write_text(json.dumps(config, indent=2)))
    for stale in old - {out / n for n in names} - ({out / INDEX} if len(shards) > 1 else set()):
        stale.unlink()
    return out


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl log; unreadable lines are skipped (a log may be cut short)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def training_totals(training: dict) -> tuple[int, float]:
    """Steps and seconds of the whole record of a pretrained folder's training metadata: the
    totals when its run continued a shipped folder (export --continues), else the run's own."""
    return (int(training.get("step_total", training.get("step", 0))),
            float(training.get("seconds_total", training.get("seconds", 0.0))))


def read_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """(model config, training metadata) of a pretrained folder."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (is {directory} a pretrained folder?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown format_version {version!r} (this code reads {FORMAT_VERSION})")
    try:
        return ModelConfig.from_dict(data["model"]), data.get("training", {})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model config: {e}") from None


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    files: list[Path]
    if (directory / INDEX).is_file():
        try:
            weight_map = json.loads((directory / INDEX).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{directory / INDEX}: bad index ({e})") from None
        files = [directory / f for f in sorted(set(weight_map.values()))]
    elif (directory / SINGLE).is_file():
        weight_map, files = None, [directory / SINGLE]
    else:
        raise CheckpointError(f"{directory / SINGLE}: missing (and no {INDEX})")
    state = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: missing shard")
        try:
            part = load_file(f)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{f}: unreadable or truncated safetensors file ({e})") from None
        if weight_map is not None:
            wrong = [n for n in part if weight_map.get(n) != f.name]
            if wrong:
                raise CheckpointError(f"{f}: holds tensors the index places elsewhere: {wrong[:3]}")
        state.update(part)
    return state


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> BIVA:
    """Rebuild the model from config.json and load its weights strictly (float32, eval mode).
    The training metadata is kept as `model.training_info`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such folder")
    config, training = read_config(directory)
    model = BIVA(config)
    expected = model.state_dict()
    state = _read_weights(directory)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{directory}: weights do not match {CONFIG}: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(f"{directory}: {name} has shape {tuple(t.shape)}, "
                                  f"{CONFIG} needs {tuple(expected[name].shape)}")
    model.load_state_dict({n: t.to(expected[n].dtype) for n, t in state.items()}, strict=True)
    model.training_info = training
    return model.to(device).eval()


def warm_start(model: BIVA, directory: str | os.PathLike, *, partial: bool = False) -> list[str]:
    """Copy a pretrained folder's weights into `model` (a warm start) and return the names of the
    tensors left at their initial values. Without `partial` every tensor must match by name and
    shape (CheckpointError otherwise, nothing copied); with it, those that match are copied and
    the rest (a changed level, a new head) start fresh."""
    source = load_pretrained(directory).state_dict()
    target = model.state_dict()
    same = {n: t for n, t in source.items() if n in target and t.shape == target[n].shape}
    fresh = sorted(set(target) - set(same))
    if not same or (fresh or len(same) < len(source)) and not partial:
        unused = sorted(set(source) - set(same))
        raise CheckpointError(f"{directory}: {len(fresh)} tensors of the model and {len(unused)} of the folder do not "
                              f"match by name and shape (e.g. {(fresh or unused)[:3]}); "
                              + ("nothing matches" if not same else "set init_partial=true to copy those that do"))
    model.load_state_dict({n: t.to(target[n].dtype) for n, t in same.items()}, strict=False)
    return fresh
