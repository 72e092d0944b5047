"""Building blocks: the residual blocks (gated, bottleneck), resolution changes, latent heads
and inputs.

Choices the spec leaves open (written down here):
- No weight normalisation. Each residual branch ends in a zero-initialised convolution, so a
  deep stack starts as the identity; this keeps a 20-level model stable from step 0 and costs
  nothing at run time (weight norm costs a reparameterisation per call).
- Scales of the Gaussians are softplus(raw + 0.5413) + 1e-3: 1 at initialisation, free to go
  below 1 (the released code's std >= 1 quirk is not copied).
- Precision under bf16 autocast (TrainConfig.amp): the convolutions and matrix products run in
  bf16 with float32 accumulation and hand float32 on (Conv2d, ConvTranspose2d, Linear below), so
  the elementwise work, the residual sums and the likelihoods stay float32; the layers that read
  pixels or write a distribution's parameters run wholly in float32 (in_float32). Measured on
  weights/celeba64, 512 test images: the bound moves by 0.0016 bits/dim; with every convolution
  in bf16 by 0.010, with plain autocast (bf16 between the convolutions too) by 0.011.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(SOFTPLUS_ONE) = 1


class _ELU(torch.autograd.Function):
    """elu(x) = x for x > 0, exp(x) - 1 otherwise, and its gradient 1, or exp(x) = elu(x) + 1.
    The same function as F.elu (within 6e-8: exp(x) - 1 rounds where expm1 does not), written
    with exp because this torch's CPU expm1 is not vectorized: F.elu took 17% of the face
    model's training step, and this runs 2-10x faster on its shapes (benchmarks/elu.py)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.exp(torch.clamp(x, max=0.0)).sub_(1.0).add_(torch.clamp(x, min=0.0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad * torch.clamp(y, max=0.0).add_(1.0)


def elu(x: Tensor) -> Tensor:
    """The model's nonlinearity (ELU with alpha = 1), fast on the CPU (_ELU)."""
    return _ELU.apply(x)


class Conv2d(nn.Conv2d):
    """nn.Conv2d with a float32 output (bf16 inside under autocast: see the module's notes)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).float()


class ConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        return super().forward(x, output_size).float()


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).float()


def in_float32(layer: nn.Module, x: Tensor) -> Tensor:
    """layer(x) wholly in float32, also under bf16 autocast: the stems, the Gaussian heads and the
    likelihood's convolution."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class ELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return elu(x)


class GatedBlock(nn.Module):
    """out = x + a * sigmoid(g),  [a, g] = conv(dropout(elu(conv(elu(x)) + conv1x1(elu(aux)))))."""

    def __init__(self, channels: int, *, aux_channels: int = 0, dropout: float = 0.0):
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1)
        self.aux = Conv2d(aux_channels, channels, 1) if aux_channels else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = Conv2d(channels, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, aux: Tensor | None = None) -> Tensor:
        h = self.conv1(elu(x))
        if self.aux is not None:
            h = h + self.aux(elu(aux))
        a, g = self.conv2(self.dropout(elu(h))).chunk(2, dim=1)
        return x + a * torch.sigmoid(g)

    @property
    def last(self) -> Conv2d:
        """The zero-initialised convolution that ends the residual branch."""
        return self.conv2


class BottleneckBlock(nn.Module):
    """The gated residual block through a bottleneck of channels / 4 (as in VDVAE):

        out = x + a * sigmoid(g),  [a, g] = conv1x1(e(conv3x3(e(conv3x3(e(conv1x1(e(x)) + conv1x1(e(aux))))))))

    with e = elu (dropout before the last convolution). Its 3x3 convolutions run at a quarter of
    the width: ~1.9 c^2 multiply-adds per pixel against the gated block's 27 c^2."""

    def __init__(self, channels: int, *, aux_channels: int = 0, dropout: float = 0.0):
        super().__init__()
        mid = max(1, channels // 4)
        self.conv1 = Conv2d(channels, mid, 1)
        self.aux = Conv2d(aux_channels, mid, 1) if aux_channels else None
        self.conv2 = Conv2d(mid, mid, 3, padding=1)
        self.conv3 = Conv2d(mid, mid, 3, padding=1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv4 = Conv2d(mid, 2 * channels, 1)
        nn.init.zeros_(self.conv4.weight)
        nn.init.zeros_(self.conv4.bias)

    def forward(self, x: Tensor, aux: Tensor | None = None) -> Tensor:
        h = self.conv1(elu(x))
        if self.aux is not None:
            h = h + self.aux(elu(aux))
        h = self.conv3(elu(self.conv2(elu(h))))
        a, g = self.conv4(self.dropout(elu(h))).chunk(2, dim=1)
        return x + a * torch.sigmoid(g)

    @property
    def last(self) -> Conv2d:
        return self.conv4


BLOCKS = {"gated": GatedBlock, "bottleneck": BottleneckBlock}


class Stack(nn.Module):
    """`n` residual blocks of one kind (`BLOCKS`) that all read the same auxiliary input."""

    def __init__(self, n: int, channels: int, *, aux_channels: int = 0, dropout: float = 0.0, block: str = "gated"):
        super().__init__()
        self.blocks = nn.ModuleList(
            BLOCKS[block](channels, aux_channels=aux_channels, dropout=dropout) for _ in range(n))

    def forward(self, x: Tensor, aux: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, aux)
        return x


def down(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Bring features to the next level up: 3x3 conv with the level's stride (or 1x1)."""
    if stride == 2:
        return Conv2d(c_in, c_out, 3, stride=2, padding=1)
    return Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()


def up(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Bring features to the next level down: transposed 4x4 conv for stride 2 (or 1x1)."""
    if stride == 2:
        return ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    return Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()


class GaussianHead(nn.Module):
    """Features (B, C, H, W) -> `count` diagonal Gaussians over a latent of `latent` channels at
    (H, W), or a dense vector of `latent` features. Returns [(mean, scale), ...] in float32."""

    def __init__(self, channels: int, latent: int, hw: tuple[int, int], *, dense: bool, count: int = 1):
        super().__init__()
        self.count, self.dense = count, dense
        if dense:
            self.proj = Linear(channels * hw[0] * hw[1], 2 * count * latent)
        else:
            self.proj = Conv2d(channels, 2 * count * latent, 3, padding=1)
        # start near N(0, 1): small means, scales ~ 1
        with torch.no_grad():
            self.proj.weight.mul_(0.1)
            self.proj.bias.zero_()

    def forward(self, h: Tensor) -> list[tuple[Tensor, Tensor]]:
        h = elu(h)
        out = in_float32(self.proj, h.flatten(1) if self.dense else h)
        out = out.chunk(2 * self.count, dim=1)
        return [(out[2 * j], F.softplus(out[2 * j + 1] + SOFTPLUS_ONE) + 1e-3) for j in range(self.count)]


class LatentIn(nn.Module):
    """A latent (dense vector or map) -> features (B, channels, H, W) at its own level."""

    def __init__(self, latent: int, channels: int, hw: tuple[int, int], *, dense: bool):
        super().__init__()
        self.hw, self.dense, self.channels = hw, dense, channels
        if dense:
            self.proj = Linear(latent, channels * hw[0] * hw[1])
        else:
            self.proj = Conv2d(latent, channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if self.dense:
            return self.proj(z).view(z.shape[0], self.channels, *self.hw)
        return self.proj(z)
