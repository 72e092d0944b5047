"""The cost of the host-sync-free update (sync_free=on: opt.step computed, then kept or undone on
the device) against the branch (sync_free=off: one host read of the decision), side by side.

    python benchmarks/guarded_step.py --preset celeba64_cpu --batch 16 --steps 5 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from biva_core import preset
from biva_core.train.trainer import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="celeba64_cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    c, h, w = cfg.image_shape
    data = np.random.default_rng(0).integers(0, 2 if cfg.likelihood == "bernoulli" else 256,
                                             (4 * args.batch, c, h, w), dtype=np.uint8)
    times = {"guarded": [], "plain": []}
    trainers = {}
    for name in times:
        t = Trainer(cfg, TrainConfig(batch_size=args.batch, flip=False, num_threads=args.threads,
                                     sync_free="on" if name == "guarded" else "off"), data, data,
                    f"/tmp/guarded_step_{name}", log=lambda m: None)
        t.train_step(t.next_batch())  # warm-up
        trainers[name] = t
    for _ in range(args.steps):  # interleaved, so both see the same machine
        for name, t in trainers.items():
            x = t.next_batch()
            s = time.perf_counter()
            t.train_step(x)
            times[name].append(time.perf_counter() - s)
    g, p = statistics.median(times["guarded"]), statistics.median(times["plain"])
    print(f"{args.preset} batch {args.batch}, {args.threads} threads: guarded {g * 1e3:.0f} ms, plain {p * 1e3:.0f} ms, "
          f"ratio {g / p:.3f}")


if __name__ == "__main__":
    main()
