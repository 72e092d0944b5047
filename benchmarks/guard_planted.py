"""The planted exploding step of tests/test_train.py (every weight x30 at step 30), its log printed.

    python benchmarks/guard_planted.py .            # this checkout
    python benchmarks/guard_planted.py ../old-tree  # another checkout, e.g. before the update guard
"""
import json, sys, tempfile
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
torch.set_num_threads(1)
from biva_core.train.trainer import TrainConfig, Trainer
from conftest import tiny_config
class Planted(Trainer):
    def train_step(self, x):
        r = super().train_step(x)
        if self.step == 30:
            with torch.no_grad():
                for p in self.model.parameters(): p.mul_(30.0)
        return r
d = Path(tempfile.mkdtemp())
rng = lambda n, s: np.random.default_rng(s).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
kw = dict(steps=80, batch_size=4, warmup=5, log_every=5, eval_every=40, eval_images=6, ckpt_minutes=1e9, num_threads=1, lr=2e-3)
if "max_skips" in TrainConfig.__dataclass_fields__: kw["max_skips"] = 4
t = Planted(tiny_config().replace(dropout_q=0.2, dropout_p=0.2), TrainConfig(**kw), rng(32, 0), rng(8, 1), d, log=print)
t.run(progress=False)
for line in (d / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if "bpd" in r: print(f"step {r['step']:3d}  bpd {r['bpd']:.3f}  grad_norm {r['grad_norm']:9.1f}  skipped {r['skipped']}")
    elif "event" in r: print(f"step {r['step']:3d}  {r['event']}: {r['message']}")
