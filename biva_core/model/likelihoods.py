"""Densities: diagonal Gaussians for the latents, Bernoulli and the discretized logistic
mixture (PixelCNN++ form) for the pixels.

All log-densities are computed in float32 and summed to one value per image, shape (B,).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------- Gaussian latents

def gaussian_log_prob(z: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """log N(z; mean, scale^2), summed over all but the batch dimension -> (B,)."""
    e = (z - mean) / scale
    return (-0.5 * e * e - scale.log() - 0.5 * LOG_2PI).flatten(1).sum(1)


def gaussian_kl(q_mean: Tensor, q_scale: Tensor, p_mean: Tensor, p_scale: Tensor) -> Tensor:
    """Analytic KL(N(q_mean, q_scale^2) || N(p_mean, p_scale^2)) summed per item -> (B,).

    KL = log(p_scale / q_scale) + (q_scale^2 + (q_mean - p_mean)^2) / (2 p_scale^2) - 1/2
    """
    r = q_scale / p_scale
    d = (q_mean - p_mean) / p_scale
    return (-r.log() + 0.5 * (r * r + d * d) - 0.5).flatten(1).sum(1)


def gaussian_sample(mean: Tensor, scale: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None, tie: int = 1) -> Tensor:
    """mean + temperature * scale * eps, eps ~ N(0, I); temperature 0 gives the mean. tie > 1:
    each run of `tie` consecutive rows shares one eps."""
    if temperature == 0.0:
        return mean
    shape = (mean.shape[0] // tie, *mean.shape[1:])
    eps = torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    eps = eps.repeat_interleave(tie, dim=0) if tie > 1 else eps
    return mean + temperature * scale * eps


# ---------------------------------------------------------------- Bernoulli pixels

def bernoulli_log_prob(x: Tensor, logits: Tensor, per_pixel: bool = False) -> Tensor:
    """x in {0, 1}, shape (B, 1, H, W); log p(x) summed per image -> (B,), or per pixel (B, H, W)."""
    log_p = -F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").sum(1)
    return log_p if per_pixel else log_p.flatten(1).sum(1)


def bernoulli_mean(logits: Tensor) -> Tensor:
    return torch.sigmoid(logits.float())


def bernoulli_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    p = torch.sigmoid(logits.float())
    return (torch.rand(p.shape, generator=generator, device=p.device) < p).float()


# ---------------------------------------------------------------- discretized logistic mixture
#
# Parameters for C channels and M components, per pixel (channel dim of `params`):
#   logits (M) | means (C*M) | log_scales (C*M) | coeffs (M * C(C-1)/2, only for C = 3).
# Pixels live in [-1, 1] on the grid of 256 values 2v/255 - 1. As in PixelCNN++, channels of
# one component are autoregressive: mean_g += c0 * x_r, mean_b += c1 * x_r + c2 * x_g.

def dmol_channels(c: int, m: int) -> int:
    return m * (1 + 2 * c + (3 if c == 3 else 0))


def _dmol_unpack(params: Tensor, c: int, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    b, _, h, w = params.shape
    # one split, not four slices: the backward of a split is one concatenation, while each
    # slice's backward zero-fills a gradient the size of all the parameters (measured on the
    # CPU: 4 fills of (48, 100, 64, 64) per step cost more than the output convolution)
    sizes = [m, c * m, c * m] + ([3 * m] if c == 3 else [])
    # channels-last parameters (the output convolution's layout) are made contiguous once here:
    # left strided, the mixture's forward + backward took 1.58x its contiguous time, 1.16x with
    # this copy (benchmarks/dmol_layout.py, one thread, batch 16 at 64x64)
    parts = params.float().contiguous().split(sizes, dim=1)
    logits = parts[0]                                             # (B, M, H, W)
    means = parts[1].reshape(b, c, m, h, w)
    log_scales = parts[2].reshape(b, c, m, h, w).clamp(min=-7.0)
    coeffs = torch.tanh(parts[3].reshape(b, 3, m, h, w)) if c == 3 else None
    return logits, means, log_scales, coeffs


def _dmol_condition(means: Tensor, coeffs: Tensor | None, x: Tensor) -> Tensor:
    """Shift the G and B means by the (observed or sampled) values of earlier channels."""
    if coeffs is None:
        return means
    xr, xg = x[:, 0:1], x[:, 1:2]                                 # (B, 1, 1|M, H, W)
    return torch.cat([means[:, 0:1],
                      means[:, 1:2] + coeffs[:, 0:1] * xr,
                      means[:, 2:3] + coeffs[:, 1:2] * xr + coeffs[:, 2:3] * xg], dim=1)


def dmol_log_prob(x: Tensor, params: Tensor, m: int, per_pixel: bool = False) -> Tensor:
    """log P(x) for x on the 256-value grid in [-1, 1], shape (B, C, H, W) -> (B,), or per pixel
    (all channels of a pixel together) -> (B, H, W).

    Each bin is [v - 1/255, v + 1/255] with the outermost bins open to -inf / +inf, so the
    probabilities of the 256 values sum to one. The bin mass sigma(a) - sigma(b) is computed
    as log sigma(a) + log sigma(-b) + log(1 - exp(b - a)), which is exact and stable.
    """
    c = x.shape[1]
    logits, means, log_scales, coeffs = _dmol_unpack(params, c, m)
    x = x.float().unsqueeze(2)                                    # (B, C, 1, H, W)
    means = _dmol_condition(means, coeffs, x)
    inv_s = torch.exp(-log_scales)
    a = inv_s * (x - means + 1.0 / 255)                           # upper edge of the bin
    b = inv_s * (x - means - 1.0 / 255)                           # lower edge
    top, bottom = x > 0.999, x < -0.999
    zero = torch.zeros((), device=x.device)
    log_mass = (torch.where(top, zero, F.logsigmoid(a))
                + torch.where(bottom, zero, F.logsigmoid(-b))
                + torch.where(top | bottom, zero, torch.log(-torch.expm1(b - a))))
    log_mix = log_mass.sum(1) + F.log_softmax(logits, dim=1)      # (B, M, H, W)
    log_p = torch.logsumexp(log_mix, dim=1)                       # (B, H, W)
    return log_p if per_pixel else log_p.flatten(1).sum(1)


def dmol_mean(params: Tensor, c: int, m: int) -> Tensor:
    """Mean of the (continuous) mixture, channel by channel; in [-1, 1], (B, C, H, W)."""
    logits, means, _, coeffs = _dmol_unpack(params, c, m)
    pi = torch.softmax(logits, dim=1).unsqueeze(1)                # (B, 1, M, H, W)
    if coeffs is None:
        return (pi * means).sum(2).clamp(-1, 1)
    r = (pi[:, 0] * means[:, 0]).sum(1, keepdim=True).clamp(-1, 1)
    g = (pi[:, 0] * (means[:, 1] + coeffs[:, 0] * r)).sum(1, keepdim=True).clamp(-1, 1)
    bl = (pi[:, 0] * (means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g)).sum(1, keepdim=True)
    return torch.cat([r, g, bl.clamp(-1, 1)], dim=1)


def dmol_sample(params: Tensor, c: int, m: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw pixels: a component by Gumbel-max, then a logistic per channel; (B, C, H, W)."""
    logits, means, log_scales, coeffs = _dmol_unpack(params, c, m)
    b, _, h, w = logits.shape
    dev = logits.device
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator, device=dev).clamp(1e-6, 1 - 1e-6)))
    pick = F.one_hot((logits + gumbel).argmax(1), m).permute(0, 3, 1, 2).unsqueeze(1).float()
    mu = (means * pick).sum(2)                                    # (B, C, H, W)
    s = torch.exp((log_scales * pick).sum(2))
    u = torch.rand(mu.shape, generator=generator, device=dev).clamp(1e-5, 1 - 1e-5)
    noise = s * (torch.log(u) - torch.log1p(-u))
    if coeffs is None:
        return (mu + noise).clamp(-1, 1)
    co = (coeffs * pick).sum(2)                                   # (B, 3, H, W)
    r = (mu[:, 0] + noise[:, 0]).clamp(-1, 1)
    g = (mu[:, 1] + co[:, 0] * r + noise[:, 1]).clamp(-1, 1)
    bl = (mu[:, 2] + co[:, 1] * r + co[:, 2] * g + noise[:, 2]).clamp(-1, 1)
    return torch.stack([r, g, bl], dim=1)
