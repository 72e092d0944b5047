"""What the studio and the evaluation need (spec section 3), as methods of the model.

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
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return fn(self, *args, **kwargs)
        finally:
            self.train(was_training)
    return wrapper


@dataclass
class Scores:
    """Per image: L^{>0}, L^{>k} and LLR^{>k} for each requested k (nats), and bits/dim of L^{>0}."""
    l0: Tensor                       # (B,)
    lk: dict[int, Tensor]            # k -> (B,)
    llr: dict[int, Tensor]           # k -> (B,)
    bpd: Tensor                      # (B,)


class Operations:
    """Mixed into `BIVA`; relies on its `bottom_up`, `top_down`, `prepare` and `px_image`."""

    @property
    def device(self) -> torch.device:
        return self.out_conv.weight.device

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def _class(self, label: int | list[int] | Tensor | None, n: int, *, bu=None,
               generator: torch.Generator | None = None) -> Tensor | None:
        """The class of n rows: `label` (one for all, or n), else argmax q(y | x) of the bottom-up
        pass `bu`, else n draws from p(y). None for a model without classes."""
        C = self.config.classes
        if not C:
            if label is not None:
                raise ValueError("this model has no classes: label must be None")
            return None
        if label is not None:
            return self.check_labels(label, n)
        if bu is not None:
            return self.class_logits(bu).argmax(-1)
        return torch.randint(C, (n,), generator=generator, device=self.device)

    @_evaluating
    def classify(self, x: Tensor) -> Tensor:
        """q(y | x), (B, C), with the bottom-up pass at its posterior means."""
        h, _ = self.prepare(x.to(self.device))
        return self.class_logits(self.bottom_up(h, q_mean=True)).softmax(-1)

    @_evaluating
    def sample(self, n: int, *, temperature: float | list[float] = 1.0, seed: int | None = None,
               sample_pixels: bool = False, label: int | list[int] | None = None) -> Tensor:
        """n images with every z drawn from the prior (scales times `temperature`, one value or
        one per level bottom-up); the image is the mean of p(x | z) unless `sample_pixels`.
        With classes: of class `label` (one, or one per image), else y ~ p(y)."""
        g = self._generator(seed)
        y = self._class(label, n, generator=g)
        td = self.top_down(None, k=self.config.L, temperature=temperature, batch=n, generator=g, y=y)
        return self.px_image(td.px, sample_pixels=sample_pixels, generator=g)

    @_evaluating
    def reconstruct(self, x: Tensor, *, label: int | list[int] | None = None) -> Tensor:
        """The mean of p(x | z) with every z at its posterior mean (and y = label, else the
        argmax of q(y | x))."""
        h, _ = self.prepare(x.to(self.device))
        bu = self.bottom_up(h, q_mean=True)
        td = self.top_down(bu, k=0, q_mean=True, y=self._class(label, h.shape[0], bu=bu))
        return self.px_image(td.px)

    @_evaluating
    def boundary(self, x: Tensor, k: int, *, label: int | list[int] | None = None) -> "Boundary":
        """The top-down state above level k for x, with z_{>k} at the posterior means."""
        h, _ = self.prepare(x.to(self.device))
        bu = self.bottom_up(h, q_mean=True)
        if k >= self.config.L:
            return Boundary(self.config.L, None, None)
        y = self._class(label, h.shape[0], bu=bu)
        return self.top_down(bu, k=k, q_mean=True, keep=k, y=y).boundary

    @_evaluating
    def resample(self, x: Tensor, k: int, n: int, *, temperature: float | list[float] = 1.0,
                 seed: int | None = None, label: int | list[int] | None = None) -> Tensor:
        """Keep z_{>k} from q(. | x) (posterior means) and draw z_{<=k} from p(z_{<=k} | z_{>k})
        n times: (B, n, C, H, W). k = 0 reconstructs (every draw equal), k = L samples. The
        state above k is computed once; the n draws rerun only levels <= k. With classes the
        class is kept too: `label` (one, or one per image), else argmax q(y | x); at k = L,
        `label` or draws from p(y)."""
        L = self.config.L
        if not 0 <= k <= L:
            raise ValueError(f"k must be in 0..{L}, got {k}")
        b = x.shape[0]
        g = self._generator(seed)
        start, y = self.boundary(x, k, label=label), None
        if start.z is not None:
            rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)  # noqa: E731
            start = type(start)(start.k, rep(start.z), rep(start.d), rep(start.y))
        else:  # nothing kept: each image's label n times, or n draws from p(y) per image
            y = (self._class(label, b).repeat_interleave(n) if label is not None
                 else self._class(None, b * n, generator=g))
        td = self.top_down(None, start=start, temperature=temperature, batch=b * n, generator=g, y=y)
        img = self.px_image(td.px)
        return img.view(b, n, *img.shape[1:])

    @_evaluating
    def mix(self, x_top: Tensor, x_bottom: Tensor, k: int) -> Tensor:
        """z_{>k} from image A and z_{<=k} from image B, every latent at its own image's posterior
        mean (`posterior_means`), decoded together; with classes, y is A's. k = 0 reconstructs A,
        k = L reconstructs B. (Inferring B's z_{<=k} from its bottom-up features under A's top-down
        state instead asks q for a pair it never saw in training: the face model answered with a
        lattice at its 16x16 levels, k = 4 and 5; experiments/mix_lattice.py measures both.)"""
        L = self.config.L
        if not 0 <= k <= L:
            raise ValueError(f"k must be in 0..{L}, got {k}")
        if k == 0:
            return self.reconstruct(x_top)
        if k == L:
            return self.reconstruct(x_bottom)
        za, zb = self.posterior_means(x_top), self.posterior_means(x_bottom)
        fixed = [b if self.latent_level(i) <= k else a for i, (a, b) in enumerate(zip(za, zb))]
        h, _ = self.prepare(x_top.to(self.device))
        y = self._class(None, h.shape[0], bu=self.bottom_up(h, q_mean=True))
        return self.px_image(self.top_down(None, k=0, fixed=fixed, batch=h.shape[0], y=y).px)

    @_evaluating
    def interpolate(self, x_a: Tensor, x_b: Tensor, k: int, steps: int = 8, *,
                    temperature: float | list[float] = 0.0, seed: int | None = None) -> Tensor:
        """Images between A and B (each (1, C, H, W)) at level k: every latent above k is the
        spherical interpolation of A's and B's posterior means (each latent as one vector per
        image; linear when the two are nearly parallel), t = 0 .. 1 in `steps` steps; the levels
        <= k are drawn from the prior given them at `temperature` (0: the prior means, so k = 0
        starts at reconstruct(A) and ends at reconstruct(B)). Returns (steps, C, H, W)."""
        L = self.config.L
        if not 0 <= k < L:
            raise ValueError(f"k must be in 0..{L - 1}, got {k}")
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        za, zb = self.posterior_means(x_a[:1]), self.posterior_means(x_b[:1])
        ts = torch.linspace(0, 1, steps, device=self.device)
        fixed = [torch.cat([slerp(a, b, float(t)) for t in ts]) for a, b in zip(za, zb)]
        y = None
        if self.config.classes:  # the classes of A and B (argmax q(y | x)) mixed linearly
            C = self.config.classes
            ya, yb = (torch.nn.functional.one_hot(self.classify(v[:1]).argmax(-1), C).float() for v in (x_a, x_b))
            y = (1 - ts[:, None]) * ya + ts[:, None] * yb                       # (steps, C)
        td = self.top_down(None, k=k, fixed=fixed, temperature=temperature, batch=steps,
                           generator=self._generator(seed), y=y)
        return self.px_image(td.px)

    @_evaluating
    def elbo(self, x: Tensor, *, seed: int | None = None) -> dict[str, Tensor]:
        """Single-sample ELBO L_1 per image (nats), log p(x|z), and each latent's KL: (B, N)."""
        log_px, kl = self(x.to(self.device), generator=self._generator(seed))
        kl = torch.stack(kl, dim=1)
        elbo = log_px - kl.sum(1)
        return {"elbo": elbo, "log_px": log_px, "kl": kl,
                "bpd": bounds.bits_per_dim(elbo, self.config.dims)}

    @_evaluating
    def iw_bound(self, x: Tensor, K: int, *, chunk: int = 256, seed: int | None = None) -> Tensor:
        """L_K per image (nats), computed in chunks."""
        w = bounds.log_weights(self, x.to(self.device), K=K, chunk=chunk, generator=self._generator(seed))
        return bounds.iw_bound(w)

    @_evaluating
    def scores(self, x: Tensor, ks: list[int], *, K: int = 1, chunk: int = 256,
               seed: int | None = None, prior: str = "sample") -> Scores:
        """L^{>0}, L^{>k} and LLR^{>k} = L^{>0} - L^{>k} for each k in ks, each importance
        weighted with K samples, and the bits/dim of L^{>0}. prior="mode" takes z_{<=k} of L^{>k}
        at the conditional prior's mean (`forward`); L^{>0} is the same either way."""
        x = x.to(self.device)
        g = self._generator(seed)
        bound = lambda k: bounds.iw_bound(bounds.log_weights(self, x, K=K, k=k, chunk=chunk, generator=g,  # noqa: E731
                                                             prior=prior))
        l0 = bound(0)
        lk = {int(k): (l0 if k == 0 else bound(k)) for k in ks}
        return Scores(l0, lk, {k: l0 - v for k, v in lk.items()}, bounds.bits_per_dim(l0, self.config.dims))

    @_evaluating
    def pixel_map(self, x: Tensor, k: int = 0, *, seed: int | None = None,
                  prior: str = "sample") -> dict[str, Tensor]:
        """Where in the image the bound is spent, for one draw: z_{>k} from q(. | x), z_{<=k} from
        p(z_{<=k} | z_{>k}) (a draw, or its mean with prior="mode"; k = 0: every z from the posterior).

        "bits": -log2 p(x_ij | z) per pixel, (B, H, W) (the channels of a pixel together);
        "kl_bits": sum over the latents above k of log2 q(z | .) - log2 p(z | .), (B,).
        bits.sum((1, 2)) + kl_bits = -log2 of that draw's weight: -L_1 / ln 2 for k = 0 and the
        K = 1 estimate of -L^{>k} / ln 2 otherwise, the same numbers with the same seed."""
        L = self.config.L
        if not 0 <= k < L:
            raise ValueError(f"k must be in 0..{L - 1}, got {k}")
        log_px, kl = self(x.to(self.device), k=k, generator=self._generator(seed), per_pixel=True, prior=prior)
        ln2 = math.log(2)
        kl_sum = sum(t for t in kl if t is not None)
        return {"bits": -log_px / ln2, "kl_bits": kl_sum / ln2}

    @_evaluating
    def posterior_means(self, x: Tensor) -> list[Tensor]:
        """Each latent's posterior mean with every parent at its posterior mean: N x (B, ...)."""
        h, _ = self.prepare(x.to(self.device))
        bu = self.bottom_up(h, q_mean=True)
        td = self.top_down(bu, k=0, q_mean=True, y=self._class(None, h.shape[0], bu=bu))
        return [q[0] for q in td.q]

    def active_units(self, xs, *, threshold: float = 0.01) -> list[int]:
        """Per latent, how many units have Var_x[E_q[z]] > threshold over the batches in xs."""
        s1 = s2 = None
        count = 0
        for x in xs:
            means = [m.flatten(1).double() for m in self.posterior_means(x)]
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
