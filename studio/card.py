"""The Model tab: what a model is (config, size, training, results) and how it uses its latents
(per-level KL and active units on a few images), with the run's logs when they were shipped."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from biva_core import BIVA
from biva_core.data.prepare import Prepared
from biva_core.io.checkpoint import read_metrics, training_totals  # read_metrics: also the Runs tab's reader
from biva_core.io.plots import kl_heatmaps, kl_panel, line_chart

from . import draw

METRICS = "metrics.jsonl"
KL_PLOT = "kl_per_latent.png"
RESULTS = "results.json"


@dataclass
class Card:
    markdown: str
    levels: str                      # markdown table, one row per level
    config: str                      # config.json's model section, pretty JSON
    curves: str | None               # training curves drawn from metrics.jsonl
    kl_plot: str | None              # Figure 2 from metrics.jsonl, else the run's own kl_per_latent.png
    samples: list[str]               # the run's samples_t*.png


@dataclass
class LatentReport:
    chart: str                       # per-level KL bar chart
    rows: list[list]                 # per latent: name, level, KL, active units, units
    note: str
    headers: tuple[str, ...] = ("latent", "level", "KL (nats)", "active units", "units")


def parameter_count(model: BIVA) -> int:
    return sum(p.numel() for p in model.parameters())


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def training_curves(directory: Path, out: Path) -> str | None:
    """bits/dim over steps (train, valid and raw-weights valid) from metrics.jsonl, if present."""
    rows = read_metrics(directory / METRICS)
    series = {}
    for key, label in (("bpd", "train (batch)"), ("valid_bpd", "valid, EMA weights"),
                       ("raw_valid_bpd", "valid, raw weights")):
        points = [(float(r["step"]), float(r[key])) for r in rows if _number(r.get(key))]
        if points:
            series[label] = points
    if not series:
        return None
    line_chart(series, out, title="training curves (metrics.jsonl)", xlabel="step", ylabel="bits/dim",
               note="train: the batches' ELBO while training; valid: EMA (averaged) and raw weights; "
                    "the better of the two is shipped")
    return str(out)


EARLY_STEPS = 1000   # below this many training steps a model's samples are still near its mean image


def summary(name: str, model: BIVA) -> str:
    """One line on what a model is and how far it was trained (the Sample tab's caption)."""
    cfg, info = model.config, model.training_info or {}
    words = f"**{name}**: {cfg.variant.upper()}, L = {cfg.L}, {parameter_count(model) / 1e6:.1f}M parameters"
    if "step" not in info:
        return words + "; no training record."
    step, seconds = training_totals(info)
    words += f", trained {step:,} steps ({seconds / 3600:.1f} h)"
    if _number(info.get("best_valid_bpd")):
        words += f", best valid {info['best_valid_bpd']:.3f} bits/dim"
    if step < EARLY_STEPS:
        words += (f". An early model (under {EARLY_STEPS:,} steps): its samples are still close to its mean "
                  "image, flat and grey")
    return words + "."


def card(name: str, directory: Path, model: BIVA, reference_words: str, out: Path) -> Card:
    cfg = model.config
    c, h, w = cfg.image_shape
    info = model.training_info or {}
    lik = ("Bernoulli" if cfg.likelihood == "bernoulli"
           else f"discretized logistic mixture ({cfg.mixtures} components)")
    lines = [f"| model | **{name}** |", "|---|---|",
             f"| images | {c} x {h} x {w}, p(x\\|z): {lik} |",
             f"| architecture | {cfg.variant.upper()}, L = {cfg.L} levels, N = {cfg.n_latents} latent variables |",
             f"| parameters | {parameter_count(model):,} |"]
    if info:
        step, seconds = training_totals(info)  # the whole record when the run continued shipped weights
        bits = [f"step {step}" if "step" in info else "",
                f"{seconds:.0f} s" if _number(info.get("seconds")) else "",
                f"best valid {info['best_valid_bpd']:.3f} bits/dim" if _number(info.get("best_valid_bpd")) else "",
                f"weights: {info['weights']}" if "weights" in info else ""]
        lines.append(f"| training | {', '.join(b for b in bits if b) or 'recorded'} |")
    results = _read_json(directory / RESULTS) or {}
    ev = results.get("eval", {}) if isinstance(results.get("eval"), dict) else {}
    shown = [f"{k.replace('_', ' ')} {v:.3f}" for k, v in ev.items() if k.endswith("bpd") and _number(v)]
    if shown:
        lines.append(f"| results.json | {'; '.join(shown)} (bits/dim) |")
    lines.append(f"| reference.json | {reference_words} |")
    levels = ["| level | resolution | channels | latent | blocks |", "|---|---|---|---|---|"]
    for i, (lv, (rh, rw)) in enumerate(zip(cfg.levels, cfg.resolutions()), 1):
        kind = f"{lv.latent}" if lv.dense else f"{lv.latent} x {rh} x {rw}"
        pair = " (BU + TD)" if cfg.variant == "biva" and i < cfg.L else ""
        levels.append(f"| {i} | {rh} x {rw} | {lv.channels} | {kind}{pair} | {lv.blocks} |")
    # the run's pictures are copied out so the page never serves the weights folder itself
    shipped = [p for p in [directory / KL_PLOT, *sorted(directory.glob("samples_t*.png"))] if p.is_file()]
    for p in shipped:
        shutil.copyfile(p, out / p.name)
    kl_plot = figure2(directory, model, out / "figure2.png") or (out / KL_PLOT if (out / KL_PLOT).is_file() else None)
    return Card("\n".join(lines), "\n".join(levels), json.dumps(cfg.to_dict(), indent=2),
                training_curves(directory, out / "curves.png"),
                str(kl_plot) if kl_plot else None,
                [str(out / p.name) for p in shipped if p.name != KL_PLOT])


def figure2(directory: Path, model: BIVA, path: Path) -> Path | None:
    """The paper's Figure 2 for this model's training: log KL per latent against training time,
    from the KL of the training batches in its metrics.jsonl; None when the log holds none."""
    metrics = directory / METRICS
    hours, names, rows = kl_panel(read_metrics(metrics), model.latent_names()) if metrics.is_file() else ([], [], [])
    if not rows:
        return None
    kl_heatmaps({directory.name: (hours, names, rows)}, path,
                title="KL per latent (training batches) against training time, as in the paper's Figure 2",
                note="log scale; the top latent on top; below 0.1 nats a latent is collapsed")
    return path


def units(model: BIVA) -> list[int]:
    """Units per latent variable: channels x height x width, or the size of a dense latent."""
    cfg = model.config
    out = []
    for i in range(cfg.n_latents):
        j = model.latent_level(i) - 1
        lv, (h, w) = cfg.levels[j], cfg.resolutions()[j]
        out.append(lv.latent if lv.dense else lv.latent * h * w)
    return out


def latent_report(model: BIVA, images: list[Prepared] | torch.Tensor, source: str, out: Path,
                  seed: int = 0) -> LatentReport:
    """Mean KL of each latent over the images (single-sample ELBO terms) summed per level, and
    active units (Var over the images of the posterior mean > 0.01) per latent."""
    x = images if isinstance(images, torch.Tensor) else torch.stack([p.x for p in images])
    kl = model.elbo(x, seed=seed)["kl"].mean(0).cpu().tolist()           # (N,)
    active = model.active_units([x])
    names, total = model.latent_names(), units(model)
    levels = [model.latent_level(i) for i in range(len(kl))]
    per_level = [sum(v for v, lv in zip(kl, levels) if lv == i) for i in range(1, model.config.L + 1)]
    chart = draw.log_bar_chart(per_level, [str(i) for i in range(1, model.config.L + 1)],
                               title=f"KL per level (nats, mean over {len(x)} {source}); "
                                     "level 1 is nearest the pixels",
                               ylabel="nats")
    path = out / "kl_per_level.png"
    chart.save(path)
    rows = [[n, lv, round(v, 3), a, u] for n, lv, v, a, u in zip(names, levels, kl, active, total)]
    note = (f"Over {len(x)} {source}. A unit is active when the variance over these images of its posterior "
            f"mean exceeds 0.01; {sum(active)} of {sum(total)} units are active. Few images give a rough count.")
    return LatentReport(str(path), rows, note)
