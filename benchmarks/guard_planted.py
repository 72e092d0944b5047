"""The planted exploding step of tests/test_train.py (every weight x30 at step 30), its log printed:
how the update guard skips, rolls back or stops.

    python benchmarks/guard_planted.py                          # the installed biva_core
    PYTHONPATH=../old-tree python benchmarks/guard_planted.py   # another checkout, e.g. before the guard
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from biva_core import preset
from biva_core.train.trainer import TrainConfig, Trainer


class Planted(Trainer):
    """A trainer whose weights explode (x30) right after step 30."""

    def train_step(self, x):
        r = super().train_step(x)
        if self.step == 30:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(30.0)
        return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    rng = lambda n, s: np.random.default_rng(s).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)  # noqa: E731
    kw = dict(steps=args.steps, batch_size=4, warmup=5, log_every=5, eval_every=40, eval_images=6,
              ckpt_minutes=1e9, num_threads=1, lr=2e-3)
    if "max_skips" in TrainConfig.__dataclass_fields__:  # a checkout from before the guard's rollbacks lacks it
        kw["max_skips"] = 4
    model = preset("tiny").replace(dropout_q=0.2, dropout_p=0.2)
    Planted(model, TrainConfig(**kw), rng(32, 0), rng(8, 1), out, log=print).run(progress=False)
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "bpd" in r:
            print(f"step {r['step']:3d}  bpd {r['bpd']:.3f}  grad_norm {r['grad_norm']:9.1f}  skipped {r['skipped']}")
        elif "event" in r:
            print(f"step {r['step']:3d}  {r['event']}: {r['message']}")


if __name__ == "__main__":
    main()
