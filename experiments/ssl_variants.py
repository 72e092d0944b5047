"""Semi-supervised variants side by side: the valid error (EMA weights) of each run against its
training steps, read from the runs' metrics.jsonl (issue 14: which change helps the classifier).

    python experiments/ssl_variants.py --runs base=runs/ssl100 fb0=runs/sslx_fb0 ... \
        --out docs/semisupervised_variants --max-step 300

Writes OUT.md (one row per run: its valid error at every evaluated step up to --max-step, and the
change it makes to the base run's training config) and OUT.png (the curves).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from biva_core.model.config import ModelConfig
from biva_core.io.plots import line_chart
from biva_core.train.config import TrainConfig, flatten


def curve(run: Path, max_step: int) -> list[tuple[int, float, float]]:
    """(step, minutes, valid error) of every evaluation up to max_step."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["seconds"] / 60, r["valid_error"]) for r in rows
            if "valid_error" in r and r["step"] <= max_step]


def settings(run: Path) -> dict:
    """The run's model and training config, keys it predates at their defaults; the training keys
    flat (ssl.alpha, ssl.consistency.weight), an older run's ssl_alpha under that name too."""
    info = json.loads((run / "config.json").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    return {**defaults, **flatten(TrainConfig().to_dict()), **info["model"], **flatten(info["training"]["train_config"])}


def short(key: str, value) -> str:
    """A config value for the table; levels as latent sizes, "d" marking a dense latent."""
    if key == "levels":
        return "/".join(f"{lv['latent']}{'d' if lv['dense'] else ''}" for lv in value)
    return json.dumps(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR; the first is the base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-step", type=int, default=300)
    args = ap.parse_args()
    runs = dict(item.split("=", 1) for item in args.runs)
    base = settings(Path(next(iter(runs.values()))))
    measured = {name: curve(Path(path), args.max_step) for name, path in runs.items()}
    curves, lines = {}, []
    steps = sorted({s for c in measured.values() for s, _, _ in c})
    lines.append("| run | change from the base | " + " | ".join(f"step {s}" for s in steps) + " |")
    lines.append("|---|---|" + "---|" * len(steps))
    for name, path in runs.items():
        c = measured[name]
        cfg = settings(Path(path))
        ignore = {"max_minutes", "eval_every", "snapshots", "steps"}
        diff = ", ".join(f"{k}={short(k, v)}" for k, v in cfg.items() if k not in ignore and base.get(k) != v) or "none"
        by_step = {s: e for s, _, e in c}
        lines.append(f"| {name} | {diff} | " + " | ".join(f"{100 * by_step[s]:.2f}%" if s in by_step else ""
                                                          for s in steps) + " |")
        curves[name] = [(s, 100 * e) for s, _, e in c]
    out = Path(args.out)
    line_chart(curves, out.with_suffix(".png"), title="MNIST, 100 labels: valid error (EMA) by variant",
               xlabel=f"training step (base: batch {base['batch_size']} unlabelled + {base['ssl.labelled_batch']} labelled)", ylabel="valid error (%)")
    command = "python experiments/ssl_variants.py --runs " + " ".join(args.runs) + \
        f" --out {args.out} --max-step {args.max_step}"
    out.with_suffix(".md").write_text(
        "# Semi-supervised variants\n\n`" + command + "`\n\n" + "\n".join(lines)
        + f"\n\n![valid error by variant]({out.with_suffix('.png').name})\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
