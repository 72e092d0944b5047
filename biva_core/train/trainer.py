"""Training: the released recipe (Adamax, free bits, EMA, evaluation with the EMA weights) plus
warm-up, gradient clipping, skipping of non-finite or spiking updates, and the fast CPU step
(step_options): bf16 convolutions, channels-last and torch.compile where the CPU has AMX tiles,
channels-last on one CPU thread.

The trainer works on uint8 arrays (N, C, H, W) held in memory (8-bit data in 0..255, binarized
data in {0, 1}). It writes to `out`:
    config.json + model*.safetensors   the best EMA weights so far (the pretrained layout)
    metrics.jsonl                      one JSON object per log line / validation
    state/                             everything --resume needs (written atomically)
    samples_*.png, kl_per_latent.png   pictures, refreshed at every validation

Exact resumption: a run stopped at step n (--steps n, --max-minutes, SIGINT / SIGTERM) and
resumed to N ends with the same parameters, bit for bit on the same device and thread count,
as one run to N. The data order is a function of (seed, epoch, position), flips of (seed, step),
the learning rate of the step; the optimizer and EMA state and every rank's RNG state (dropout
and latent draws) are saved; validation runs under `fork_rng` with its own generator so it
draws nothing from the training stream.

Several processes (torchrun, WORLD_SIZE > 1): NCCL on CUDA, Gloo on CPU. `batch_size` is the
global batch: each epoch's permutation is the same on every rank and rank r takes the r-th
slice of each batch (batch_size must divide by the number of ranks). The model is wrapped in
DistributedDataParallel for the training forward (gradients averaged over ranks, so every rank
applies the same update and keeps the same EMA). Rank 0 alone logs, validates and writes;
stopping and checkpointing are decided together (a flag reduced over ranks each step). Resuming
needs the state folder on a file system every node sees.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from biva_core.model import bounds
from biva_core.train import distributed as dist
from biva_core.io.checkpoint import save_pretrained, warm_start
from biva_core.io.plots import kl_per_latent_plot, save_samples
from biva_core.model.config import ModelConfig
from biva_core.train.batches import Batches, to_float
from biva_core.train.config import COMPILE_MINUTES, COMPILE_STEPS, TrainConfig
from biva_core.train import state as resume
from biva_core.train.guard import UpdateGuard
from biva_core.train.semisupervised import error_rate, jitter, objective
from biva_core.model import BIVA


def keep_freed_memory() -> bool:
    """Ask glibc to keep large freed blocks instead of returning them to the system.

    By default every allocation over 32 MiB (and, once the threshold adapts, smaller ones) is a
    fresh mmap: a CPU training step allocates and frees its big activations each time, so each
    step page-faults them in again and zero-fills the pages. Measured here (2 cores, a face
    model, batch 48): 3.04 -> 2.53 s per step. A no-op off glibc; returns whether it applied.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


def uses_bf16(amp: str, device: torch.device) -> bool:
    """Whether TrainConfig.amp means bf16 autocast on `device`: "bf16", or "amx" on a CPU with
    AMX tiles."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return amp == "bf16" or (amp == "amx" and device.type == "cpu" and bool(amx()))


def step_options(cfg: TrainConfig, device: torch.device, *, classes: int = 0,
                 distributed: bool = False) -> tuple[bool, bool, bool]:
    """(bf16, channels_last, compile) for a run of `cfg` on `device`: "auto" turns channels-last
    on where the convolutions run bf16 on a CPU and for float32 on one CPU thread (where it was
    faster: docs/cpu_training.md), and compile where they run bf16 on a CPU, only for long runs (at
    least COMPILE_STEPS steps and no time limit under COMPILE_MINUTES) of a model without classes
    in one process (a model with classes never compiles). Call it after torch.set_num_threads."""
    bf16 = uses_bf16(cfg.amp, device)
    fast_cpu = bf16 and device.type == "cpu"
    one_thread = device.type == "cpu" and torch.get_num_threads() == 1
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and (fast_cpu or one_thread))
    limits = [m for m in (cfg.max_minutes, cfg.max_cpu_minutes) if m > 0]
    long_run = cfg.steps >= COMPILE_STEPS and min(limits, default=COMPILE_MINUTES) >= COMPILE_MINUTES
    compiles = cfg.compile == "on" or (cfg.compile == "auto" and fast_cpu and long_run and not classes
                                       and not distributed)
    return bf16, channels_last, compiles


def _blend(old: list[torch.Tensor], new: list[torch.Tensor], ok: torch.Tensor) -> None:
    """new <- new where ok else old, in place; ok a 0-dim tensor in {0, 1}."""
    if not new:
        return
    keep = ok.to(new[0].device).bool()  # e.g. Adamax's step counts live on the CPU
    for o, n in zip(old, new):
        n.copy_(torch.where(keep, n, o.to(n.dtype)))


class Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, train: np.ndarray, valid: np.ndarray,
                 out: str | os.PathLike, *, device: str = "cpu", init: str | None = None, log=print,
                 dataset: str | None = None, train_labels: np.ndarray | None = None,
                 valid_labels: np.ndarray | None = None):
        self.cfg, self.device, self.out, self.log = cfg, torch.device(device), Path(out), log
        self.dataset = dataset  # recorded in the saved weights' training metadata
        self.distributed = dist.init(self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.batch_size % self.world:
            raise ValueError(f"train config: batch_size={cfg.batch_size} must divide by the {self.world} ranks")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.device.type == "cpu":
            keep_freed_memory()
            if cfg.num_threads:
                torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.classes = model_cfg.classes
        self.amp, self.channels_last, self.compiled = step_options(cfg, self.device, classes=self.classes,
                                                                   distributed=self.distributed)
        self.batches = Batches(train, cfg, self.device, classes=self.classes, train_labels=train_labels,
                               rank=self.rank, world=self.world, channels_last=self.channels_last)
        self.binary = self.batches.binary
        self.valid_labels = valid_labels if self.classes else None
        if self.classes and (self.distributed or self.compiled):
            raise ValueError("train config: a model with classes trains in one process, without compile")
        self.valid_data = torch.from_numpy(np.ascontiguousarray(valid))
        self.model = BIVA(model_cfg).to(self.device)
        if init:  # warm start from a pretrained layout; the optimizer starts fresh
            fresh = warm_start(self.model, init, partial=cfg.init_partial)
            if fresh and self.rank == 0:
                log(f"warm start from {init}: {len(fresh)} of {len(self.model.state_dict())} tensors "
                    f"start fresh (another shape or new): {', '.join(fresh[:8])}{' ...' if len(fresh) > 8 else ''}")
        self.ema = BIVA(model_cfg).to(self.device)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False).eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.ema.to(memory_format=torch.channels_last)
        self.free_bits = cfg.free_bits
        self.params = [p for p in self.model.parameters()]
        self.ema_params = [p for p in self.ema.parameters()]
        self.opt = torch.optim.Adamax(self.params, lr=cfg.lr, **self._fused())
        self.sync_free = cfg.sync_free == "on" or (cfg.sync_free == "auto" and self.device.type == "cuda")
        if self.rank == 0:
            log(f"precision: {'bf16 convolutions (amp=' + cfg.amp + ')' if self.amp else 'float32'}; "
                f"channels-last {'on' if self.channels_last else 'off'}; compile {'on' if self.compiled else 'off'}")
        forward = self.model
        if self.distributed:  # broadcasts rank 0's parameters; averages gradients in backward
            forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward = torch.compile(forward) if self.compiled else forward
        self.step = 0
        self.best_bpd, self.best_error, self.seconds = math.inf, math.inf, 0.0
        self.kl_history: list[tuple[int, list[float]]] = []
        self.stop_requested = False
        self.stopped_why: str | None = None  # set when the guard gives up
        self.guard = UpdateGuard(factor=cfg.skip_factor, threshold=cfg.skip_threshold, max_skips=cfg.max_skips,
                                 max_rollbacks=cfg.max_rollbacks, device=self.device)
        if self.rank:  # every rank its own stream of dropout masks and latent draws
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)

    def _fused(self) -> dict:
        if self.device.type != "cuda" or not self.cfg.fused:
            return {}
        try:  # a fused kernel where this torch has one for Adamax, else foreach
            torch.optim.Adamax([nn.Parameter(torch.zeros(1, device=self.device))], fused=True)
            return {"fused": True}
        except (RuntimeError, TypeError, ValueError):
            return {"foreach": True}

    def next_batch(self) -> torch.Tensor:
        """The next training batch (this rank's slice), as float images on the device."""
        return self.batches.next(self.step)

    # ------------------------------------------------------------------ one update

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if c.lr_schedule == "cosine":  # for a planned run length: half a cosine to the floor
            lr = c.lr_min + (c.lr - c.lr_min) * 0.5 * (1 + math.cos(math.pi * min(step / c.steps, 1.0)))
        else:
            lr = max(c.lr * c.lr_decay ** step, c.lr_min)
        return lr * min(1.0, (step + 1) / c.warmup) if c.warmup else lr

    def ema_decay(self, step: int) -> float:
        """Warm-up EMA: (1 + step) / (10 + step), capped at cfg.ema. A fixed 0.9995 from step 0
        still carries the random initial weights after thousands of steps (measured: 7.07 bits/dim
        against 4.19 for the raw face weights after 5.5k steps); the warm-up forgets them. The
        step counts from this run's start, so --init restarts the warm-up."""
        return min(self.cfg.ema, (1 + step) / (10 + step))

    def train_step(self, x: torch.Tensor) -> dict:
        """One update. Returns 0-dim tensors (loss, elbo, grad_norm, skipped) and the per-latent
        KL; the loop reads them back every log_every steps.

        The update guard (guard.py) skips an update whose loss or gradient norm is not finite or
        whose norm is far above the recent ones. With sync_free (CUDA by default) the decision, the clipping and the EMA stay
        on the device (no .item(), float() or branch on a tensor), so a GPU never waits on the host:
        the update is computed and then undone (`_guarded_update`). Otherwise one host read of the
        decision, free on a CPU, branches around opt.step() and the EMA."""
        c = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step) * self.guard.lr_scale
        self.model.train()
        extra = {}
        if self.classes:  # the semi-supervised objective (spec section 5)
            loss, stats = self._ssl_loss(x)
            elbo, kl_t = stats["U"], stats["kl"]
            extra = {k: stats[k] for k in ("ce", "accuracy", "mask", "pseudo_agree") if k in stats}
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                log_px, kl = self.forward(x)
            log_px, kl = log_px.float(), [t.float() for t in kl]
            loss = bounds.free_bits_loss(log_px, kl, self.free_bits).mean() / self.model.config.dims
            with torch.no_grad():
                kl_t = torch.stack(kl, 1).detach()
                elbo, kl_t = (log_px - kl_t.sum(1)).mean(), kl_t.mean(0)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        # the same decision on every rank: gradients and their norm are averaged already, the loss here
        loss_all = dist.mean_tensor(loss.detach(), self.device)
        ok = self.guard.decide(gn.detach(), loss_all)
        if self.sync_free:
            self._guarded_update(ok)
        elif bool(ok):
            self.opt.step()
            torch._foreach_lerp_(self.ema_params, self.params, 1 - self.ema_decay(self.step))
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": loss_all, "elbo": elbo, "grad_norm": gn.detach(), "skipped": 1.0 - ok,
                "kl": kl_t, **extra}

    def _ssl_loss(self, x: torch.Tensor):
        """-J / (N D) of semisupervised.objective for this batch (unlabelled x, and ssl.labelled_batch
        labelled images when there are labels); U(x) stands for the ELBO in the logs."""
        ssl, cc = self.cfg.ssl, self.cfg.ssl.consistency
        data = self.batches
        n_l = 0 if data.labelled is None else len(data.labelled)
        x_l, y_l = data.labelled_batch(self.step) if n_l else (None, None)
        with_c = cc.weight > 0 and n_l > 0
        x_l_aug = x_c = x_c_aug = None
        if with_c:   # beyond the spec: pseudo-labels on jittered unlabelled images
            g = torch.Generator().manual_seed(self.cfg.seed * 32_452_843 + self.step)
            x_c = data.random(cc.batch, g, self.step, salt=2_000_003)
            move = lambda t: jitter(t, shift=cc.shift, rotate=cc.rotate, elastic=cc.elastic,  # noqa: E731
                                    sigma=cc.elastic_sigma, generator=g)
            x_l_aug, x_c_aug = move(x_l), move(x_c)                  # in this order: the draws of g
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, stats = objective(self.model, x, x_l, y_l, n_unlabelled=len(data.train), n_labelled=n_l,
                                    alpha=ssl.alpha * (len(data.train) + n_l), free_bits=self.free_bits,
                                    x_l_aug=x_l_aug, x_c=x_c, x_c_aug=x_c_aug,
                                    consistency=cc.weight if with_c else 0.0, threshold=cc.threshold,
                                    teacher=self.ema if with_c and cc.teacher == "ema" else None)
        return loss.float(), stats

    @torch.no_grad()
    def _guarded_update(self, ok: torch.Tensor) -> None:
        """opt.step() and the EMA, kept only where ok = 1 (a 0-dim float tensor): x = old + ok (new - old)
        for every parameter and optimizer state tensor."""
        states = [self.opt.state[p] for p in self.params]
        keys = sorted({k for st in states for k, v in st.items() if torch.is_tensor(v)})
        before = {k: [st[k].clone() for st in states if k in st] for k in keys}
        old = [p.detach().clone() for p in self.params]
        self.opt.step()
        for k in keys:  # tensors created by this (first) step have no "before": they are 0 before it
            now = [st[k] for st in states if k in st]
            prev = before[k] if len(before[k]) == len(now) else [torch.zeros_like(t) for t in now]
            _blend(prev, now, ok)
        _blend(old, [p.data for p in self.params], ok)
        decay = 1 - self.ema_decay(self.step)
        delta = torch._foreach_sub(self.params, self.ema_params)
        torch._foreach_mul_(delta, ok * decay)
        torch._foreach_add_(self.ema_params, delta)

    # ------------------------------------------------------------------ validation

    @torch.inference_mode()
    def validate(self, model: BIVA | None = None, images: int | None = None) -> dict:
        """Single-sample ELBO and per-latent KL of the EMA model on the valid split, in float32 also
        when training runs in bf16 (its own generator: the training RNG stream is left as it was)."""
        model = model or self.ema
        n = images if images is not None else (self.cfg.eval_images or len(self.valid_data))
        data = self.valid_data[:n]
        elbos, kls = [], []
        g = torch.Generator(device=self.device).manual_seed(1234)
        model.eval()
        for i in range(0, len(data), 4 * self.cfg.batch_size):
            x = to_float(data[i:i + 4 * self.cfg.batch_size].to(self.device), self.binary)
            log_px, kl = model(x, generator=g)
            kl = torch.stack([t.float() for t in kl], 1)
            elbos.append(log_px.float() - kl.sum(1))
            kls.append(kl)
        elbo = torch.cat(elbos).mean().item()
        kl = torch.cat(kls).mean(0).tolist()
        row = {"valid_elbo": elbo, "valid_bpd": bounds.bits_per_dim(elbo, model.config.dims),
               "valid_kl": kl, "valid_images": len(data)}
        if self.valid_labels is not None:  # a model with classes is chosen by its valid error
            e = self.cfg.eval_error_images
            n_e = n if e == 0 else len(self.valid_data) if e < 0 else min(e, len(self.valid_data))
            row["valid_error"] = error_rate(model, self.valid_data[:n_e], self.valid_labels[:n_e],
                                            batch=4 * self.cfg.batch_size,
                                            to_float=lambda b: to_float(b.to(self.device), self.binary))
            row["valid_error_images"] = n_e
        return row

    # ------------------------------------------------------------------ saving and resuming

    def metadata(self, extra: dict | None = None) -> dict:
        return {**({"dataset": self.dataset} if self.dataset else {}),
                "step": self.step, "epoch": self.batches.epoch, "seconds": round(self.seconds, 1),
                "best_valid_bpd": self.best_bpd, "train_config": self.cfg.to_dict(),
                **({"best_valid_error": self.best_error} if math.isfinite(self.best_error) else {}),
                **({"labelled_index": self.batches.label_index.tolist()} if self.batches.label_index is not None
                   else {}),
                **(extra or {})}

    def save_state(self) -> None:
        """Everything --resume needs (train/state.py)."""
        resume.save(self)

    def load_state(self) -> None:
        """Restore a run saved by `save_state` (on every rank)."""
        resume.load(self)

    def write_metrics(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ the loop

    def validate_and_save(self) -> None:
        """Validation of the EMA and the raw weights, best-weights save and pictures (rank 0;
        the others wait). It runs under fork_rng: the training RNG stream is untouched."""
        if self.rank == 0:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                raw = {f"raw_{k}": v for k, v in self.validate(self.model).items()}
                row = {"step": self.step, "seconds": round(self.seconds, 1), **self.validate(), **raw}
                self.write_metrics(row)
                self.on_validation(row)
            error = (f", valid error EMA {row['valid_error']:.2%}, raw {row['raw_valid_error']:.2%}"
                     if "valid_error" in row else "")
            self.log(f"step {self.step}: valid bpd EMA {row['valid_bpd']:.4f}, raw {row['raw_valid_bpd']:.4f} "
                     f"(best {self.best_bpd:.4f}){error}")
        dist.barrier()

    def on_validation(self, row: dict) -> None:
        """Keep the best weights by valid bits/dim (the EMA weights, or the raw ones when they
        are better: early in training an average of fast-moving weights can lag far behind);
        draw the pictures."""
        # a model with classes and valid labels: by (valid error, bits/dim), the spec's choice
        key = lambda p: (row.get(f"{p}valid_error", 0.0), row.get(f"{p}valid_bpd", math.inf))  # noqa: E731
        best_model = self.ema if key("") <= key("raw_") else self.model
        error, bpd = min(key(""), key("raw_"))
        if (error, bpd) < (self.best_error if "valid_error" in row else 0.0, self.best_bpd):
            self.best_bpd = bpd
            if "valid_error" in row:
                self.best_error = error
            which = "ema" if best_model is self.ema else "raw"
            meta = {k: v for k, v in row.items() if k not in ("valid_kl", "raw_valid_kl")}
            save_pretrained(best_model, self.out, training=self.metadata({"valid": meta, "weights": which}))
        if self.cfg.snapshots:
            save_pretrained(best_model, self.out / "snapshots" / f"{self.step:08d}",
                            training=self.metadata({"valid": {k: v for k, v in row.items() if "kl" not in k}}))
        self.kl_history.append((self.step, row["valid_kl"]))
        names = self.model.latent_names()
        kl_per_latent_plot(self.kl_history, names, self.out / "kl_per_latent.png")
        for t in (1.0, 0.8):  # with classes: a row of 8 per class
            save_samples(best_model, self.out / f"samples_t{t:.1f}.png", t)

    def run(self, progress: bool = True) -> dict:
        """Train to cfg.steps, or until cfg.max_minutes (wall time) or cfg.max_cpu_minutes (this
        process's CPU time, every thread: the budget a shared machine cannot shrink), or a SIGINT /
        SIGTERM; save the state. Both budgets count from this call (a resumed run gets them anew)."""
        c = self.cfg
        self._install_signal_handlers()
        last_ckpt = time.time()
        t_start, s_start = time.time(), self.seconds
        bar = tqdm(total=c.steps, initial=self.step, disable=not progress or self.rank > 0,
                   dynamic_ncols=True, desc="train")
        acc, n_acc, t_log = None, 0, time.time()
        cpu_start = time.process_time()
        out_of_time = lambda: ((bool(c.max_minutes) and time.time() - t_start > 60 * c.max_minutes)  # noqa: E731
                               or (bool(c.max_cpu_minutes) and time.process_time() - cpu_start > 60 * c.max_cpu_minutes))
        stop = dist.any_flag([self.stop_requested], self.device)[0]  # max_minutes: after one step
        validated = self.step
        self.guard.remember(self.step, self._capture())
        try:
            while self.step < c.steps and not stop:
                x = self.next_batch()
                r = self.train_step(x)
                self.seconds = s_start + time.time() - t_start
                # on a CPU the count of skips in a row is read every step; with sync_free every max_skips
                if (not self.sync_free or self.step % c.max_skips == 0) and self.guard.stuck():
                    if not self._roll_back():
                        break
                # summed on the device; read back (one sync) only when a log line is written
                acc = r if acc is None else {k: acc[k] + r[k] for k in r}
                n_acc += 1
                if self.step % c.log_every == 0:
                    dt = time.time() - t_log
                    elbo = float(acc["elbo"]) / n_acc  # rank 0's share of the batch
                    skipped = int(round(float(acc["skipped"])))
                    row = {"step": self.step, "loss": float(acc["loss"]) / n_acc, "elbo": elbo,
                           "bpd": bounds.bits_per_dim(elbo, self.model.config.dims),
                           "grad_norm": float(acc["grad_norm"]) / n_acc, "skipped": skipped,
                           "lr": self.lr_at(self.step) * self.guard.lr_scale, "images_per_s": n_acc * c.batch_size / dt,
                           "seconds": round(self.seconds, 1), "kl": (acc["kl"] / n_acc).tolist(),
                           **{f"train_{k}": float(acc[k]) / n_acc for k in ("ce", "accuracy", "mask", "pseudo_agree") if k in acc}}
                    self.write_metrics(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", bpd=f"{row['bpd']:.3f}", ips=f"{row['images_per_s']:.0f}")
                    acc, n_acc, t_log = None, 0, time.time()
                    if not skipped:  # a healthy stretch: a state to come back to
                        self.guard.remember(self.step, self._capture())
                if self.step % c.eval_every == 0 or self.step == c.steps:
                    self.validate_and_save()
                    validated = self.step
                # decided together: every rank stops / checkpoints at the same step
                stop, ckpt = dist.any_flag([self.stop_requested or out_of_time(),
                                            time.time() - last_ckpt > 60 * c.ckpt_minutes], self.device)
                if ckpt and not stop:
                    self.save_state()
                    last_ckpt = time.time()
                bar.update(1)
        except BaseException:
            if self.world == 1:  # a lone process keeps what it has; ranks cannot meet any more
                self.save_state()
            raise
        else:
            if validated != self.step and not self.stop_requested:
                self.validate_and_save()  # out of time: the last steps count for the best weights too
            self.save_state()
            dist.barrier()
        finally:
            bar.close()
            self._restore_signal_handlers()
        return {"step": self.step, "best_valid_bpd": self.best_bpd, "seconds": self.seconds,
                **({"stopped": self.stopped_why} if self.stopped_why else {})}

    def _capture(self) -> dict:
        """Copies of what an update changes: weights, EMA, optimizer state."""
        clone = lambda sd: {k: v.detach().clone() for k, v in sd.items()}  # noqa: E731
        return {"model": clone(self.model.state_dict()), "ema": clone(self.ema.state_dict()),
                "opt": copy.deepcopy(self.opt.state_dict())}

    def _roll_back(self) -> bool:
        """max_skips skips in a row: restore the older healthy state at a lower learning rate, log it
        (console and metrics.jsonl, which the studio's Runs tab shows). False when the guard gives
        up: the run stops with its best weights saved."""
        norm = self.guard.recent()
        step, state = self.guard.rollback_target()
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(copy.deepcopy(state["opt"]))  # the snapshot stays untouched
        lr = self.lr_at(self.step) * self.guard.lr_scale
        if self.guard.gave_up():
            self.stopped_why = (f"the run cannot learn: {self.cfg.max_skips} updates in a row were skipped "
                                f"(loss or gradient norm not finite, or far above the recent norms, 90th percentile {norm:.3g}) "
                                f"after {self.guard.rollbacks - 1} rollbacks at ever lower learning rates; "
                                f"stopped at step {self.step} with the weights of step {step} restored and the "
                                f"best weights saved in {self.out}. Try a lower --set lr=... (now {self.cfg.lr:g}).")
            event = "stopped"
        else:
            self.stopped_why = None
            event = "rollback"
        message = self.stopped_why or (
            f"step {self.step}: {self.cfg.max_skips} updates in a row skipped (loss or gradient norm not finite, "
            f"or above {self.cfg.skip_factor:g} x the recent norms' 90th percentile {norm:.3g}); restored the state of step "
            f"{step}, learning rate x{self.guard.lr_scale:g} (now {lr:.3g})")
        if self.rank == 0:
            self.log(("training stopped: " if event == "stopped" else "warning: ") + message)
            self.write_metrics({"step": self.step, "seconds": round(self.seconds, 1), "event": event,
                                "restored_step": step, "lr": lr, "message": message})
        return event == "rollback"

    def _install_signal_handlers(self) -> None:
        def handler(signum, frame):
            self.log(f"signal {signum}: saving and stopping after this step")
            self.stop_requested = True
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            try:
                signal.signal(s, handler)
            except ValueError:  # not the main thread
                pass

    def _restore_signal_handlers(self) -> None:
        for s, h in self._old.items():
            try:
                signal.signal(s, h)
            except ValueError:
                pass
