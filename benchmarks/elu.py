"""The model's ELU (biva_core.model.layers.elu, written with exp) against F.elu (expm1, which this
torch does not vectorize on the CPU), side by side in one run: forward + backward on the face
model's activation shapes, then whole training steps of a preset with either.

    python benchmarks/elu.py --threads 1                      # celeba64_cpu, batch 16
    python benchmarks/elu.py --threads 2 --preset celeba64_cpu --steps 6

Medians of alternating repeats, so a slower minute hurts both alike.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from biva_core.model import layers
from biva_core.model.config import PRESETS, preset
from biva_core.train.trainer import TrainConfig, Trainer

SHAPES = [(16, 32, 64, 64), (16, 32, 32, 32), (16, 48, 16, 16), (16, 64, 8, 8), (16, 64, 4, 4)]


class _Reference:
    apply = staticmethod(F.elu)


def use(which: str) -> None:
    """Route layers.elu through F.elu ("F.elu") or the model's own function ("model")."""
    layers._ELU = _Reference if which == "F.elu" else _MODEL


_MODEL = layers._ELU


def fwd_bwd_ms(x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    y = layers.elu(x)
    y.backward(torch.ones_like(y))
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--preset", default="celeba64_cpu", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4, help="training steps timed with each (after one warm-up)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); forward + backward, ms (median of {args.repeats})")
    for shape in SHAPES:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
        times = {"F.elu": [], "model": []}
        for _ in range(args.repeats):
            for which in times:
                use(which)
                times[which].append(fwd_bwd_ms(x))
        a, b = (statistics.median(times[w]) for w in ("F.elu", "model"))
        print(f"  {str(shape):18s} F.elu {a:7.2f}   model's {b:7.2f}   {a / b:5.2f}x")
    cfg = preset(args.preset)
    high = 2 if cfg.likelihood == "bernoulli" else 256
    data = np.random.default_rng(0).integers(0, high, (8 * args.batch, *cfg.image_shape), dtype=np.uint8)
    tc = TrainConfig(batch_size=args.batch, warmup=1, channels_last=True, flip=cfg.image_shape[0] == 3,
                     num_threads=args.threads)
    steps = {"F.elu": [], "model": []}
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, tc, data, data[:args.batch], out, log=lambda *a: None)
        tr.train_step(tr.next_batch())
        for _ in range(args.steps):
            for which in steps:
                use(which)
                batch = tr.next_batch()
                t0 = time.perf_counter()
                tr.train_step(batch)
                steps[which].append(time.perf_counter() - t0)
    use("model")
    a, b = (statistics.median(steps[w]) for w in ("F.elu", "model"))
    print(f"{args.preset} training step, batch {args.batch}: F.elu {a:.3f} s, model's {b:.3f} s: {a / b:.2f}x "
          f"({args.batch / a:.1f} -> {args.batch / b:.1f} images/s)")


if __name__ == "__main__":
    main()
