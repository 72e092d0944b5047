"""CPU latency and peak memory of the studio's operations on the `celeba64` preset.

    python benchmarks/cpu_ops.py                      # fp32 and bf16 autocast + channels-last
    python benchmarks/cpu_ops.py --threads 1 --runs 5 --ks 1 10 19

Random weights in eval mode (the cost does not depend on the values). Latency is the median of
--runs timed calls after one warm-up call. Peak memory is the resident set's high-water mark
during the timed calls above the resident set just before them (model and input included in
the start, the allocator's cached free pages released first): Linux resets the mark when "5" is
written to /proc/self/clear_refs; elsewhere the mark cannot be reset and the column is the
growth of ru_maxrss, a lower bound.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from biva_core import BIVA, preset


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand the allocator's cached free pages back to the OS, so that the next call's working
    memory shows up in the resident set instead of hiding in pages already held (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn: Callable[[], object], runs: int) -> tuple[float, float, str]:
    """(median seconds, peak MiB above the start, how the peak was read)."""
    fn()                                                         # warm-up: allocator, kernels
    gc.collect()
    _release_free_memory()
    if _reset_peak() and _status_kb("VmHWM") is not None:
        start, how = _status_kb("VmRSS"), "VmHWM"
    else:
        start, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = _status_kb("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return statistics.median(times), max(0, peak - start) / 1024, how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="celeba64")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = preset(args.preset)
    torch.manual_seed(0)
    model = BIVA(cfg).eval()
    x = torch.rand(1, *cfg.image_shape, generator=torch.Generator().manual_seed(0))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset}: L={cfg.L}, {cfg.n_latents} latents, {n_params / 1e6:.2f}M parameters, "
          f"image {cfg.image_shape}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    ops: list[tuple[str, Callable[[], object]]] = [
        ("sample(16)", lambda: model.sample(16, seed=0)),
        ("reconstruct(1)", lambda: model.reconstruct(xin)),
        *[(f"resample(1, k={k}, n=8)", lambda k=k: model.resample(xin, k, 8, seed=0)) for k in args.ks],
        ("scores(1, ks=[1], K=16)", lambda: model.scores(xin, [1], K=16, seed=0)),
    ]
    modes = [("fp32", torch.contiguous_format, nullcontext),
             ("bf16+cl", torch.channels_last, lambda: torch.autocast("cpu", dtype=torch.bfloat16))]
    rows = []
    for mode, memory_format, ctx in modes:
        model.to(memory_format=memory_format)
        xin = x.contiguous(memory_format=memory_format)
        for name, fn in ops:
            with ctx():
                sec, mib, how = measure(fn, args.runs)
            rows.append((mode, name, sec, mib))
            print(f"  {mode:8s} {name:26s} {sec * 1e3:9.1f} ms {mib:8.1f} MiB", flush=True)

    print(f"\n| op | fp32 ms | bf16+cl ms | fp32 peak MiB | bf16+cl peak MiB |  (median of {args.runs}, peak: {how})")
    print("|---|---:|---:|---:|---:|")
    by = {(m, n): (s, p) for m, n, s, p in rows}
    for name, _ in ops:
        (s32, p32), (s16, p16) = by[("fp32", name)], by[("bf16+cl", name)]
        print(f"| {name} | {s32 * 1e3:.0f} | {s16 * 1e3:.0f} | {p32:.0f} | {p16:.0f} |")


if __name__ == "__main__":
    main()
