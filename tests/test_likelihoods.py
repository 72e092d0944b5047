"""Densities: normalisation over every pixel value, agreement with torch.distributions and with
a float64 reference of the PixelCNN++ formula, and samplers that follow their densities."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from biva_core.model import likelihoods as lik

GRID = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1      # the 256 pixel values in [-1, 1]


def dmol_params(c: int, m: int, seed: int, spread: float = 2.0) -> torch.Tensor:
    """Random parameters of one pixel, (1, P, 1, 1); log-scales ~ N(0, spread^2)."""
    g = torch.Generator().manual_seed(seed)
    return spread * torch.randn(1, lik.dmol_channels(c, m), 1, 1, generator=g)


def extreme_rgb_params() -> torch.Tensor:
    """Two components at the edges of the parameter space: one far sharper than a bin
    (log-scale -9, below the -7 clamp), one far wider than the whole range (log-scale 4), means
    outside [-1, 1] and saturated autoregressive coefficients."""
    logits = [2.0, -1.0]
    means = [[0.3, 1.7], [-0.8, -2.5], [0.99, 0.0]]              # (C, M)
    log_scales = [[-9.0, 4.0], [-5.0, 1.0], [-7.0, -3.0]]
    coeffs = [[6.0, -6.0], [-10.0, 10.0], [0.5, 8.0]]
    flat = logits + sum(means, []) + sum(log_scales, []) + sum(coeffs, [])
    return torch.tensor(flat).view(1, -1, 1, 1)


# ---------------------------------------------------------------- discretized logistic mixture

@pytest.mark.parametrize("m", [1, 3, 10])
def test_dmol_grey_probabilities_sum_to_one(m: int) -> None:
    x = GRID.float().view(256, 1, 1, 1)
    for seed in range(20):
        spread = 1.0 if seed < 10 else 4.0                     # 4: scales from e^-12 (clamped) to e^12
        params = dmol_params(1, m, seed, spread).expand(256, -1, -1, -1)
        total = lik.dmol_log_prob(x, params, m).double().exp().sum()
        assert abs(total.item() - 1.0) < 1e-4, (seed, total.item())


@pytest.mark.parametrize("params", [dmol_params(3, 2, seed=7, spread=3.0), extreme_rgb_params()],
                         ids=["random", "extreme"])
def test_dmol_rgb_probabilities_sum_to_one(params: torch.Tensor) -> None:
    """All 256^3 colours of one pixel, in chunks of 2^18."""
    m = 2
    v = GRID.float()
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    combos = torch.stack([r, g, b], -1).reshape(-1, 3, 1, 1)    # (256^3, 3, 1, 1)
    total = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for chunk in combos.split(1 << 18):
            lp = lik.dmol_log_prob(chunk, params.expand(chunk.shape[0], -1, -1, -1), m)
            total += lp.double().exp().sum()
    assert abs(total.item() - 1.0) < 1e-4, total.item()


def _logistic_bin_mass(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """float64 P(bin of x) for a logistic, edges open at the ends of the grid."""
    inv_s = torch.exp(-log_scale.clamp(min=-7.0))
    upper = torch.where(x > 0.999, torch.ones_like(x), torch.sigmoid(inv_s * (x - mean + 1 / 255)))
    lower = torch.where(x < -0.999, torch.zeros_like(x), torch.sigmoid(inv_s * (x - mean - 1 / 255)))
    return upper - lower


def reference_dmol_log_prob(x: torch.Tensor, params: torch.Tensor, m: int) -> torch.Tensor:
    """The PixelCNN++ formula written out directly, float64, for 1x1 images: x (B, C, 1, 1)."""
    x, p = x.double()[:, :, 0, 0], params.double()[:, :, 0, 0]            # (B, C), (B, P)
    c = x.shape[1]
    pi = torch.softmax(p[:, :m], dim=1)
    means = p[:, m:m + c * m].view(-1, c, m)
    log_scales = p[:, m + c * m:m + 2 * c * m].view(-1, c, m)
    prob = pi.clone()
    for comp in range(m):
        mu = means[:, :, comp].clone()
        if c == 3:
            co = torch.tanh(p[:, m + 2 * c * m:].view(-1, 3, m)[:, :, comp])
            mu[:, 1] += co[:, 0] * x[:, 0]
            mu[:, 2] += co[:, 1] * x[:, 0] + co[:, 2] * x[:, 1]
        for ch in range(c):
            prob[:, comp] *= _logistic_bin_mass(x[:, ch], mu[:, ch], log_scales[:, ch, comp])
    return prob.sum(1).log()


@pytest.mark.parametrize("c,m", [(1, 1), (1, 4), (3, 1), (3, 3)])
def test_dmol_matches_float64_reference(c: int, m: int) -> None:
    g = torch.Generator().manual_seed(c * 10 + m)
    n = 512
    params = torch.randn(n, lik.dmol_channels(c, m), 1, 1, generator=g)
    x = GRID[torch.randint(0, 256, (n, c, 1, 1), generator=g)].float()
    x[:8] = GRID[0].float()                                                  # both open end bins
    x[8:16] = GRID[-1].float()
    got = lik.dmol_log_prob(x, params, m).double()
    want = reference_dmol_log_prob(x, params, m)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_dmol_log_prob_sums_over_pixels() -> None:
    """An image's log-probability is the sum of its pixels' log-probabilities."""
    g = torch.Generator().manual_seed(3)
    c, m = 3, 2
    params = torch.randn(2, lik.dmol_channels(c, m), 4, 5, generator=g)
    x = GRID[torch.randint(0, 256, (2, c, 4, 5), generator=g)].float()
    per_pixel = torch.stack([
        lik.dmol_log_prob(x[:, :, i:i + 1, j:j + 1], params[:, :, i:i + 1, j:j + 1], m)
        for i in range(4) for j in range(5)], dim=1).sum(1)
    torch.testing.assert_close(lik.dmol_log_prob(x, params, m), per_pixel, rtol=1e-6, atol=1e-4)


def test_dmol_grey_sampler_follows_the_probabilities() -> None:
    """Histogram of 2e5 draws (snapped to the grid) against exp(log_prob): total variation small."""
    m, n = 3, 200_000
    params = dmol_params(1, m, seed=11, spread=1.0)
    params[:, m + m:] = torch.tensor([-2.5, -3.0, -2.0]).view(1, 3, 1, 1)  # a few bins wide
    probs = lik.dmol_log_prob(GRID.float().view(256, 1, 1, 1), params.expand(256, -1, -1, -1), m).double().exp()
    g = torch.Generator().manual_seed(0)
    draws = lik.dmol_sample(params.expand(n, -1, -1, -1), 1, m, generator=g)
    idx = torch.round((draws.double().flatten() + 1) * 127.5).long()
    freq = torch.bincount(idx, minlength=256).double() / n
    tv = 0.5 * (freq - probs).abs().sum().item()
    # E[TV] of an exact sampler is about sum_v sqrt(p_v / (2 pi n)) < 0.02 here
    assert tv < 0.02, tv


def test_dmol_grey_mean_is_the_mixture_mean() -> None:
    """With narrow components well inside [-1, 1] the continuous mean equals sum_v v P(v)."""
    m = 3
    params = dmol_params(1, m, seed=5, spread=0.3)
    params[:, m + m:] = -4.0
    probs = lik.dmol_log_prob(GRID.float().view(256, 1, 1, 1), params.expand(256, -1, -1, -1), m).double().exp()
    want = (probs * GRID).sum()
    got = lik.dmol_mean(params, 1, m).double().flatten()[0]
    assert abs(got - want).item() < 2e-3


def test_dmol_seeded_sampling_is_reproducible() -> None:
    params = dmol_params(3, 4, seed=1).expand(64, -1, 2, 2).contiguous()
    a = lik.dmol_sample(params, 3, 4, torch.Generator().manual_seed(9))
    b = lik.dmol_sample(params, 3, 4, torch.Generator().manual_seed(9))
    c = lik.dmol_sample(params, 3, 4, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


# ---------------------------------------------------------------- Bernoulli

def test_bernoulli_probabilities_sum_to_one_and_match_torch() -> None:
    logits = torch.cat([torch.linspace(-60, 60, 241), torch.randn(15)]).view(256, 1, 1, 1)
    zeros, ones = torch.zeros_like(logits), torch.ones_like(logits)
    lp0 = lik.bernoulli_log_prob(zeros, logits).double()
    lp1 = lik.bernoulli_log_prob(ones, logits).double()
    torch.testing.assert_close(lp0.exp() + lp1.exp(), torch.ones(256, dtype=torch.float64), rtol=0, atol=1e-6)
    want = Bernoulli(logits=logits.double()).log_prob(ones.double()).flatten()
    torch.testing.assert_close(lp1, want, rtol=1e-5, atol=1e-5)


def test_bernoulli_image_log_prob_sums_pixels_and_sampler_frequency() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 4, 4, generator=g) * 3
    x = (torch.rand(3, 1, 4, 4, generator=g) < 0.5).float()
    want = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.bernoulli_log_prob(x, logits), want, rtol=1e-5, atol=1e-5)
    n = 40_000
    draws = lik.bernoulli_sample(logits[:1].expand(n, -1, -1, -1), torch.Generator().manual_seed(1))
    p = torch.sigmoid(logits[0])
    se = (p * (1 - p) / n).sqrt()
    assert ((draws.mean(0) - p).abs() <= 5 * se + 1e-6).all()
    torch.testing.assert_close(lik.bernoulli_mean(logits), torch.sigmoid(logits))


# ---------------------------------------------------------------- Gaussian latents

def _gaussians(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shape = (6, 4, 3, 3)
    scale = lambda: torch.exp(torch.empty(shape, dtype=torch.float64).uniform_(-7, 4, generator=g))  # noqa: E731
    q_mean, p_mean = (3 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    q_scale, p_scale = scale(), scale()
    z = q_mean + q_scale * torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype) for t in (z, q_mean, q_scale, p_mean, p_scale))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_gaussian_kl_matches_torch(dtype: torch.dtype, tol: float) -> None:
    _, q_mean, q_scale, p_mean, p_scale = _gaussians(0, dtype)
    got = lik.gaussian_kl(q_mean, q_scale, p_mean, p_scale)
    want = kl_divergence(Normal(q_mean.double(), q_scale.double()),
                         Normal(p_mean.double(), p_scale.double())).flatten(1).sum(1)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    same = lik.gaussian_kl(q_mean, q_scale, q_mean, q_scale)
    torch.testing.assert_close(same, torch.zeros_like(same), rtol=0, atol=tol * 100)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_gaussian_log_prob_matches_torch(dtype: torch.dtype, tol: float) -> None:
    z, q_mean, q_scale, _, _ = _gaussians(1, dtype)
    got = lik.gaussian_log_prob(z, q_mean, q_scale)
    want = Normal(q_mean.double(), q_scale.double()).log_prob(z.double()).flatten(1).sum(1)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_gaussian_kl_is_the_expected_log_ratio() -> None:
    """KL(q || p) = E_q[log q(z) - log p(z)]: the Monte Carlo mean of the sampled log ratio
    agrees with the analytic KL within 5 standard errors."""
    g = torch.Generator().manual_seed(2)
    q_mean, p_mean = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    q_scale, p_scale = torch.rand(1, 8, generator=g) + 0.3, torch.rand(1, 8, generator=g) + 0.3
    n = 50_000
    z = lik.gaussian_sample(q_mean.expand(n, -1), q_scale.expand(n, -1), generator=g)
    ratio = (lik.gaussian_log_prob(z, q_mean.expand(n, -1), q_scale.expand(n, -1))
             - lik.gaussian_log_prob(z, p_mean.expand(n, -1), p_scale.expand(n, -1))).double()
    kl = lik.gaussian_kl(q_mean, q_scale, p_mean, p_scale).double()
    assert abs(ratio.mean() - kl).item() < 5 * ratio.std().item() / math.sqrt(n)


def test_gaussian_sample_temperature_and_seed() -> None:
    mean, scale = torch.full((100_000,), 2.0), torch.full((100_000,), 3.0)
    assert torch.equal(lik.gaussian_sample(mean, scale, 0.0), mean)
    a = lik.gaussian_sample(mean, scale, 0.5, torch.Generator().manual_seed(4))
    b = lik.gaussian_sample(mean, scale, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    # std of a draw is temperature * scale = 1.5; the sample std's standard error is ~0.0034
    assert abs(a.std().item() - 1.5) < 0.02 and abs(a.mean().item() - 2.0) < 0.03
