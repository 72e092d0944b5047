"""Our training step against the authors' released code, side by side in one run: their
binarized-MNIST BIVA (../shared/refbench, batch 48) and ours on the same config, in alternating
rounds so that both see the same machine, then the ratio of images per second.

    python benchmarks/vs_authors.py --threads 2 --rounds 2          # on an idle machine
    python benchmarks/vs_authors.py --threads 1 --rounds 1 --steps 4   # a quick look

Each round runs the authors' step (`../shared/refbench/run.sh`, their model, loss, Adamax and lr
schedule on synthetic binary images) and then ours (`benchmarks/train_speed.py`, the real
`Trainer.train_step` of the binarized_mnist preset in each --modes), each in a fresh process.
Prints one line per measurement and a table: images/s, GFLOP per step, GFLOP/s, and the ratio of
our images/s to theirs in the same round. Pause a background training while it runs (kill -STOP
PID, kill -CONT PID after) and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFBENCH = Path(os.environ.get("BIVA_REFBENCH", HERE.parent.parent / "shared" / "refbench"))


def authors(threads: int, batch: int, steps: int) -> dict:
    """images/s and GFLOP per step of the authors' step (their script's own printout)."""
    run = subprocess.run(["bash", str(REFBENCH / "run.sh"), "--configs", "mnist", "--threads", str(threads),
                          "--bs", str(batch), "--min_steps_mnist", str(steps), "--time_budget", "100000",
                          "--inf_reps", "1"], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the authors' benchmark failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    speed = re.search(r"\[mnist\] train: ([\d.]+) s/step, ([\d.]+) img/s", run.stdout)
    flops = re.search(r"\[mnist\] flops/step: fwd ([\d.]+) G, bwd ([\d.]+) G", run.stdout)
    if not speed:
        raise SystemExit(f"no timing in the authors' benchmark's output:\n{run.stdout[-2000:]}")
    step = float(speed.group(1))
    gflop = float(flops.group(1)) + float(flops.group(2)) if flops else None
    return {"code": "authors", "mode": "their step", "step_s": step, "images_per_s": batch / step, "gflop_per_step": gflop}


def ours(threads: int, batch: int, steps: int, mode: str) -> dict:
    run = subprocess.run([sys.executable, str(HERE / "train_speed.py"), "--device", "cpu", "--presets", "binarized_mnist",
                          "--modes", mode, "--batch", str(batch), "--steps", str(steps), "--warmup", "2",
                          "--threads", str(threads)], capture_output=True, text=True)
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not rows or "error" in rows[0]:
        raise SystemExit(f"our benchmark failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    r = rows[0]
    return {"code": "ours", "mode": mode, "step_s": r["step_ms"] / 1e3, "images_per_s": r["images_per_s"],
            "gflop_per_step": r["gflop_per_step"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["fp32_cl", "fp32"], help="our modes (benchmarks/train_speed.py)")
    args = ap.parse_args()
    if not (REFBENCH / "run.sh").is_file():
        raise SystemExit(f"no authors' benchmark at {REFBENCH} (set BIVA_REFBENCH to the refbench folder)")
    rows = []
    for r in range(1, args.rounds + 1):
        round_rows = [authors(args.threads, args.batch, args.steps)]
        round_rows += [ours(args.threads, args.batch, args.steps, m) for m in args.modes]
        for row in round_rows:
            row.update(round=r, ratio=row["images_per_s"] / round_rows[0]["images_per_s"])
            if row["gflop_per_step"]:
                row["gflop_per_s"] = row["gflop_per_step"] / row["step_s"]
            print(json.dumps(row), flush=True)
        rows += round_rows
    print(f"\nbinarized-MNIST config, batch {args.batch}, {args.threads} thread(s), {args.rounds} round(s)")
    print(f"{'code':<9}{'mode':<12}{'img/s':>8}{'GFLOP/step':>12}{'GFLOP/s':>9}{'ratio to theirs':>17}")
    for (code, mode) in dict.fromkeys((row["code"], row["mode"]) for row in rows):
        mine = [row for row in rows if (row["code"], row["mode"]) == (code, mode)]
        med = lambda key: statistics.median(row[key] for row in mine if row.get(key))  # noqa: E731
        gf = mine[0]["gflop_per_step"]
        print(f"{code:<9}{mode:<12}{med('images_per_s'):>8.1f}{(gf or float('nan')):>12.0f}"
              f"{(med('gflop_per_s') if gf else float('nan')):>9.0f}{med('ratio'):>17.2f}")


if __name__ == "__main__":
    main()
