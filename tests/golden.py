"""Golden outputs: what the code computes now, pinned bit for bit at one thread, so that moving
code around (a new layout, a helper shared instead of repeated) can be shown to change nothing.

    python tests/golden.py            # rewrite tests/golden/ (only after a change that is meant
                                      # to change numbers; say so in the commit)

tests/test_golden.py recomputes each group and compares it with the files here: on a machine of
the kind that pinned them (machine.json: the CPU and its instruction set, torch, Pillow) tensors
with torch.equal and everything else (layouts, logs, reports) as JSON, exactly; on another kind
within the rounding that another instruction set gives (oneDNN and the image codecs take other
code paths: float32 results move in their sixth digit, a decoded pixel by one level).

The groups:
- layouts: the state-dict keys and shapes of every preset;
- shipped: for every folder under weights/, seeded sample, reconstruct, resample, mix,
  interpolate, elbo, scores with K = 2, pixel_map (and classify for a model with classes), on
  inputs the model draws itself;
- training: the tiny preset trained 20 steps in float32 and the plain layout (amp="none",
  channels_last="off": the defaults pick bf16 on a CPU with AMX, channels-last on one thread),
  plain and with a class and the consistency term: the final parameters and the metrics log
  (timings left out);
- export: the reference.json of the plain tiny run's export (timings left out);
- evaluate: `biva-evaluate --json` on 16 binarized MNIST test images (needs $BIVA_DATA);
- anomaly: the studio's anomaly rows for the face model's example images.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

def machine() -> dict:
    """What decides the rounding of every output: the CPU, its instruction set as torch uses it,
    the versions of torch and Pillow."""
    import PIL
    cpu = "unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        cpu = f"{names[0] if names else 'unknown'}; " + " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))))
    except OSError:
        pass
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__.split("+")[0], "pillow": PIL.__version__}


TIMING_KEYS = {"seconds", "images_per_s", "seconds_total", "time_s", "elapsed_s", "minutes"}


def without_timings(obj):
    """A JSON value with every timing key removed, at any depth."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def shipped_folders() -> list[Path]:
    return sorted(p for p in (ROOT / "weights").iterdir() if (p / "config.json").is_file())


# ---------------------------------------------------------------- the groups

def layouts() -> dict:
    from biva_core import BIVA, preset
    from biva_core.model.config import PRESETS
    torch.manual_seed(0)
    return {name: {k: list(v.shape) for k, v in BIVA(preset(name)).state_dict().items()} for name in sorted(PRESETS)}


def shipped(folder: Path) -> dict[str, torch.Tensor]:
    from biva_core import load_pretrained
    model = load_pretrained(folder)
    L = model.config.L
    x = model.sample(2, seed=1, temperature=0.8)
    x = (x > 0.5).float() if model.config.likelihood == "bernoulli" else (x * 255).round() / 255
    out = {"input": x, "sample": model.sample(2, seed=2, temperature=0.8),
           "reconstruct": model.reconstruct(x),
           "resample": model.resample(x, min(2, L), 2, seed=3, temperature=0.8),
           "mix": model.mix(x[:1], x[1:], min(2, L - 1)),
           "interpolate": model.interpolate(x[:1], x[1:], 1, steps=3),
           "pixel_map": model.pixel_map(x, 1, seed=4)["bits"]}
    out.update({f"elbo_{k}": v for k, v in model.elbo(x, seed=5).items()})
    s = model.scores(x, [1, L // 2], K=2, seed=6)
    out.update({"scores_l0": s.l0, "scores_bpd": s.bpd,
                **{f"scores_lk{k}": v for k, v in s.lk.items()}, **{f"scores_llr{k}": v for k, v in s.llr.items()}})
    if model.config.classes:
        out["classify"] = model.classify(x)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def _tiny_run(out: Path, *, classes: bool) -> tuple[dict[str, torch.Tensor], list[dict]]:
    from biva_core.train.config import Consistency, SemiSupervised
    from biva_core.train.trainer import TrainConfig, Trainer
    from conftest import tiny_config
    rng = np.random.default_rng(0)
    if classes:
        model_cfg = tiny_config(kind="bernoulli").replace(classes=2)
        train = rng.integers(0, 2, (40, 1, 8, 8), dtype=np.uint8)
        valid = rng.integers(0, 2, (8, 1, 8, 8), dtype=np.uint8)
        labels = dict(train_labels=np.arange(40) % 2, valid_labels=np.arange(8) % 2)
        cfg = TrainConfig(steps=20, batch_size=4, warmup=3, log_every=5, eval_every=10, eval_images=8,
                          ckpt_minutes=1e9, flip=False, num_threads=1, amp="none", channels_last="off",
                          ssl=SemiSupervised(labels=4, labelled_batch=4, consistency=Consistency(
                              weight=1.0, batch=4, threshold=0.5, teacher="ema")))
    else:
        model_cfg = tiny_config().replace(dropout_q=0.2, dropout_p=0.2)
        train = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
        valid = rng.integers(0, 256, (8, 3, 8, 8), dtype=np.uint8)
        labels = {}
        cfg = TrainConfig(steps=20, batch_size=4, warmup=3, log_every=5, eval_every=10, eval_images=8,
                          ckpt_minutes=1e9, flip=True, num_threads=1, amp="none", channels_last="off")
    t = Trainer(model_cfg, cfg, train, valid, out, log=lambda m: None, **labels)
    t.run(progress=False)
    rows = [without_timings(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]
    params = {f"model.{k}": v.detach().clone().contiguous() for k, v in t.model.state_dict().items()}
    params.update({f"ema.{k}": v.detach().clone().contiguous() for k, v in t.ema.state_dict().items()})
    return params, rows


def training() -> tuple[dict[str, torch.Tensor], dict]:
    tensors, logs = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for name, classes in (("plain", False), ("classes", True)):
            params, rows = _tiny_run(Path(d) / name, classes=classes)
            tensors.update({f"{name}.{k}": v for k, v in params.items()})
            logs[name] = rows
    return tensors, logs


def export_reference() -> dict:
    from biva_core.eval.export import export
    with tempfile.TemporaryDirectory() as d:
        _tiny_run(Path(d) / "run", classes=False)
        g = torch.Generator().manual_seed(7)
        x = torch.randint(0, 256, (13, 3, 8, 8), generator=g).float() / 255
        torch.manual_seed(0)
        out = export(Path(d) / "run", Path(d) / "shipped", test_image=x[:1], valid_images=x[1:], draws=2,
                     log=lambda m: None)
        return without_timings(json.loads((out / "reference.json").read_text()))


def evaluate_report() -> dict | None:
    if not os.environ.get("BIVA_DATA"):
        return None
    from biva_core.eval.evaluate import run
    report = run(["--weights", str(ROOT / "weights" / "binarized_mnist"), "--data", "binarized_mnist",
                  "--split", "test", "--limit", "16", "--iw", "2", "--threads", "1", "--no-progress"])
    report = without_timings(json.loads(json.dumps(report)))
    report["weights"] = Path(report["weights"]).relative_to(ROOT).as_posix()  # the same in any clone
    return report


def anomaly_rows() -> list:
    from studio.engine import Studio
    examples = sorted(str(p) for p in (ROOT / "studio" / "examples").glob("*.png"))[:6]
    with tempfile.TemporaryDirectory() as d:
        studio = Studio([ROOT / "weights" / "celeba64"], workdir=d)
        result = studio.anomaly(studio.names[0], examples, maps=False)
        rows = [[Path(v).name if isinstance(v, str) and v.startswith(("/", d)) else v for v in r] for r in result.rows]
        return json.loads(json.dumps({"headers": result.headers, "rows": rows}, default=str))


# ---------------------------------------------------------------- writing

def write() -> None:
    from safetensors.torch import save_file
    torch.set_num_threads(1)
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    (GOLDEN / "layouts.json").write_text(json.dumps(layouts(), indent=0))
    for folder in shipped_folders():
        save_file(shipped(folder), str(GOLDEN / f"shipped_{folder.name}.safetensors"))
    tensors, logs = training()
    save_file(tensors, str(GOLDEN / "training.safetensors"))
    (GOLDEN / "training.json").write_text(json.dumps(logs))
    (GOLDEN / "export_reference.json").write_text(json.dumps(export_reference()))
    report = evaluate_report()
    if report is None:
        raise SystemExit("set BIVA_DATA: the evaluate golden reads binarized MNIST")
    (GOLDEN / "evaluate.json").write_text(json.dumps(report))
    (GOLDEN / "anomaly.json").write_text(json.dumps(anomaly_rows()))
    print(f"wrote {len(list(GOLDEN.iterdir()))} files to {GOLDEN}")


if __name__ == "__main__":
    write()
