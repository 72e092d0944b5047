"""One lent-GPU call for the CelebA-64 flagship, under a hard wall-clock deadline.

    python gpu/flagship_run.py --data carry --out $OUT --deadline 540

In order, each step guarded so that a failure or the deadline never loses what came before:
 1. decode the carried splits (train: JPEG q90 pack; valid/test subsets: lossless WebP);
 2. the speed table (benchmarks/train_speed.py) for celeba64 and cifar10 at batch 48;
 3. train celeba64 until the time left is what evaluation needs (best EMA weights by valid bpd);
 4. evaluate the best EMA weights: valid / test L_1, test L_1000 on as many test images as time
    allows, and the studio's reference statistics of L^{>k}, LLR^{>k} on the valid subset;
 5. write the weights (fp16, shards <= 15.5 MiB) to OUT/weights and everything else to
    OUT/results.json (updated after every step) and OUT/bundle.tar.gz (logs, metrics);
 6. with the time that remains, the torch.compile row of the speed table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from biva_core import load_pretrained, preset, save_pretrained  # noqa: E402
from biva_core.model.bounds import bits_per_dim  # noqa: E402
from biva_core.data.packed import unpack  # noqa: E402
from biva_core.train.batches import to_float  # noqa: E402
from biva_core.train.trainer import TrainConfig, Trainer  # noqa: E402

T0 = time.time()


def elapsed() -> float:
    return time.time() - T0


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="carry")
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--work", default="/tmp/flagship")
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds from start to finish everything")
    ap.add_argument("--preset", default="celeba64")
    ap.add_argument("--set", nargs="*", default=[], help="model config overrides key=value (tests)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--init", help="warm start from these pretrained weights")
    ap.add_argument("--eval-reserve", type=float, default=110.0, help="seconds kept for steps 4-5")
    ap.add_argument("--bench-presets", nargs="*", default=["celeba64", "cifar10"])
    ap.add_argument("--bench-steps", type=int, default=10)
    ap.add_argument("--bench-cap", type=float, default=75.0)
    ap.add_argument("--compile-bench", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    out, work = Path(args.out), Path(args.work)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                     "torch": torch.__version__}

    def save_results() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1))

    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # 1. data
    d = Path(args.data)
    train = unpack(d / "celeba64_train_q90.npz")
    try:
        valid = unpack(d / "celeba64_valid1000.npz")
    except Exception:  # e.g. no WebP decoder there: hold out the last 1000 training images
        traceback.print_exc()
        train, valid = train[:-1000], train[-1000:]
    try:
        test = unpack(d / "celeba64_test500.npz")
    except Exception:
        traceback.print_exc()
        test = valid[:100]
    results["data"] = {"train": len(train), "valid": len(valid), "test": len(test)}
    log(f"data {results['data']}")
    save_results()

    # 2. speed table (subprocess: a crash or hang there cannot take the run down)
    def bench(modes: list[str], cap: float, tag: str) -> None:
        jl = work / f"speed_{tag}.jsonl"
        cmd = [sys.executable, str(ROOT / "benchmarks/train_speed.py"), "--device", args.device,
               "--presets", *args.bench_presets, "--batch", "48", "--steps", str(args.bench_steps),
               "--warmup", "3", "--json", str(jl), "--modes", *modes]
        try:
            # the benchmark imports biva_core as installed; a bare device machine has only this checkout
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, env=env)
            print(p.stdout[-3000:], p.stderr[-1500:], flush=True)
        except subprocess.TimeoutExpired as e:
            log(f"speed bench {tag} stopped at its cap {cap:.0f}s")
            print((e.stdout or b"")[-2000:] if isinstance(e.stdout, str) else "", flush=True)
        if jl.exists():
            results.setdefault("speed", []).extend(json.loads(l) for l in jl.read_text().splitlines())
        save_results()

    if args.bench_presets:
        bench(["fp32", "bf16", "bf16_cl", "bf16_cl_fused"], args.bench_cap, "eager")
    log("speed table done")

    # 3. train
    overrides = dict(kv.split("=", 1) for kv in args.set)
    mcfg = preset(args.preset)
    if overrides:
        mcfg = mcfg.from_dict({**mcfg.to_dict(), **{k: json.loads(v) for k, v in overrides.items()}})
    minutes = max(0.1, (args.deadline - args.eval_reserve - elapsed()) / 60)
    tcfg = TrainConfig(steps=10 ** 7, batch_size=args.batch, ema=args.ema, lr=args.lr, warmup=100, eval_every=args.eval_every,
                       eval_images=0, log_every=50, ckpt_minutes=2.0, max_minutes=minutes)
    log(f"training {args.preset} for {minutes:.2f} min, batch {args.batch}")
    run_dir = work / "run"
    trainer = Trainer(mcfg, tcfg, train, valid, run_dir, device=args.device, log=log, init=args.init)
    try:
        r = trainer.run(progress=False)
    except Exception:
        traceback.print_exc()
        r = {"step": trainer.step, "error": traceback.format_exc()[-800:]}
    # a last validation of both the EMA and the raw weights; the better one is kept if best
    raw = {f"raw_{k}": v for k, v in trainer.validate(trainer.model).items()}
    row = {"step": trainer.step, **trainer.validate(), **raw}
    trainer.write_metrics(row)
    trainer.on_validation(row)
    log(f"final valid bpd: EMA {row['valid_bpd']:.4f}, raw {row['raw_valid_bpd']:.4f}")
    r["images_seen"] = trainer.step * args.batch
    r["epochs"] = r["images_seen"] / len(train)
    results["train"] = r
    log(f"trained: {r}")
    save_results()

    # 4. evaluate the best EMA weights
    model = load_pretrained(run_dir, args.device)
    dims = model.config.dims
    ev: dict = {}
    results["eval"] = ev

    def l1(data) -> float:
        vals = []
        for i in range(0, len(data), 250):
            x = to_float(torch.from_numpy(data[i:i + 250]).to(args.device), False)
            vals.append(model.elbo(x, seed=i)["elbo"])
        return torch.cat(vals).mean().item()

    try:
        for name, data in (("valid", valid), ("test", test)):
            v = l1(data)
            ev[f"{name}_L1_nats"], ev[f"{name}_L1_bpd"] = v, bits_per_dim(v, dims)
        log(f"L1: {ev}")
        save_results()
        # reference statistics for the studio: L^{>k} (K=1) on the valid subset, all k
        ks = list(range(model.config.L))
        xs = to_float(torch.from_numpy(valid).to(args.device), False)
        lk = {k: [] for k in ks}
        for i in range(0, len(xs), 250):
            s = model.scores(xs[i:i + 250], ks, K=1, chunk=250, seed=i)
            for k in ks:
                lk[k].append(s.lk[k].cpu())
        lk = {k: torch.cat(v) for k, v in lk.items()}
        results["reference"] = {"split": "valid", "images": len(valid), "K": 1,
                                "L_gt_k": {str(k): v.tolist() for k, v in lk.items()}}
        log("reference statistics done")
        save_results()
        # L_1000 on as many test images as the time allows
        K, done, vals = 1000, 0, []
        t_img = None
        while done < len(test):
            left = args.deadline - 25 - elapsed()
            if left < 15 or (t_img is not None and left < t_img * 1.2):
                break
            t = time.time()
            x = to_float(torch.from_numpy(test[done:done + 4]).to(args.device), False)
            vals.append(model.iw_bound(x, K, chunk=1000, seed=done).cpu())
            done += len(x)
            t_img = time.time() - t
        if vals:
            lk = torch.cat(vals)
            ev["test_L1000_images"] = done
            ev["test_L1000_nats"] = lk.mean().item()
            ev["test_L1000_bpd"] = bits_per_dim(lk.mean().item(), dims)
            ev["test_L1_same_images_bpd"] = bits_per_dim(
                l1(test[:done]), dims)
        log(f"eval: {ev}")
    except Exception:
        traceback.print_exc()
        ev["error"] = traceback.format_exc()[-800:]
    save_results()

    # 5. weights and the bundle
    save_pretrained(model, out / "weights", training=model.training_info, dtype=torch.float16, max_shard_mb=15.5)
    log(f"weights written: {sorted(p.name for p in (out / 'weights').iterdir())}")

    def bundle() -> None:
        with tarfile.open(out / "bundle.tar.gz", "w:gz") as tar:
            for f in ("metrics.jsonl", "kl_per_latent.png", "samples_t1.0.png", "samples_t0.8.png"):
                if (run_dir / f).exists():
                    tar.add(run_dir / f, arcname=f)
            for f in work.glob("*.txt"):
                tar.add(f, arcname=f.name)
    bundle()

    # 6. torch.compile row, with what is left
    left = args.deadline - elapsed() - 10
    if args.compile_bench and args.bench_presets and left > 60:
        args.bench_presets = args.bench_presets[:1]
        bench(["bf16_cl_fused_compile"], left, "compile")
    results["elapsed_s"] = elapsed()
    save_results()
    log("done")
    bundle()


if __name__ == "__main__":
    main()
