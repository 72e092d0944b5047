"""Training runs as the Runs tab sees them: read-only views of train.py output folders.

A run folder (what `python train.py --out DIR` writes) holds metrics.jsonl (one JSON object per
log line or validation), state/scalars.json (for --resume: the step, the training config),
config.json + safetensors (the best weights so far) and samples_t*.png. Training keeps writing
while the studio reads, so every reader here tolerates a folder being written: a half-written
last line is skipped, a missing file means "not yet", and a folder that is not a run gives a
message, never an exception.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biva_core.io.plots import kl_heatmaps, kl_panel, line_chart
from biva_core.model import ModelConfig

from .card import read_metrics  # one reader of metrics.jsonl for the Model and Runs tabs
from .models import absolute

TRAIN_COLUMNS = ["step", "hours", "series", "bits/dim"]


def is_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "metrics.jsonl").is_file() or (folder / "state" / "scalars.json").is_file())


def list_runs(root: str | Path | None) -> list[str]:
    """The run folders directly under root (and root itself when it is a run), newest first."""
    if root is None:
        return []
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root] if is_run(root) else []
    found += [p for p in root.iterdir() if not p.name.startswith(".") and is_run(p)]
    return [str(p) for p in sorted(found, key=lambda p: -_mtime(p))]


def _mtime(folder: Path) -> float:
    try:
        return (folder / "metrics.jsonl").stat().st_mtime
    except OSError:
        return folder.stat().st_mtime


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class RunView:
    """What the Runs tab shows of one run."""
    folder: str
    status: str                              # markdown: step, time so far, time left, or why nothing
    bpd: pd.DataFrame                        # step, hours, series (train / valid EMA / valid raw), bits/dim
    kl: pd.DataFrame                         # step, latent, KL (nats): the paper's Fig. 2
    speed: pd.DataFrame                      # step, images/s
    samples: str | None                      # the latest sample grid
    has_weights: bool                        # config.json + safetensors: loadable into the other tabs
    steps: int = 0
    latents: list[str] = field(default_factory=list)
    figure2: tuple = ((), (), ())              # kl_panel: hours, latent names, KL rows of the training batches
    pictures: dict[str, str] = field(default_factory=dict)   # drawn by the engine: "curves", "figure2"


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float" if c not in ("series", "latent") else "object") for c in columns})


def read_run(folder: str | Path) -> RunView:
    folder = Path(folder)
    empty = lambda why: RunView(str(folder), why, _empty(TRAIN_COLUMNS), _empty(["step", "latent", "KL (nats)"]),  # noqa: E731
                                _empty(["step", "images/s"]), None, False)
    if not folder.is_dir():
        return empty(f"**{folder.name}**: the folder does not exist (any more).")
    if not is_run(folder):
        return empty(f"**{folder.name}** is not a training run: no metrics.jsonl or state/scalars.json "
                     "(a run is what `python train.py --out DIR` writes).")
    rows = read_metrics(folder / "metrics.jsonl")
    scalars = _json(folder / "state" / "scalars.json") or {}
    config = _json(folder / "config.json") or {}
    train_cfg = scalars.get("train_config") or (config.get("training") or {}).get("train_config") or {}
    model_cfg = scalars.get("model_config") or config.get("model") or {}
    train = [r for r in rows if "bpd" in r]
    valid = [r for r in rows if "valid_bpd" in r]
    hours = lambda r: float(r.get("seconds", 0.0)) / 3600  # noqa: E731
    bpd = [(r["step"], hours(r), "train (batch)", r["bpd"]) for r in train]
    bpd += [(r["step"], hours(r), "valid, EMA weights", r["valid_bpd"]) for r in valid]
    bpd += [(r["step"], hours(r), "valid, raw weights", r["raw_valid_bpd"]) for r in valid if "raw_valid_bpd" in r]
    n_lat = max((len(r.get("valid_kl") or r.get("kl") or []) for r in rows), default=0)
    names = _latent_names(model_cfg, n_lat)
    kl = [(r["step"], names[j], float(v)) for r in valid for j, v in enumerate(r.get("valid_kl") or [])
          if j < len(names)]
    speed = [(r["step"], r["images_per_s"]) for r in train if "images_per_s" in r]
    samples = sorted(folder.glob("samples_t*.png"), key=lambda p: p.stat().st_mtime)
    has_weights = (folder / "config.json").is_file() and any(folder.glob("model*.safetensors"))
    step = max((r["step"] for r in rows), default=scalars.get("step", 0))
    seconds = max((float(r.get("seconds", 0)) for r in rows), default=float(scalars.get("seconds", 0)))
    steps = int(train_cfg.get("steps") or 0)
    status = _status(folder, step, seconds, steps, train, valid, train_cfg)
    events = [r for r in rows if r.get("event") in ("rollback", "stopped")]  # the update guard's word
    if events:
        last = events[-1]
        head = "**Stopped:**" if last["event"] == "stopped" else f"**Warning** ({len(events)} rollback(s)):"
        status += f"\n\n{head} {last.get('message', '')}"
    return RunView(str(folder), status, pd.DataFrame(bpd, columns=TRAIN_COLUMNS),
                   pd.DataFrame(kl, columns=["step", "latent", "KL (nats)"]),
                   pd.DataFrame(speed, columns=["step", "images/s"]),
                   str(samples[-1]) if samples else None, has_weights, steps, names, kl_panel(rows, names))


def _latent_names(model_cfg: dict, n: int) -> list[str]:
    """The model's latent names (ModelConfig.latent_names); z1 .. zn while its config is unreadable."""
    try:
        names = ModelConfig.from_dict(model_cfg).latent_names
    except (TypeError, ValueError, KeyError):
        names = []
    return names if len(names) == n else [f"z{j + 1}" for j in range(n)]


def _status(folder: Path, step: int, seconds: float, steps: int, train: list, valid: list, cfg: dict) -> str:
    if not train and not valid:
        return f"**{folder.name}**: started, nothing logged yet (the first line comes after log_every steps)."
    parts = [f"**{folder.name}**: step {step:,}" + (f" of {steps:,}" if steps else ""),
             f"{seconds / 3600:.2f} h of training"]
    recent = [r for r in train if "seconds" in r][-5:]
    running = time.time() - _mtime(folder) < 600  # a run that logged nothing for 10 minutes has no time left
    if steps and running and len(recent) >= 2 and recent[-1]["seconds"] > recent[0]["seconds"]:
        rate = (recent[-1]["step"] - recent[0]["step"]) / (recent[-1]["seconds"] - recent[0]["seconds"])
        left = max(0.0, (steps - step) / rate) if rate > 0 else float("inf")
        wall = float(cfg.get("max_minutes") or 0) * 60    # the run's own budgets end it sooner
        if wall:
            left = min(left, max(0.0, wall - seconds))
        parts.append(f"about {left / 3600:.2f} h left at {rate * 60:.0f} steps/min" if left < 1e9 else "")
        if cfg.get("max_cpu_minutes"):
            parts.append(f"or sooner: it stops after {float(cfg['max_cpu_minutes']):g} CPU minutes")
    if valid:
        best = min(min(r["valid_bpd"], r.get("raw_valid_bpd", float("inf"))) for r in valid)
        parts.append(f"best valid {best:.4f} bits/dim")
    age = time.time() - _mtime(folder)
    parts.append("log written just now" if age < 120 else f"last log {age / 60:.0f} min ago")
    return ", ".join(p for p in parts if p) + "."


def draw_pictures(view: RunView, kept: Path, stamp: int) -> dict[str, str]:
    """The Runs tab's pictures of a run, drawn into `kept` once per log state (`stamp`: the log's
    mtime): the bits/dim curves with their legend and the paper's Figure 2; older ones of the run
    are removed, so a run watched for hours leaves two files."""
    run, out = Path(view.folder).name, {}
    for what, draw in (("curves", _draw_curves), ("figure2", _draw_figure2)):
        path = kept / f"run-{run}-{what}-{stamp}.png"
        if not path.is_file():
            for old in kept.glob(f"run-{run}-{what}-*.png"):
                old.unlink(missing_ok=True)
            draw(view, path)
        out[what] = str(path)
    return out


def _draw_curves(view: RunView, path: Path) -> None:
    series = {name: list(zip(g["step"], g["bits/dim"])) for name, g in view.bpd.groupby("series", sort=False)}
    line_chart(series, path, title=f"{Path(view.folder).name}: bits/dim", xlabel="step", ylabel="bits/dim",
               note="train: the batches' ELBO; valid: the EMA and the raw weights on the valid split")


def _draw_figure2(view: RunView, path: Path) -> None:
    hours, names, rows = view.figure2
    kl_heatmaps({Path(view.folder).name: (list(hours), list(names), [list(r) for r in rows])}, path,
                title="KL per latent (training batches) against training time, as in the paper's Figure 2",
                note="log scale; the top latent on top; below 0.1 nats a latent is collapsed")


class RunsFolder:
    """The folder of runs a studio watches (read only; None: the studio watches none) and the
    pictures it draws of them into its own folder `kept` (a run folder is never served)."""

    def __init__(self, root: str | Path | None, kept: Path):
        self.root = absolute(root) if root else None
        self.kept = kept

    def list(self) -> list[str]:
        """The training runs under the runs folder, newest first (empty without one)."""
        return list_runs(self.root)

    def folder(self, folder: str | None) -> Path:
        """The run folder named `folder`, which must lie under the runs folder (a run linked
        into it counts as one of its runs); ValueError otherwise."""
        if not folder or self.root is None:
            raise ValueError("no run chosen" + ("" if self.root else ": start the studio with --runs DIR"))
        path = absolute(folder)
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"{folder}: not a run under {self.root.name}/")
        return path

    def view(self, folder: str | None) -> RunView:
        """A run as the Runs tab shows it, with its pictures drawn (bits/dim with a legend, the
        paper's Figure 2) and its samples copied into `kept`. A picture is redrawn only when the
        run logged something new."""
        view = read_run(self.folder(folder))
        self.kept.mkdir(parents=True, exist_ok=True)
        if view.samples:
            copy = self.kept / f"run-{Path(view.folder).name}-{Path(view.samples).name}"
            shutil.copyfile(view.samples, copy)
            view.samples = str(copy)
        try:
            stamp = (Path(view.folder) / "metrics.jsonl").stat().st_mtime_ns
        except OSError:
            return view
        view.pictures = draw_pictures(view, self.kept, stamp)
        return view
