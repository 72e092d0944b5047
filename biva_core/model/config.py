"""Model configuration: frozen, JSON-safe dataclasses and the named presets.

A model is rebuilt from its own `ModelConfig` (saved as JSON beside the weights). Levels are
listed bottom-up: `levels[0]` is level 1 (nearest the pixels), `levels[-1]` is level L.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

VARIANTS = ("biva", "lvae", "lvae+")
LIKELIHOODS = ("bernoulli", "dmol")
BLOCKS = ("gated", "bottleneck")  # the residual block of every stack (biva_core/layers.py)

# switches retired on 2026-12-07 with their code (their off values, as older configs store them);
# what each experiment found: docs/notes/2026-12-07-retired-switches.md
RETIRED = {"class_posterior": False, "class_means": False, "class_everywhere": False}
RETIRED_WHY = "what its experiments found is in docs/notes/2026-12-07-retired-switches.md"


@dataclass(frozen=True)
class LevelConfig:
    """One stochastic level: its deterministic blocks and its latent.

    stride: 2 halves the resolution on the way up (and doubles it on the way down) at the
        start of this level; 1 keeps it.
    latent: channels of a convolutional latent (C x H x W at this level's resolution) or the
        size of a dense latent vector. In BIVA each of z_BU and z_TD has this size.
    """

    blocks: int
    channels: int
    latent: int
    stride: int = 1
    dense: bool = False

    def __post_init__(self) -> None:
        _check(self.blocks >= 1, "levels[].blocks", self.blocks, "must be >= 1")
        _check(self.channels >= 1, "levels[].channels", self.channels, "must be >= 1")
        _check(self.latent >= 1, "levels[].latent", self.latent, "must be >= 1")
        _check(self.stride in (1, 2), "levels[].stride", self.stride, "must be 1 or 2")


@dataclass(frozen=True)
class ModelConfig:
    image_shape: tuple[int, int, int]  # (C, H, W)
    levels: tuple[LevelConfig, ...]
    likelihood: str = "dmol"
    mixtures: int = 10  # components of the discretized logistic mixture
    dropout_q: float = 0.0  # in the bottom-up / inference blocks
    dropout_p: float = 0.0  # in the generative top-down blocks
    variant: str = "biva"
    # C > 0: a class y joins the model (spec section 5, semi-supervised): the top-down path starts
    # from [z_L, y], p(y) uniform, q(y | x) reads the top level's bottom-up features. 0 = none
    classes: int = 0
    # "gated": 3x3 convs at full width (the paper's); "bottleneck": 1x1 to channels / 4, two 3x3,
    # 1x1 back (VDVAE's design, ~14x fewer multiply-adds per block), gated the same way
    block: str = "gated"

    def __post_init__(self) -> None:
        _check(hasattr(self.image_shape, "__len__") and not isinstance(self.image_shape, (str, dict))
               and len(self.image_shape) == 3 and all(isinstance(s, numbers.Integral) for s in self.image_shape),
               "image_shape", self.image_shape, "must be (C, H, W) with C in {1, 3}")
        _check(isinstance(self.levels, (list, tuple)), "levels", self.levels, "must be a list of levels")
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "levels", tuple(
            lv if isinstance(lv, LevelConfig) else _from_dict(LevelConfig, lv, "levels[]")
            for lv in self.levels))
        c, h, w = self.image_shape
        _check(len(self.image_shape) == 3 and c in (1, 3) and h >= 1 and w >= 1,
               "image_shape", self.image_shape, "must be (C, H, W) with C in {1, 3}")
        _check(self.likelihood in LIKELIHOODS, "likelihood", self.likelihood, f"must be one of {LIKELIHOODS}")
        _check(self.likelihood != "bernoulli" or c == 1, "likelihood", self.likelihood,
               "bernoulli needs 1 channel")
        _check(self.mixtures >= 1, "mixtures", self.mixtures, "must be >= 1")
        _check(0.0 <= self.dropout_q < 1.0, "dropout_q", self.dropout_q, "must be in [0, 1)")
        _check(0.0 <= self.dropout_p < 1.0, "dropout_p", self.dropout_p, "must be in [0, 1)")
        _check(self.variant in VARIANTS, "variant", self.variant, f"must be one of {VARIANTS}")
        _check(self.block in BLOCKS, "block", self.block, f"must be one of {BLOCKS}")
        _check(self.block != "bottleneck" or min(lv.channels for lv in self.levels) >= 4, "block", self.block,
               "bottleneck needs >= 4 channels at every level (it runs at channels / 4)")
        _check(self.classes >= 0, "classes", self.classes, "must be >= 0 (0 = no class variable)")
        _check(len(self.levels) >= 2, "levels", len(self.levels), "needs at least 2 levels")
        size = h
        for i, lv in enumerate(self.levels):
            _check(size % lv.stride == 0, f"levels[{i}].stride", lv.stride,
                   f"does not divide the resolution {size}")
            size //= lv.stride

    @property
    def L(self) -> int:
        return len(self.levels)

    @property
    def n_latents(self) -> int:
        """N = 2L - 1 for BIVA (a BU/TD pair per level, one at the top); L for the LVAEs."""
        return 2 * self.L - 1 if self.variant == "biva" else self.L

    @property
    def latent_names(self) -> list[str]:
        """The latents bottom-up: z1_bu, z1_td, ..., z_L for BIVA; z1 .. z_L for the LVAEs; y last
        for a model with classes (the order of every per-latent KL)."""
        L = self.L
        if self.variant == "biva":
            names = [f"z{j // 2 + 1}_{'td' if j % 2 else 'bu'}" for j in range(2 * L - 2)] + [f"z{L}"]
        else:
            names = [f"z{i + 1}" for i in range(L)]
        return names + (["y"] if self.classes else [])

    @property
    def dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def resolutions(self) -> list[tuple[int, int]]:
        """(H, W) of each level, bottom-up."""
        _, h, w = self.image_shape
        out = []
        for lv in self.levels:
            h, w = h // lv.stride, w // lv.stride
            out.append((h, w))
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """From JSON (a folder's config.json, --set values): unknown keys are refused by name; a
        retired switch stored at its off value is dropped, one stored on is refused."""
        if isinstance(d, dict):
            d = dict(d)
            for key, off in RETIRED.items():
                if key in d and d.pop(key) is not off:
                    raise ValueError(f"config: {key} was retired (no shipped model used it; {RETIRED_WHY}); "
                                     "remove it from the config")
        return _from_dict(cls, d, "model")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _check(ok: bool, key: str, value, why: str) -> None:
    if not ok:
        raise ValueError(f"config: {key}={value!r} {why}")


_JSON_SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str}  # field annotation -> accepted


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"config: {where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown} in {where}; known: {sorted(names)}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.name not in d and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"config: missing key(s) {missing} in {where}")
    for f in dataclasses.fields(cls):  # JSON scalars: 2.5 blocks or "yes" for a bool would pass __post_init__
        want = _JSON_SCALARS.get(f.type)
        value = d.get(f.name)
        if f.name in d and want and (not isinstance(value, want) or (isinstance(value, bool) and f.type != "bool")):
            raise ValueError(f"config: {f.name}={value!r} in {where} must be {f.type}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"config: bad value in {where}: {e}") from None


# ---------------------------------------------------------------- presets

def _levels(spec: list[tuple[int, int, int, int, bool]]) -> tuple[LevelConfig, ...]:
    return tuple(LevelConfig(blocks=b, channels=c, latent=z, stride=s, dense=d) for b, c, z, s, d in spec)


def binarized_mnist() -> ModelConfig:
    """The authors' binarized-MNIST BIVA: L = 6, 3 gated blocks of 64 channels, 28 -> 14 -> 7,
    dense latents 48..8, dropout 0.5 / 0.5, Bernoulli output."""
    zs = [48, 40, 32, 24, 16, 8]
    strides = [1, 2, 1, 2, 1, 1]
    return ModelConfig(image_shape=(1, 28, 28), likelihood="bernoulli",
                       levels=_levels([(3, 64, z, s, True) for z, s in zip(zs, strides)]),
                       dropout_q=0.5, dropout_p=0.5)


def cifar10() -> ModelConfig:
    """The authors' CIFAR-10 BIVA: L = 15, 3 gated blocks of 96 channels, 32 -> 16 -> 8 -> 4,
    conv latents 38..20 channels at 16x16, 18..12 at 8x8, 10 at 4x4, dropout 0.2 / 0."""
    zs = list(range(38, 19, -2)) + [18, 16, 14, 12] + [10]
    strides = [2] + [1] * 9 + [2, 1, 1, 1] + [2]
    return ModelConfig(image_shape=(3, 32, 32), likelihood="dmol", mixtures=10,
                       levels=_levels([(3, 96, z, s, False) for z, s in zip(zs, strides)]),
                       dropout_q=0.2, dropout_p=0.0)


def faces64(widths: list[tuple[int, int]], dropout_q: float = 0.1,
            image_shape: tuple[int, int, int] = (3, 64, 64)) -> ModelConfig:
    """A 64x64x3 face model with one gated block per stream and level and 8-channel conv latents.

    widths: (levels, channels) per resolution from 32x32 down (the stem halves 64 to 32, each
    later group halves again), e.g. [(3, 64), (6, 96), (6, 128), (5, 128)] for 32/16/8/4.
    """
    spec = [(1, c, 8, 2 if i == 0 else 1, False) for n, c in widths for i in range(n)]
    return ModelConfig(image_shape=image_shape, likelihood="dmol", mixtures=10,
                       levels=_levels(spec), dropout_q=dropout_q, dropout_p=0.0)


def celeba64() -> ModelConfig:
    """CelebA 64x64, L = 20: 3 levels at 32x32, 6 at 16x16, 6 at 8x8, 5 at 4x4 (31.5M parameters).

    One gated block per stream and level: on a GPU, a level at 8x8 or 4x4 costs kernel launches,
    not arithmetic, so depth comes from levels, width from channels.
    """
    return faces64([(3, 64), (6, 96), (6, 128), (5, 128)])


def celeba64_cpu() -> ModelConfig:
    """CelebA 64x64, L = 20 for 2 CPU cores (9.1M parameters, 6.7 GFLOP per training image):
    2 levels at 32x32 (32 channels), 4 at 16x16 (48), 8 at 8x8 (64), 6 at 4x4 (64).

    Chosen by measurement (docs/celeba64_cpu_candidates.md): of three L = 20 layouts trained for
    20 CPU-minutes each, it reached the lowest valid bits/dim.
    """
    return faces64([(2, 32), (4, 48), (8, 64), (6, 64)])


def celeba64_cpu_bottleneck() -> ModelConfig:
    """`celeba64_cpu`'s 20 levels at twice the width (64 / 96 / 128 / 128) with bottleneck blocks:
    7.0M parameters, 6.05 GFLOP per training image. In a 32-minute one-thread race from scratch
    it reached 5.226 valid bits/dim against 5.780 for `celeba64_cpu` (docs/celeba64_cpu_race.md)."""
    return faces64([(2, 64), (4, 96), (8, 128), (6, 128)]).replace(block="bottleneck")


def fashion_mnist() -> ModelConfig:
    """FashionMNIST 28x28 8-bit grayscale, L = 6 conv latents, discretized logistic mixture."""
    spec = [(2, 48, 8, 2, False), (2, 48, 8, 1, False), (2, 64, 8, 2, False),
            (2, 64, 8, 1, False), (2, 64, 8, 1, False), (2, 64, 8, 1, False)]
    return ModelConfig(image_shape=(1, 28, 28), likelihood="dmol", mixtures=5,
                       levels=_levels(spec), dropout_q=0.0, dropout_p=0.0)


def fashion_mnist_binary() -> ModelConfig:
    """Binarized FashionMNIST (dynamically binarized in training), Bernoulli output, L = 6: conv
    latents of 8 channels at 14, 14, 7, 7 and two dense latents (16, 8) at the top, as the top of
    Havtorn et al.'s HVAE; one gated block of 32 / 48 channels per stream and level, 1.9M parameters
    (their HVAE has ~2M), ~80 training images/s on one core of this project's CPU.

    The dense top was measured against `_conv_hierarchy()` (all six levels conv) in 2 CPU-hours each:
    0.4336 against 0.4408 valid bits/dim, and a detector AUROC against MNIST of 0.94 after 21 minutes
    against 0.89 after 118 (docs/detector.md)."""
    spec = _conv_hierarchy()[:4] + [(1, 48, 16, 1, True), (1, 48, 8, 1, True)]
    return ModelConfig(image_shape=(1, 28, 28), likelihood="bernoulli", levels=_levels(spec))


def _conv_hierarchy() -> list[tuple[int, int, int, int, bool]]:
    """Six conv levels of 8 channels at 14, 14, 7, 7, 7, 7 (one gated block of 32 / 48 channels)."""
    return [(1, 32, 8, 2, False), (1, 32, 8, 1, False), (1, 48, 8, 2, False),
            (1, 48, 8, 1, False), (1, 48, 8, 1, False), (1, 48, 8, 1, False)]


def mnist_ssl() -> ModelConfig:
    """Semi-supervised MNIST (spec section 5; the paper's Table 3 uses 100 labels): six conv levels
    of 8 channels at 14, 14, 7, 7, 7, 7 (2.1M parameters) with a class y of 10 values at the top,
    Bernoulli output for dynamically binarized MNIST (`--data mnist_binary --labels 100`)."""
    return ModelConfig(image_shape=(1, 28, 28), likelihood="bernoulli", levels=_levels(_conv_hierarchy()),
                       classes=10)


def tiny() -> ModelConfig:
    """A few thousand parameters for tests: 3 levels on 8x8 RGB."""
    spec = [(1, 16, 4, 2, False), (1, 16, 4, 1, False), (1, 16, 4, 2, False)]
    return ModelConfig(image_shape=(3, 8, 8), likelihood="dmol", mixtures=3, levels=_levels(spec))


# ---------------------------------------------------------------- the auto preset

AUTO_SIZES = (64, 32, 28, 16)  # a folder's images are resized to the largest of these they reach


def auto_size(native: int) -> int:
    """The model size for images whose shorter side is `native` pixels (never upsampled)."""
    for size in AUTO_SIZES:
        if native >= size:
            return size
    raise ValueError(f"images of {native} pixels are too small for a model: the auto preset needs at least "
                     f"{AUTO_SIZES[-1]} (give --preset and --set image_shape=... to try anyway)")


def auto(channels: int, native: int) -> ModelConfig:
    """A layout for a user's own images by their channels and size (docs/own_images.md): 64 -> `celeba64_cpu` (L = 20); 32 -> L = 15 at 16/8/4 (48/64/64 channels); 28 and 16
    -> `fashion_mnist`'s L = 6 at size/2 and size/4. A mixture of discretized logistics, 10
    components for colour and 5 for grey."""
    if channels not in (1, 3):
        raise ValueError(f"the auto preset takes grey (1 channel) or RGB (3) images, got {channels} channels")
    size = auto_size(native)
    shape = (channels, size, size)
    if size == 64:
        cfg = celeba64_cpu().replace(image_shape=shape)
    elif size == 32:
        cfg = faces64([(4, 48), (6, 64), (5, 64)], image_shape=shape)
    else:
        cfg = fashion_mnist().replace(image_shape=shape)
    return cfg.replace(mixtures=10 if channels == 3 else 5)


PRESETS = {
    "binarized_mnist": binarized_mnist,
    "cifar10": cifar10,
    "celeba64": celeba64,
    "celeba64_cpu": celeba64_cpu,
    "celeba64_cpu_bottleneck": celeba64_cpu_bottleneck,
    "fashion_mnist": fashion_mnist,
    "fashion_mnist_binary": fashion_mnist_binary,
    "mnist_ssl": mnist_ssl,
    "tiny": tiny,
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]()
