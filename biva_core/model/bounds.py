"""Bounds and scores (spec section 2), in nats per image unless a name says bits/dim.

    L_1     = E_q[log p(x|z) + log p(z) - log q(z|x)]                        (the ELBO)
    L_K     = E[log 1/K sum_k p(x, z_k) / q(z_k | x)]                        (importance weighted)
    L^{>k}  = E_{p(z_{<=k}|z_{>k}) q(z_{>k}|x)}[log p(x|z) p(z_{>k}) / q(z_{>k}|x)]
    LLR^{>k} = L^{>0} - L^{>k}                                                 (anomaly score)
    bits/dim = -value / (D ln 2)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def bits_per_dim(value: Tensor | float, dims: int) -> Tensor | float:
    return -value / (dims * math.log(2))


def free_bits_loss(log_px: Tensor, kl: list[Tensor], free_bits: float | Tensor) -> Tensor:
    """Training objective per image: -(log p(x|z) - sum_j max(KL_j, lambda_j)).

    KL_j is latent j's (single-sample) KL for each image; the floor applies per image and per
    latent group, as in the released code. free_bits: one lambda for all, or one per latent (N,).
    With free_bits = 0 this is -ELBO."""
    return -(log_px - floor_kl(torch.stack(kl, dim=1), free_bits).sum(1))


def floor_kl(kl: Tensor, free_bits: float | Tensor) -> Tensor:
    """max(KL_j, lambda_j) for (..., N) per-latent KLs: one floor, or one per latent (N,)."""
    if torch.is_tensor(free_bits) or free_bits > 0:
        return torch.maximum(kl, torch.as_tensor(free_bits, dtype=kl.dtype, device=kl.device))
    return kl


@torch.inference_mode()
def log_weights(model, x: Tensor, *, K: int, k: int = 0, chunk: int = 256,
                generator: torch.Generator | None = None, prior: str = "sample") -> Tensor:
    """K log importance weights of L^{>k} for each image: (B, K). At most `chunk` rows
    (images x copies) go through the model at once, so memory stays bounded for any K.
    prior="mode": z_{<=k} at the mean of p(z_{<=k} | z_{>k}) (`BIVA.forward`)."""
    b = x.shape[0]
    copies = max(1, chunk // b)
    out, left = [], K
    while left > 0:
        n = min(copies, left)
        rows = x.repeat_interleave(n, dim=0)                          # (B * n, C, H, W)
        out.append(model.log_weight(rows, k=k, generator=generator, prior=prior).float().view(b, n))
        left -= n
    return torch.cat(out, dim=1)


def iw_bound(log_w: Tensor) -> Tensor:
    """log mean exp over the last dimension: L_K from (..., K) log weights."""
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])
