"""Shared test helpers: small models whose every path is live, and a thread setting.

Threads: the test machines are small and shared. With two OpenMP threads on two busy cores a
300-step training loop of the `tiny` model took 346 s instead of 6 s (measured), so the tests
run single-threaded unless BIVA_TEST_THREADS says otherwise.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `pytest tests/` from anywhere

from biva_core import BIVA, LevelConfig, ModelConfig, preset  # noqa: E402
from biva_core.model.layers import BLOCKS  # noqa: E402

torch.set_num_threads(int(os.environ.get("BIVA_TEST_THREADS", "1")))


def tiny_config(variant: str = "biva", kind: str = "dmol", block: str = "gated") -> ModelConfig:
    """`tiny` (3 levels, conv latents, 8x8 RGB, logistic mixture) or a dense Bernoulli twin, with
    the gated or the bottleneck residual block."""
    if kind == "dmol":
        return preset("tiny").replace(variant=variant, block=block)
    levels = (LevelConfig(blocks=1, channels=8, latent=6, stride=2, dense=True),
              LevelConfig(blocks=1, channels=8, latent=4, stride=1, dense=True),
              LevelConfig(blocks=1, channels=8, latent=3, stride=2, dense=True))
    return ModelConfig(image_shape=(1, 8, 8), levels=levels, likelihood="bernoulli", variant=variant, block=block)


def live_model(config: ModelConfig, seed: int = 0) -> BIVA:
    """A model in eval mode whose residual branches are not zero.

    The residual blocks start as the identity (zero-initialised last convolution), which would make
    skip inputs, merges and most of the top-down path invisible to a test; random small weights
    there make every path matter."""
    torch.manual_seed(seed)
    model = BIVA(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tuple(BLOCKS.values())):
                torch.nn.init.normal_(m.last.weight, std=0.05)
                torch.nn.init.normal_(m.last.bias, std=0.05)
    return model.eval()


def images(config: ModelConfig, n: int, seed: int = 0) -> torch.Tensor:
    """n fixed random images in [0, 1] for the config: 8-bit values, or {0, 1} for Bernoulli."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *config.image_shape)
    if config.likelihood == "bernoulli":
        return (torch.rand(shape, generator=g) < 0.5).float()
    return torch.randint(0, 256, shape, generator=g).float() / 255
