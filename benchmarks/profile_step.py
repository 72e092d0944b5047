"""Where a training step's time goes: torch.profiler over a few real `Trainer.train_step` calls.

    python benchmarks/profile_step.py --preset celeba64_cpu --batch 48 --threads 2
    python benchmarks/profile_step.py --preset celeba64_cpu --amp bf16 --channels-last

Prints the operators by their own (self) time, grouped by input shape, so that one large
tensor's fills or copies stand out from the many small convolutions. Random uint8 data.
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from biva_core.model.config import PRESETS, preset
from biva_core.train.trainer import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="celeba64_cpu", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    high = 2 if cfg.likelihood == "bernoulli" else 256
    data = np.random.default_rng(0).integers(0, high, (4 * args.batch, *cfg.image_shape), dtype=np.uint8)
    tc = TrainConfig(batch_size=args.batch, warmup=1, amp=args.amp, channels_last=args.channels_last,
                     flip=cfg.image_shape[0] == 3)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, tc, data, data[:args.batch], out, log=lambda *a: None)
        tr.train_step(tr.next_batch())  # warm-up: first-call allocations and kernel choices
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.steps):
                tr.train_step(tr.next_batch())
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6 / args.steps
    print(f"{args.preset}, batch {args.batch}, {args.threads} threads, amp {args.amp}, "
          f"channels-last {args.channels_last}: {total:.2f} s of operator time per step\n")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=32, max_shapes_column_width=70))


if __name__ == "__main__":
    main()
