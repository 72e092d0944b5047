"""What the studio and the evaluation need (spec section 3): functions of a BIVA model, which the
model also has as its methods (`model.sample(16)` is `operations.sample(model, 16)`).

Every entry point runs under inference mode with the model in eval mode (dropout off) and
puts the model back in its previous mode. Images come in and go out as float tensors
(B, C, H, W) in [0, 1] on the model's device. Seeds give the same images for the same call.

A model with classes (spec section 5) takes an optional `label` (one class, or one per row)
where a class is chosen: given, else the argmax of q(y | x) for an image, else drawn from p(y).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from biva_core.model import bounds
from biva_core.model.passes import Boundary


def _evaluating(fn):
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)
    return wrapper


@dataclass
class Scores:
    """Per image: L^{>0}, L^{>k} and LLR^{>k} for each requested k (nats), and bits/dim of L^{>0}."""
    l0: Tensor                       # (B,)
    lk: dict[int, Tensor]            # k -> (B,)
    llr: dict[int, Tensor]           # k -> (B,)
    bpd: Tensor                      # (B,)


def device(model) -> torch.device:
    return model.out_conv.weight.device


def generator(model, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=model.device).manual_seed(int(seed))


def choose_class(model, label: int | list[int] | Tensor | None, n: int, *, bu=None,
           generator: torch.Generator | None = None) -> Tensor | None:
    """The class of n rows: `label` (one for all, or n), else argmax q(y | x) of the bottom-up
    pass `bu`, else n draws from p(y). None for a model without classes."""
    C = model.config.classes
    if not C:
        if label is not None:
            raise ValueError("this model has no classes: label must be None")
        return None
    if label is not None:
        return model.check_labels(label, n)
    if bu is not None:
        return model.class_logits(bu).argmax(-1)
    return torch.randint(C, (n,), generator=generator, device=model.device)


@_evaluating
def classify(model, x: Tensor) -> Tensor:
    """q(y | x), (B, C), with the bottom-up pass at its posterior means."""
    h, _ = model.prepare(x.to(model.device))
    return model.class_logits(model.bottom_up(h, q_mean=True)).softmax(-1)


@_evaluating
def sample(model, n: int, *, temperature: float | list[float] = 1.0, seed: int | None = None,
           sample_pixels: bool = False, label: int | list[int] | None = None) -> Tensor:
    """n images with every z drawn from the prior (scales times `temperature`, one value or
    one per level bottom-up); the image is the mean of p(x | z) unless `sample_pixels`.
    With classes: of class `label` (one, or one per image), else y ~ p(y)."""
    g = generator(model, seed)
    y = choose_class(model, label, n, generator=g)
    td = model.top_down(None, k=model.config.L, temperature=temperature, batch=n, generator=g, y=y)
    return model.px_image(td.px, sample_pixels=sample_pixels, generator=g)


@_evaluating
def reconstruct(model, x: Tensor, *, label: int | list[int] | None = None) -> Tensor:
    """The mean of p(x | z) with every z at its posterior mean (and y = label, else the
    argmax of q(y | x))."""
    h, _ = model.prepare(x.to(model.device))
    bu = model.bottom_up(h, q_mean=True)
    td = model.top_down(bu, k=0, q_mean=True, y=choose_class(model, label, h.shape[0], bu=bu))
    return model.px_image(td.px)


@_evaluating
def boundary(model, x: Tensor, k: int, *, label: int | list[int] | None = None) -> "Boundary":
    """The top-down state above level k for x, with z_{>k} at the posterior means."""
    h, _ = model.prepare(x.to(model.device))
    bu = model.bottom_up(h, q_mean=True)
    if k >= model.config.L:
        return Boundary(model.config.L, None, None)
    y = choose_class(model, label, h.shape[0], bu=bu)
    return model.top_down(bu, k=k, q_mean=True, keep=k, y=y).boundary


@_evaluating
def resample(model, x: Tensor, k: int, n: int, *, temperature: float | list[float] = 1.0,
             seed: int | None = None, label: int | list[int] | None = None) -> Tensor:
    """Keep z_{>k} from q(. | x) (posterior means) and draw z_{<=k} from p(z_{<=k} | z_{>k})
    n times: (B, n, C, H, W). k = 0 reconstructs (every draw equal), k = L samples. The
    state above k is computed once; the n draws rerun only levels <= k. With classes the
    class is kept too: `label` (one, or one per image), else argmax q(y | x); at k = L,
    `label` or draws from p(y)."""
    L = model.config.L
    if not 0 <= k <= L:
        raise ValueError(f"k must be in 0..{L}, got {k}")
    b = x.shape[0]
    g = generator(model, seed)
    start, y = model.boundary(x, k, label=label), None
    if start.z is not None:
        rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)  # noqa: E731
        start = type(start)(start.k, rep(start.z), rep(start.d), rep(start.y))
    else:  # nothing kept: each image's label n times, or n draws from p(y) per image
        y = (choose_class(model, label, b).repeat_interleave(n) if label is not None
             else choose_class(model, None, b * n, generator=g))
    td = model.top_down(None, start=start, temperature=temperature, batch=b * n, generator=g, y=y)
    img = model.px_image(td.px)
    return img.view(b, n, *img.shape[1:])


@_evaluating
def mix(model, x_top: Tensor, x_bottom: Tensor, k: int) -> Tensor:
    """z_{>k} from image A and z_{<=k} from image B, every latent at its own image's posterior
    mean (`posterior_means`), decoded together; with classes, y is A's. k = 0 reconstructs A,
    k = L reconstructs B. (Inferring B's z_{<=k} from its bottom-up features under A's top-down
    state instead asks q for a pair it never saw in training: the face model answered with a
    lattice at its 16x16 levels, k = 4 and 5; experiments/mix_lattice.py measures both.)"""
    L = model.config.L
    if not 0 <= k <= L:
        raise ValueError(f"k must be in 0..{L}, got {k}")
    if k == 0:
        return model.reconstruct(x_top)
    if k == L:
        return model.reconstruct(x_bottom)
    za, zb = model.posterior_means(x_top), model.posterior_means(x_bottom)
    fixed = [b if model.latent_level(i) <= k else a for i, (a, b) in enumerate(zip(za, zb))]
    h, _ = model.prepare(x_top.to(model.device))
    y = choose_class(model, None, h.shape[0], bu=model.bottom_up(h, q_mean=True))
    return model.px_image(model.top_down(None, k=0, fixed=fixed, batch=h.shape[0], y=y).px)


@_evaluating
def interpolate(model, x_a: Tensor, x_b: Tensor, k: int, steps: int = 8, *,
                temperature: float | list[float] = 0.0, seed: int | None = None) -> Tensor:
    """Images between A and B (each (1, C, H, W)) at level k: every latent above k is the
    spherical interpolation of A's and B's posterior means (each latent as one vector per
    image; linear when the two are nearly parallel), t = 0 .. 1 in `steps` steps; the levels
    <= k are drawn from the prior given them at `temperature` (0: the prior means, so k = 0
    starts at reconstruct(A) and ends at reconstruct(B)). Returns (steps, C, H, W)."""
    L = model.config.L
    if not 0 <= k < L:
        raise ValueError(f"k must be in 0..{L - 1}, got {k}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    za, zb = model.posterior_means(x_a[:1]), model.posterior_means(x_b[:1])
    ts = torch.linspace(0, 1, steps, device=model.device)
    fixed = [torch.cat([slerp(a, b, float(t)) for t in ts]) for a, b in zip(za, zb)]
    y = None
    if model.config.classes:  # the classes of A and B (argmax q(y | x)) mixed linearly
        C = model.config.classes
        ya, yb = (torch.nn.functional.one_hot(model.classify(v[:1]).argmax(-1), C).float() for v in (x_a, x_b))
        y = (1 - ts[:, None]) * ya + ts[:, None] * yb                       # (steps, C)
    td = model.top_down(None, k=k, fixed=fixed, temperature=temperature, batch=steps,
                       generator=generator(model, seed), y=y)
    return model.px_image(td.px)


@_evaluating
def elbo(model, x: Tensor, *, seed: int | None = None) -> dict[str, Tensor]:
    """Single-sample ELBO L_1 per image (nats), log p(x|z), and each latent's KL: (B, N)."""
    log_px, kl = model(x.to(model.device), generator=generator(model, seed))
    kl = torch.stack(kl, dim=1)
    elbo = log_px - kl.sum(1)
    return {"elbo": elbo, "log_px": log_px, "kl": kl,
            "bpd": bounds.bits_per_dim(elbo, model.config.dims)}


@_evaluating
def iw_bound(model, x: Tensor, K: int, *, chunk: int = 256, seed: int | None = None) -> Tensor:
    """L_K per image (nats), computed in chunks."""
    w = bounds.log_weights(model, x.to(model.device), K=K, chunk=chunk, generator=generator(model, seed))
    return bounds.iw_bound(w)


@_evaluating
def scores(model, x: Tensor, ks: list[int], *, K: int = 1, chunk: int = 256,
           seed: int | None = None, prior: str = "sample") -> Scores:
    """L^{>0}, L^{>k} and LLR^{>k} = L^{>0} - L^{>k} for each k in ks, each importance
    weighted with K samples, and the bits/dim of L^{>0}. prior="mode" takes z_{<=k} of L^{>k}
    at the conditional prior's mean (`forward`); L^{>0} is the same either way."""
    x = x.to(model.device)
    g = generator(model, seed)
    bound = lambda k: bounds.iw_bound(bounds.log_weights(model, x, K=K, k=k, chunk=chunk, generator=g,  # noqa: E731
                                                         prior=prior))
    l0 = bound(0)
    lk = {int(k): (l0 if k == 0 else bound(k)) for k in ks}
    return Scores(l0, lk, {k: l0 - v for k, v in lk.items()}, bounds.bits_per_dim(l0, model.config.dims))


@_evaluating
def pixel_map(model, x: Tensor, k: int = 0, *, seed: int | None = None,
              prior: str = "sample") -> dict[str, Tensor]:
    """Where in the image the bound is spent, for one draw: z_{>k} from q(. | x), z_{<=k} from
    p(z_{<=k} | z_{>k}) (a draw, or its mean with prior="mode"; k = 0: every z from the posterior).

    "bits": -log2 p(x_ij | z) per pixel, (B, H, W) (the channels of a pixel together);
    "kl_bits": sum over the latents above k of log2 q(z | .) - log2 p(z | .), (B,).
    bits.sum((1, 2)) + kl_bits = -log2 of that draw's weight: -L_1 / ln 2 for k = 0 and the
    K = 1 estimate of -L^{>k} / ln 2 otherwise, the same numbers with the same seed."""
    L = model.config.L
    if not 0 <= k < L:
        raise ValueError(f"k must be in 0..{L - 1}, got {k}")
    log_px, kl = model(x.to(model.device), k=k, generator=generator(model, seed), per_pixel=True, prior=prior)
    ln2 = math.log(2)
    kl_sum = sum(t for t in kl if t is not None)
    return {"bits": -log_px / ln2, "kl_bits": kl_sum / ln2}


@_evaluating
def posterior_means(model, x: Tensor) -> list[Tensor]:
    """Each latent's posterior mean with every parent at its posterior mean: N x (B, ...)."""
    h, _ = model.prepare(x.to(model.device))
    bu = model.bottom_up(h, q_mean=True)
    td = model.top_down(bu, k=0, q_mean=True, y=choose_class(model, None, h.shape[0], bu=bu))
    return [q[0] for q in td.q]


def active_units(model, xs, *, threshold: float = 0.01) -> list[int]:
    """Per latent, how many units have Var_x[E_q[z]] > threshold over the batches in xs."""
    s1 = s2 = None
    count = 0
    for x in xs:
        means = [m.flatten(1).double() for m in model.posterior_means(x)]
        sums = [m.sum(0) for m in means]
        sq = [(m * m).sum(0) for m in means]
        s1 = sums if s1 is None else [a + b for a, b in zip(s1, sums)]
        s2 = sq if s2 is None else [a + b for a, b in zip(s2, sq)]
        count += means[0].shape[0]
    return [int(((b / count - (a / count) ** 2) > threshold).sum()) for a, b in zip(s1, s2)]


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation of a and b (each one image's latent, any shape) at t in [0, 1]."""
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = torch.dot(fa, fb) / (fa.norm() * fb.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < 1e-4:
        out = (1 - t) * fa + t * fb
    else:
        out = (torch.sin((1 - t) * omega) * fa + torch.sin(t * omega) * fb) / torch.sin(omega)
    return out.to(a.dtype).view_as(a)
