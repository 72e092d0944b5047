"""The training config: every key `python train.py --set key=value` takes, with its type and range
checked when the config is made (a wrong value fails before any data is read).

The semi-supervised objective (spec section 5) and its consistency term have typed configs of their
own, nested as `ssl` and `ssl.consistency`: `--set ssl.alpha=1 ssl.consistency.weight=1`. Configs
saved before stored their keys flat (`ssl_alpha`, `ssl_consistency`, `labels`, ...): those still
load, and still work with --set (LEGACY maps each to its place)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str}

# switches retired on 2026-12-07 (their off values, as older configs store them); what each
# experiment found: docs/notes/2026-12-07-retired-switches.md
RETIRED = {"free_bits_top": -1.0, "free_bits_top_levels": 0, "ssl_q_hold": 0, "ssl_thickness": 0.0}
RETIRED_WHY = "what its experiments found is in docs/notes/2026-12-07-retired-switches.md"

# compile="auto" compiles long runs only: at least this many steps (the face step: ~25 minutes) and
# no --max-minutes / --max-cpu-minutes under COMPILE_MINUTES
COMPILE_STEPS, COMPILE_MINUTES = 2000, 20.0

# the flat keys of configs saved before the semi-supervised keys were nested -> where they are now
LEGACY = {"labels": "ssl.labels", "label_seed": "ssl.label_seed", "labelled_batch": "ssl.labelled_batch",
          "ssl_alpha": "ssl.alpha", "ssl_consistency": "ssl.consistency.weight",
          "ssl_threshold": "ssl.consistency.threshold", "ssl_consistency_batch": "ssl.consistency.batch",
          "ssl_shift": "ssl.consistency.shift", "ssl_rotate": "ssl.consistency.rotate",
          "ssl_elastic": "ssl.consistency.elastic", "ssl_elastic_sigma": "ssl.consistency.elastic_sigma",
          "ssl_teacher": "ssl.consistency.teacher"}


def _check(ok: bool, name: str, value, why: str) -> None:
    if not ok:
        raise ValueError(f"train config: {name}={value!r} {why}")


def _check_types(cfg, where: str) -> None:
    """Every field of the config `cfg` holds its annotated type (a whole number passes as a float);
    `where` is the fields' dotted prefix ("ssl." ...), for the message."""
    for f in dataclasses.fields(cfg):
        v, want = getattr(cfg, f.name), SCALARS.get(f.type) or SUBCONFIGS[f.type]
        if isinstance(v, bool) and want is not bool or not isinstance(v, want):
            raise ValueError(f"train config: {where}{f.name}={v!r} must be {f.type}")


@dataclass(frozen=True)
class Consistency:
    """`ssl.consistency`, beyond spec section 5 (semisupervised.py): q(y | x) also learns from its own
    confident answers on unlabelled images, read through a random shift and rotation (FixMatch-style
    pseudo-labels)."""
    weight: float = 0.0          # relative to the labelled term (0 = off, the spec)
    threshold: float = 0.95      # the confidence max_y q(y | x) of a pseudo-label
    batch: int = 64              # unlabelled images of the term per step (bottom-up passes only)
    shift: float = 3.0           # the jitter: shift of up to this many pixels each way
    rotate: float = 15.0         # and rotation of up to this many degrees
    elastic: float = 0.0         # and an elastic distortion of this strength (pixels; 0 = none,
    elastic_sigma: float = 4.0   # Simard et al. 2003 used 34 with this smoothing sigma on MNIST)
    teacher: str = "self"        # who reads the pseudo-labels: "self" or "ema" (the EMA weights)

    def __post_init__(self) -> None:
        w = "ssl.consistency."
        _check_types(self, w)
        _check(self.teacher in ("self", "ema"), w + "teacher", self.teacher, "must be 'self' or 'ema'")
        _check(self.batch >= 1, w + "batch", self.batch, "must be at least 1")
        _check(self.elastic_sigma > 0, w + "elastic_sigma", self.elastic_sigma, "must be > 0")
        for name in ("weight", "shift", "rotate", "elastic"):
            _check(getattr(self, name) >= 0, w + name, getattr(self, name), "must be >= 0")
        _check(0 < self.threshold <= 1, w + "threshold", self.threshold, "must be in (0, 1]")


@dataclass(frozen=True)
class SemiSupervised:
    """`ssl`: the semi-supervised objective of a model with classes (spec section 5,
    semisupervised.objective), J = sum_labelled [L(x, y) + alpha log q(y | x)] + sum_unlabelled U(x)
    with alpha = `alpha` N, and its consistency term."""
    labels: int = 0              # labelled training images, labels / classes per class (0 = none)
    label_seed: int = 0          # the seed of their draw (semisupervised.draw_labels)
    labelled_batch: int = 32     # labelled images in every batch, beside batch_size unlabelled
    alpha: float = 0.1           # alpha = ssl.alpha * N of the classification term
    consistency: Consistency = dataclasses.field(default_factory=Consistency)

    def __post_init__(self) -> None:
        _check_types(self, "ssl.")
        _check(self.labels >= 0, "ssl.labels", self.labels, "must be >= 0")
        _check(self.labelled_batch >= 1, "ssl.labelled_batch", self.labelled_batch, "must be at least 1")
        _check(self.alpha >= 0, "ssl.alpha", self.alpha, "must be >= 0")
        _check(not self.consistency.weight or self.labels, "ssl.consistency.weight", self.consistency.weight,
               "needs labels (ssl.labels, --labels N): its scale is the labelled term's")


SUBCONFIGS = {"Consistency": Consistency, "SemiSupervised": SemiSupervised}  # field annotation -> class


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200_000
    batch_size: int = 48
    lr: float = 2e-3
    lr_decay: float = 0.999999       # per step, down to lr_min
    lr_min: float = 1e-4
    lr_schedule: str = "exp"         # "exp": lr * lr_decay^step; "cosine": lr to lr_min over `steps`
    warmup: int = 200                # linear warm-up steps
    free_bits: float = 2.0           # nats per latent group and image (training only)
    # --init into another layout: copy the tensors whose name and shape match, keep the rest at
    # their initial values (logged); false: every tensor must match
    init_partial: bool = False
    ema: float = 0.9995              # EMA decay, warmed up: min(ema, (1 + step) / (10 + step))
    grad_clip: float = 200.0         # clip the global gradient norm to this
    # the update guard (guard.py): skip an update whose norm exceeds skip_factor x the 90th
    # percentile of the recent accepted norms (skip_threshold until 20 were accepted) or is not finite; after
    # max_skips skips in a row restore the last healthy state at half the learning rate; stop
    # after max_rollbacks rollbacks with no healthy stretch between them
    skip_threshold: float = 1000.0
    skip_factor: float = 10.0
    max_skips: int = 5
    max_rollbacks: int = 3
    # "amx": bf16 autocast on a CPU with AMX tiles (bf16 matrix units, Intel Sapphire Rapids and
    # later), where the model's convolutions run 4-6x faster; float32 anywhere else (on an H200
    # the step is bound by kernel launches and bf16 adds casts: docs/gpu_flagship.md; a CPU without
    # AMX runs bf16 convolutions slower). "bf16": always; "none": float32. What runs in bf16 and
    # what it costs the bound: biva_core/model/layers.py. Validation is always float32.
    amp: str = "amx"
    # "auto" (the default): channels-last and torch.compile where the convolutions run bf16 on a
    # CPU (amp above), compile only for long runs (COMPILE_STEPS), as it costs about 3 minutes per
    # process start; "on" / "off" (true / false) choose. The face step, idle, 2 threads:
    # bf16 1.16x the float32 step, + channels-last 1.29x, + compile 1.66x
    # (docs/notes/2026-12-07-bf16-convolutions-on-amx.md); in float32 channels-last was neutral
    channels_last: str = "auto"
    compile: str = "auto"
    # the update without a host sync (Trainer._guarded_update): "auto" = on CUDA only. On a CPU a
    # sync costs nothing and the undo costs time (measured: 1.135x the step on celeba64_cpu, batch
    # 16, 2 threads; benchmarks/guarded_step.py), so there the skip is a plain branch
    sync_free: str = "auto"
    fused: bool = True               # fused (CUDA) / foreach optimizer kernels
    flip: bool = True                # random horizontal flips (faces, not digits)
    binarize: bool = False           # dynamic binarization: 8-bit training images drawn as
                                     # Bernoulli(intensity / 255) afresh at every use
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000           # steps between validations (and best-weights saves)
    eval_images: int = 1000          # valid images per validation (0 = all)
    ckpt_minutes: float = 5.0        # resume state at least this often
    max_minutes: float = 0.0         # stop after this wall time (0 = no limit)
    max_cpu_minutes: float = 0.0     # stop after this much CPU time of the process, all its threads
                                     # (0 = no limit): equal budgets on a shared or paused machine
    num_threads: int = 0             # CPU threads (0 = all cores)
    snapshots: bool = False          # also keep the best weights of every validation under
                                     # snapshots/<step>/ (to measure a score against training time)
    # semi-supervised training (a model with classes, spec section 5): the keys ssl.*
    ssl: SemiSupervised = dataclasses.field(default_factory=SemiSupervised)
    eval_error_images: int = 0       # valid images for the valid error (0 = eval_images; -1 = all)

    def __post_init__(self) -> None:
        for name in ("channels_last", "compile"):  # booleans, as older configs store them
            if isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, "on" if getattr(self, name) else "off")
        _check_types(self, "")
        for name in ("channels_last", "compile"):
            _check(getattr(self, name) in ("auto", "on", "off"), name, getattr(self, name),
                   "must be 'auto', 'on' or 'off' (or true / false)")
        _check(self.lr_schedule in ("exp", "cosine"), "lr_schedule", self.lr_schedule, "must be 'exp' or 'cosine'")
        _check(self.amp in ("amx", "bf16", "none"), "amp", self.amp, "must be 'amx', 'bf16' or 'none'")
        _check(self.sync_free in ("auto", "on", "off"), "sync_free", self.sync_free, "must be 'auto', 'on' or 'off'")
        for name in ("steps", "batch_size", "log_every", "eval_every", "max_skips"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        for name in ("lr", "lr_min", "skip_threshold", "grad_clip"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        for name in ("warmup", "free_bits", "max_minutes", "max_cpu_minutes", "num_threads", "eval_images",
                     "max_rollbacks"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        _check(0 < self.ema < 1, "ema", self.ema, "must be in (0, 1)")
        _check(0 < self.lr_decay <= 1, "lr_decay", self.lr_decay, "must be in (0, 1]")
        _check(self.skip_factor > 1, "skip_factor", self.skip_factor, "must be > 1")
        _check(self.eval_error_images >= -1, "eval_error_images", self.eval_error_images, "must be -1, 0 or more")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From JSON (a run's or a shipped folder's train_config, --set values): unknown keys are
        refused by name; an older config's flat keys (LEGACY) go to their places under `ssl`; a
        retired switch stored at its off value is dropped, one stored on is refused; the amp "auto"
        of older runs meant fp32 ("none")."""
        if not isinstance(d, dict):
            raise ValueError(f"train config: must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        for key, off in RETIRED.items():
            if key in d:
                if d.pop(key) != off:
                    raise ValueError(f"train config: {key} was retired (no shipped model used it; "
                                     f"{RETIRED_WHY}); remove it from the config")
        if d.get("amp") == "auto":
            d["amp"] = "none"
        for key in sorted(LEGACY.keys() & d.keys()):
            if LEGACY[key] in flatten({k: v for k, v in d.items() if k not in LEGACY}):
                raise ValueError(f"train config: {key} and {LEGACY[key]} are one key, given twice")
            set_key(d, key, d.pop(key))
        return _build(cls, d, "")


def _build(cls, d: dict, where: str):
    """The config `cls` from its JSON object: unknown keys refused by name, the sub-configs built
    from their objects; `where` is the dotted prefix of its keys."""
    if not isinstance(d, dict):
        raise ValueError(f"train config: {where[:-1]} must be a JSON object, got {d!r}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise ValueError(f"train config: unknown key(s) {[where + k for k in unknown]}; "
                         f"known: {sorted(where + k for k in types)}")
    return cls(**{k: _build(SUBCONFIGS[types[k]], v, f"{where}{k}.") if types[k] in SUBCONFIGS else v
                  for k, v in d.items()})


def set_key(d: dict, key: str, value) -> None:
    """Set one key of a train config's JSON object `d` (as `to_dict` gives it): a top-level key, a
    dotted one (ssl.alpha, ssl.consistency.weight) or an older flat one (ssl_alpha). The objects
    on the way are copied, not changed in place; a key nothing knows is left to `from_dict` to name."""
    *path, leaf = LEGACY.get(key, key).split(".")
    node = d
    for i, name in enumerate(path):
        inner = node.get(name, {})
        if not isinstance(inner, dict):
            raise ValueError(f"train config: {'.'.join(path[:i + 1])}={inner!r} has no keys (it is not an object)")
        node[name] = dict(inner)
        node = node[name]
    node[leaf] = value


def flatten(d: dict, where: str = "") -> dict:
    """A train config's JSON object with the sub-configs' keys as dotted names ({"ssl.alpha": 0.1,
    ...}) and an older config's flat keys under their names now; nothing is checked."""
    out = {}
    for k, v in d.items():
        key = where + k if where else LEGACY.get(k, k)
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out
