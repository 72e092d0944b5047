"""Training speed: images/s, step time and achieved FLOP rate per preset and execution mode.

    python benchmarks/train_speed.py --device cuda --presets celeba64 cifar10 --batch 48
    python benchmarks/train_speed.py --device cpu --presets celeba64 binarized_mnist --modes fp32 bf16_cl

Modes: fp32 | fp32_cl (+ channels-last) | fp32_compile (+ torch.compile) | fp32_cl_compile (both)
| bf16 (autocast) | bf16_cl (+ channels-last) | bf16_cl_fused (+ fused optimizer)
| bf16_cl_fused_compile (+ torch.compile) | default (TrainConfig's defaults for a long run: on a
CPU with AMX tiles bf16 + channels-last + compile, elsewhere float32, channels-last on one
thread). Every mode runs the real
`Trainer.train_step` on random data. With --procs N the step runs data-parallel in N processes of --threads threads
each (Gloo, as `torchrun --nproc_per_node N train.py` trains), the batch split between them:

    python benchmarks/train_speed.py --device cpu --presets binarized_mnist --modes fp32_cl --procs 2 --threads 1

FLOPs of one step (forward + backward) come from torch.utils.flop_counter; the
rate is FLOPs / median step time, and on CUDA also a fraction of the bf16 dense peak given
by --peak-tflops (989 for an H100 / H200 SXM).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from biva_core.model.config import preset
from biva_core.train.trainer import TrainConfig, Trainer

MODES = {
    "default": dict(),
    "fp32": dict(amp="none", channels_last=False, fused=False, compile=False),
    "fp32_cl": dict(amp="none", channels_last=True, fused=False, compile=False),
    "fp32_compile": dict(amp="none", channels_last=False, fused=False, compile=True),
    "fp32_cl_compile": dict(amp="none", channels_last=True, fused=False, compile=True),
    "bf16": dict(amp="bf16", channels_last=False, fused=False, compile=False),
    "bf16_cl": dict(amp="bf16", channels_last=True, fused=False, compile=False),
    "bf16_cl_fused": dict(amp="bf16", channels_last=True, fused=True, compile=False),
    "bf16_cl_fused_compile": dict(amp="bf16", channels_last=True, fused=True, compile=True),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, mode: str, *, batch: int, device: str, steps: int, warmup: int) -> dict:
    cfg = preset(name)
    c, h, w = cfg.image_shape
    data = np.random.default_rng(0).integers(0, 2 if cfg.likelihood == "bernoulli" else 256,
                                             (max(4 * batch, 256), c, h, w), dtype=np.uint8)
    tc = TrainConfig(batch_size=batch, warmup=1, flip=False, **MODES[mode])
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, tc, data, data[:batch], out, device=device, log=lambda *a: None)
        x = tr.next_batch()
        flops = None
        if not tr.compiled:
            with FlopCounterMode(display=False) as fc:
                tr.train_step(x)
            flops = fc.get_total_flops() * tr.world  # this rank's share of the batch, times the ranks
        t0 = time.time()
        for _ in range(warmup):
            tr.train_step(tr.next_batch())
        sync(device)
        first = time.time() - t0
        times = []
        for _ in range(steps):
            x = tr.next_batch()
            sync(device)
            t = time.perf_counter()
            r = tr.train_step(x)
            sync(device)
            times.append(time.perf_counter() - t)
        assert np.isfinite(float(r["loss"])), f"{name}/{mode}: loss is not finite"
        step = statistics.median(times)
        n_params = sum(p.numel() for p in tr.model.parameters())
    return {"preset": name, "mode": mode, "batch": batch, "params_M": n_params / 1e6,
            "step_ms": 1e3 * step, "images_per_s": batch / step, "gflop_per_step": flops / 1e9 if flops else None,
            "warmup_s": first, "loss": float(r["loss"])}


def _rank(rank: int, procs: int, threads: int, port: int, kwargs: dict, out: str) -> None:
    """One process of a data-parallel measurement; rank 0 writes the result to `out`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(procs))
    torch.set_num_threads(threads)
    r = measure(**kwargs)
    torch.distributed.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(r))


def measure_procs(procs: int, threads: int, **kwargs) -> dict:
    """measure() in `procs` processes at once; the row of rank 0 (every step ends in the same
    gradient all-reduce, so the ranks' step times agree)."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(_rank, args=(procs, threads, port, kwargs, out), nprocs=procs)
        r = json.loads(Path(out).read_text())
    return {**r, "procs": procs, "threads_per_proc": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["celeba64", "cifar10"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--procs", type=int, default=1, help="data-parallel processes (CPU, Gloo), --threads each")
    ap.add_argument("--json", help="append each result to this JSONL file")
    args = ap.parse_args()
    if args.procs > 1 and (args.device != "cpu" or not args.threads):
        raise SystemExit("--procs needs --device cpu and --threads (threads per process)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets:
        flops = None
        for mode in args.modes:
            try:
                kw = dict(name=name, mode=mode, batch=args.batch, device=args.device, steps=args.steps,
                          warmup=args.warmup)
                r = measure_procs(args.procs, args.threads, **kw) if args.procs > 1 else measure(**kw)
            except Exception as e:  # a mode that fails here (e.g. no compiler) is reported, not fatal
                r = {"preset": name, "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
            flops = r.get("gflop_per_step") or flops
            if "step_ms" in r and flops:
                r["tflop_per_s"] = flops / r["step_ms"]
                if args.device.startswith("cuda"):
                    r["peak_fraction"] = r["tflop_per_s"] / args.peak_tflops
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    dev = (torch.cuda.get_device_name() if args.device.startswith("cuda") else
           f"CPU, {args.procs} processes x {args.threads} threads" if args.procs > 1 else
           f"CPU x{torch.get_num_threads()} threads")
    print(f"\n{dev}, batch {args.batch}")
    print(f"{'preset':<16}{'mode':<24}{'step ms':>9}{'img/s':>9}{'GFLOP/step':>12}{'TFLOP/s':>9}{'of peak':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<16}{r['mode']:<24}  failed: {r['error'][:60]}")
            continue
        print(f"{r['preset']:<16}{r['mode']:<24}{r['step_ms']:>9.1f}{r['images_per_s']:>9.1f}"
              f"{(r.get('gflop_per_step') or float('nan')):>12.1f}{r.get('tflop_per_s', float('nan')):>9.3f}"
              f"{r.get('peak_fraction', float('nan')):>9.3f}")


if __name__ == "__main__":
    main()
