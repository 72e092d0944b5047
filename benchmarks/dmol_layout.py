"""The discretized logistic mixture's log-likelihood, forward + backward, by the memory layout of
its parameters: contiguous (NCHW) against channels-last (what the output convolution gives
when training runs with `channels_last=true`).

    python benchmarks/dmol_layout.py --batch 16 --threads 1 --repeats 3

The two layouts alternate within one run (repeats rounds), so a ratio between them holds on a busy
machine too. Random parameters and 8-bit targets at the face model's size (3 x 64 x 64, 10
mixtures); the work does not depend on their values.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from biva_core.model import likelihoods as lik


def time_one(x: torch.Tensor, params: torch.Tensor, m: int, steps: int) -> float:
    p = params.clone(memory_format=torch.preserve_format).requires_grad_(True)
    for _ in range(2):  # warm-up: the allocator's pages, oneDNN's kernels
        lik.dmol_log_prob(x, p, m).sum().backward()
    t = time.perf_counter()
    for _ in range(steps):
        lik.dmol_log_prob(x, p, m).sum().backward()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mixtures", type=int, default=10)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b, s, m = args.batch, args.size, args.mixtures
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (b, 3, s, s), generator=g).float() / 127.5 - 1
    params = torch.randn(b, lik.dmol_channels(3, m), s, s, generator=g)
    layouts = {"contiguous": params.contiguous(),
               "channels-last": params.contiguous(memory_format=torch.channels_last)}
    times: dict[str, list[float]] = {k: [] for k in layouts}
    for _ in range(args.repeats):
        for name, p in layouts.items():
            times[name].append(time_one(x, p, m, args.steps))
    base = statistics.median(times["contiguous"])
    print(f"dmol_log_prob forward + backward, batch {b}, 3 x {s} x {s}, {m} mixtures, {args.threads} thread(s)")
    print("| parameters | median | runs | against contiguous |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.0f} ms | {', '.join(f'{t * 1e3:.0f}' for t in ts)} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
