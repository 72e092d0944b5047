"""How close a training step comes to its convolutions' own speed: the step's convolution FLOPs per
second against the same convolutions (every shape the step runs, forward and backward) timed
alone, in one run.

    python benchmarks/conv_limit.py --preset celeba64_cpu --batch 16 --threads 2
    python benchmarks/conv_limit.py --threads 1 --steps 3
    python benchmarks/conv_limit.py --compile        # the step under torch.compile (compiled first)
    python benchmarks/conv_limit.py --amp none       # float32 (default: TrainConfig's, bf16 on AMX)

FLOPs: 2 x output elements x (input channels / groups) x kernel area for a forward convolution, and
twice that for its backward (the gradients of the input and of the weight; the first convolution's
input needs none). "fraction of the limit" = the convolutions alone / the whole step: 1.0 would
mean the step does nothing but its convolutions at their own speed. Each convolution is timed
alone in the precision the step ran it in (bf16 under autocast, float32 where in_float32 keeps it).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from biva_core.model.config import PRESETS, preset
from biva_core.train.trainer import TrainConfig, Trainer


def record_convolutions(trainer: Trainer) -> list[dict]:
    """The shapes of every convolution one training step runs, in order."""
    seen = []

    def hook(module: nn.Conv2d, args, out):
        seen.append({"x": tuple(args[0].shape), "w": tuple(module.weight.shape), "stride": module.stride,
                     "padding": module.padding, "groups": module.groups, "out": tuple(out.shape),
                     "transposed": isinstance(module, nn.ConvTranspose2d), "module": module,
                     "bf16": torch.is_autocast_enabled("cpu")})
    handles = [m.register_forward_hook(hook) for m in trainer.model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    trainer.train_step(trainer.next_batch())
    for h in handles:
        h.remove()
    return seen


def flops(c: dict, first: bool) -> float:
    cout_elems = float(np.prod(c["out"]))
    w = c["w"]
    per_out = (w[0] if c["transposed"] else w[1]) * w[2] * w[3] / (1 if c["transposed"] else c["groups"])
    fwd = 2 * cout_elems * per_out if not c["transposed"] else 2 * float(np.prod(c["x"])) * w[1] * w[2] * w[3]
    return fwd * (2 if first else 3)          # forward, + weight gradient, + input gradient


def time_alone(convs: list[dict], channels_last: bool, repeats: int) -> float:
    """Seconds for every recorded convolution, forward and backward, on random data of its shape."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cases = []
    for i, c in enumerate(convs):
        dtype = torch.bfloat16 if c["bf16"] else torch.float32
        x = torch.randn(c["x"], dtype=dtype).contiguous(memory_format=fmt).requires_grad_(i > 0)
        w = c["module"].weight.detach().to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
        op = (lambda x, w, c=c: F.conv_transpose2d(x, w, stride=c["module"].stride, padding=c["module"].padding)) \
            if c["transposed"] else \
            (lambda x, w, c=c: F.conv2d(x, w, stride=c["stride"], padding=c["padding"], groups=c["groups"]))
        cases.append((op, x, w))
    runs = []
    for _ in range(repeats + 1):                 # the first: warm-up
        t = time.perf_counter()
        for op, x, w in cases:
            y = op(x, w)
            y.backward(torch.ones_like(y))
        runs.append(time.perf_counter() - t)
    return statistics.median(runs[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="celeba64_cpu", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--amp", choices=["amx", "bf16", "none"], default=TrainConfig.amp, help="TrainConfig.amp")
    ap.add_argument("--compile", action="store_true", help="time the step with compile=true (the shapes come from an eager twin)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    high = 2 if cfg.likelihood == "bernoulli" else 256
    data = np.random.default_rng(0).integers(0, high, (8 * args.batch, *cfg.image_shape), dtype=np.uint8)
    channels_last = not args.no_channels_last
    tc = TrainConfig(batch_size=args.batch, warmup=1, channels_last=channels_last, flip=cfg.image_shape[0] == 3,
                     num_threads=args.threads, amp=args.amp)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, tc, data, data[:args.batch], out, log=lambda *a: None)
        convs = record_convolutions(tr)
        total = sum(flops(c, i == 0) for i, c in enumerate(convs))
        if args.compile:  # hooks would break the compiled graph: shapes from the eager model, time this one
            tr = Trainer(cfg, replace(tc, compile=True), data, data[:args.batch], out, log=lambda *a: None)
            t = time.perf_counter()
            for _ in range(2):
                tr.train_step(tr.next_batch())
            print(f"compiled in {time.perf_counter() - t:.0f} s (two steps)")
        step_times, alone_times = [], []
        for _ in range(args.steps):               # alternate: a slower minute hurts both alike
            batch = tr.next_batch()
            t = time.perf_counter()
            tr.train_step(batch)
            step_times.append(time.perf_counter() - t)
            alone_times.append(time_alone(convs, channels_last, 1))
    step, alone = statistics.median(step_times), statistics.median(alone_times)
    print(f"{args.preset}, batch {args.batch}, {args.threads} thread(s), channels-last {channels_last}, "
          f"compile {args.compile}, bf16 convolutions {sum(c['bf16'] for c in convs)} of {len(convs)}: "
          f"{len(convs)} convolutions, {total / 1e9:.1f} GFLOP a step (forward + backward)")
    print(f"  training step       {step:6.3f} s   {total / step / 1e9:6.1f} GFLOP/s   {args.batch / step:5.1f} images/s")
    print(f"  convolutions alone  {alone:6.3f} s   {total / alone / 1e9:6.1f} GFLOP/s   (the limit)")
    print(f"  fraction of the limit: {alone / step:.2f}")


if __name__ == "__main__":
    main()
