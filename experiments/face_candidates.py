"""Which L = 20 face model learns fastest per CPU-second? Train candidates for the same wall time
on CelebA-64 and compare valid bits/dim against seconds.

    python experiments/face_candidates.py run A --minutes 20 --threads 1     # -> runs/candidates/A
    python experiments/face_candidates.py run A --minutes 20 --threads 1 --amp bf16   # -> A_bf16
    python experiments/face_candidates.py run D --minutes 30 --schedule cosine --steps 1800   # -> D_cos
    python experiments/face_candidates.py report     # -> docs/celeba64_cpu_candidates.{md,png}
    python experiments/face_candidates.py report --runs runs/race --doc celeba64_cpu_race   # another race

Every candidate is BIVA with L = 20 levels on 64x64x3 and the 10-component discretized
logistic mixture; level 1 sits at 32x32 (the stem has stride 2) and the candidates differ in
how many levels sit at 32x32, 16x16, 8x8 and 4x4, in their widths and in their residual block
(`ModelConfig.block`: the paper's gated block or the bottleneck one). Runs use the real
Trainer (same data, flips, seed, validation on the first --valid images of the valid split);
the curve is the better of the EMA and the raw weights at each validation, as the trainer
keeps it. Seconds include validation. Two candidates may run at once with one thread each:
the comparison is fair when all of them ran under the same conditions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from biva_core.model.config import ModelConfig, faces64

ROOT = Path(__file__).resolve().parents[1]  # the checkout (its runs/, docs/ and data folder)

# name -> ([(levels, channels), ...] for 32x32, 16x16, 8x8, 4x4 (20 levels), residual block)
CANDIDATES = {
    "A": ([(2, 32), (4, 48), (8, 64), (6, 64)], "gated"),        # balanced, narrow (celeba64_cpu)
    "B": ([(1, 32), (3, 64), (8, 96), (8, 96)], "gated"),        # wider, depth at 8x8 / 4x4
    "C": ([(1, 24), (2, 48), (9, 64), (8, 64)], "gated"),        # fewest FLOPs: depth at 8x8 / 4x4
    "D": ([(2, 64), (4, 96), (8, 128), (6, 128)], "bottleneck"),  # A at twice the width, ~A's FLOPs: the
    #                                                                 race winner, preset celeba64_cpu_bottleneck
    "E": ([(2, 32), (4, 48), (8, 64), (6, 64)], "bottleneck"),   # A with a third of its FLOPs
}


def candidate(name: str) -> ModelConfig:
    widths, block = CANDIDATES[name]
    return faces64(widths).replace(block=block)


def run(args: argparse.Namespace) -> None:
    from biva_core.data import load_split
    from biva_core.train.trainer import TrainConfig, Trainer
    torch.set_num_threads(args.threads)
    tag = args.name + ("" if args.amp == "none" else f"_{args.amp}") + ("_cos" if args.schedule == "cosine" else "")
    out = Path(args.runs) / tag
    train = load_split("celeba", "train", args.data_dir, image_size=64, progress=False)
    valid = load_split("celeba", "valid", args.data_dir, image_size=64, progress=False)[:args.valid]
    tc = TrainConfig(batch_size=args.batch, lr=args.lr, warmup=100, amp=args.amp, lr_schedule=args.schedule,
                     lr_min=args.lr_min, steps=args.steps,
                     channels_last=args.amp == "bf16", max_minutes=args.minutes, num_threads=args.threads,
                     eval_every=args.eval_every, eval_images=args.valid, log_every=25, flip=True)
    trainer = Trainer(candidate(args.name), tc, train, valid, out, log=lambda m: print(m, file=sys.stderr))
    if (out / "state" / "scalars.json").is_file():
        trainer.load_state()
    print(json.dumps(trainer.run(progress=False)))


def logs(runs: Path) -> dict[str, list[dict]]:
    """Each run's metrics.jsonl rows (training log lines and validations)."""
    return {d.name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
            for d in sorted(p for p in runs.iterdir() if (p / "metrics.jsonl").is_file())}


def report(args: argparse.Namespace) -> None:
    from biva_core.model import BIVA
    from biva_core.io.plots import line_chart
    runs, docs = Path(args.runs), ROOT / "docs"
    every = logs(runs)
    data = {tag: [r for r in log if "valid_bpd" in r] for tag, log in every.items()}
    series, lines = {}, []
    lines.append("| run | levels at 32/16/8/4 | channels | block | parameters | GFLOP / image (train) "
                 "| train images/s | steps | minutes | best valid bits/dim |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for tag, rows in data.items():
        if not rows:
            continue
        name = tag.split("_")[0]
        cfg = candidate(name)
        params = sum(p.numel() for p in BIVA(cfg).parameters()) / 1e6
        gflop = train_gflop_per_image(cfg)
        best = [min(r["valid_bpd"], r.get("raw_valid_bpd", float("inf"))) for r in rows]
        series[tag] = [(r["seconds"] / 60, b) for r, b in zip(rows, best)]
        ips = [r["images_per_s"] for r in every[tag] if "images_per_s" in r]
        ips = sorted(ips)[len(ips) // 2] if ips else float("nan")
        widths, block = CANDIDATES[name]
        lines.append(f"| {tag} | {'/'.join(str(n) for n, _ in widths)} | {'/'.join(str(c) for _, c in widths)} "
                     f"| {block} | {params:.1f}M | {gflop:.2f} | {ips:.1f} | {rows[-1]['step']} | {rows[-1]['seconds'] / 60:.1f} "
                     f"| {min(best):.3f} |")
    line_chart(series, docs / f"{args.doc}.png", title="CelebA-64, L = 20: valid bits/dim vs CPU time",
               xlabel="minutes (1 thread each)", ylabel="valid bits/dim")
    # fp32 against bf16 autocast of the same candidate, per step: does bf16 move the bound?
    twins = {t.split("_")[0] for t in data if "_bf16" in t}  # candidates that also ran under bf16
    pairs = {t: [(r["step"], min(r["valid_bpd"], r.get("raw_valid_bpd", float("inf")))) for r in rows]
             for t, rows in data.items() if t.split("_")[0] in twins and "_cos" not in t}
    if len(pairs) >= 2:
        line_chart(pairs, docs / "celeba64_cpu_fp32_vs_bf16.png", title="fp32 vs bf16 autocast: valid bits/dim per step",
                   xlabel="step (batch 16)", ylabel="valid bits/dim")
    table = "\n".join(lines)
    bf16 = ("The same candidate under fp32 and under bf16 autocast (channels-last), per step:\n\n"
            "![fp32 vs bf16](celeba64_cpu_fp32_vs_bf16.png)\n") if len(pairs) >= 2 else ""
    (docs / f"{args.doc}.md").write_text(
        f"# CPU face presets: candidates\n\nMade by `python experiments/face_candidates.py report --runs {os.path.relpath(args.runs, ROOT)} "
        f"--doc {args.doc}` from the runs of `python experiments/face_candidates.py run NAME --threads 1 ...` (two at "
        "a time on the 2-core machine, one thread each). Valid bits/dim is the better of the EMA and the raw weights "
        f"on the first {args.valid} valid images, single-sample ELBO.\n\n{table}\n\n![curves]({args.doc}.png)\n\n"
        + bf16)
    print(table)


def train_gflop_per_image(cfg: ModelConfig) -> float:
    """FLOPs of one training step (forward + backward) per image, from torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    from biva_core.model import BIVA
    model, x = BIVA(cfg), torch.rand(2, *cfg.image_shape)
    with FlopCounterMode(display=False) as fc:
        log_px, kl = model(x)
        (-(log_px - sum(kl))).sum().backward()
    return fc.get_total_flops() / 2 / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("name", choices=sorted(CANDIDATES))
    r.add_argument("--minutes", type=float, default=20.0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--amp", choices=["none", "bf16"], default="none")
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--schedule", choices=["exp", "cosine"], default="exp",
                   help="exp: the trainer's default (lr_decay 0.999999 a step: ~constant); cosine: to --lr-min over --steps")
    r.add_argument("--lr-min", type=float, default=1e-4)
    r.add_argument("--steps", type=int, default=10 ** 6, help="planned steps (the cosine's length; --minutes stops it)")
    r.add_argument("--eval-every", type=int, default=150)
    r.add_argument("--data-dir", default=os.environ.get("BIVA_DATA", str(ROOT.parent / "shared" / "data")))
    rep = sub.add_parser("report")
    rep.add_argument("--doc", default="celeba64_cpu_candidates", help="docs/DOC.md and docs/DOC.png")
    for p in (r, rep):
        p.add_argument("--runs", default=str(ROOT / "runs" / "candidates"))
        p.add_argument("--valid", type=int, default=300)
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
