"""BIVA (Maaloe et al. 2019): a deep hierarchy of latents with bidirectional inference.

Levels are numbered i = 1..L from the pixels up; in code `j = i - 1` indexes the lists.
Latents are indexed bottom-up as well: for BIVA, latent 2j is z_i^BU, 2j + 1 is z_i^TD, and
the last one (2L - 2) is z_L; for the LVAE ablations latent j is z_i.

With `classes` C > 0 (spec section 5) a class y joins at the top: the top-down path starts from
[z_L, y], p(y) = 1/C, and q(y | x) reads the top level's bottom-up features. The bound then has
one more term after the latents' KLs, log q(y | x) - log p(y) (log C for a given label).

    p(x, z) = p(x | z) p(z_L) prod_{i<L} p(z_i^BU | z_{>i}) p(z_i^TD | z_{>i})
    q(z | x) = q(z_L | x, z^BU_{<L}) prod_{i<L} q(z_i^BU | x, z^BU_{<i}) q(z_i^TD | x, z^BU_{<i}, z_{>i})

One top-down pass (`top_down`) serves everything: the levels above k take z from the posterior,
the levels at and below k from the conditional prior. k = 0 is the ELBO / reconstruction, k = L
is an unconditional sample, and 0 < k < L gives L^{>k} and hierarchical resampling. The pass can
start from a cached `Boundary` so that n draws below k rerun only the levels <= k.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from biva_core.model import likelihoods as lik
from biva_core.model import operations as ops
from biva_core.model.bounds import floor_kl
from biva_core.model.config import ModelConfig
from biva_core.model.layers import (BLOCKS, ELU, Conv2d, GaussianHead, LatentIn, Linear, Stack, down, elu,
                                    in_float32, up)
from biva_core.model.passes import PRIORS, Boundary, BottomUp, TopDown


class BIVA(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        self.biva = cfg.variant == "biva"
        self.skip = cfg.variant in ("biva", "lvae+")
        c_img = cfg.image_shape[0]
        lv, hw = cfg.levels, cfg.resolutions()
        L = cfg.L
        ch = [l.channels for l in lv]
        # width of the z that level j passes down: [z_TD, z_BU] for BIVA below the top
        z_down = [lv[j].latent * (2 if self.biva and j < L - 1 else 1) for j in range(L)]

        # ---- bottom-up (inference) streams
        self.bu_stem = Conv2d(c_img, ch[0], 3, stride=lv[0].stride, padding=1)
        self.bu_down = nn.ModuleList([nn.Identity()] + [down(ch[j - 1], ch[j], lv[j].stride) for j in range(1, L)])
        self.bu_stacks = nn.ModuleList(
            Stack(lv[j].blocks, ch[j], aux_channels=ch[j] if self.biva and j > 0 else 0, dropout=cfg.dropout_q,
                  block=cfg.block)
            for j in range(L))
        if self.biva:
            self.bu_zin = nn.ModuleList([nn.Identity()] + [
                LatentIn(lv[j - 1].latent, ch[j - 1], hw[j - 1], dense=lv[j - 1].dense) for j in range(1, L)])
            self.bu_skip = nn.ModuleList([nn.Identity()] + [
                down(2 * ch[j - 1], ch[j], lv[j].stride) for j in range(1, L)])
            self.q_bu_heads = nn.ModuleList(
                GaussianHead(ch[j], lv[j].latent, hw[j], dense=lv[j].dense) for j in range(L - 1))
            self.td_stem = Conv2d(c_img, ch[0], 3, stride=lv[0].stride, padding=1)
            self.td_down = nn.ModuleList([nn.Identity()] + [down(ch[j - 1], ch[j], lv[j].stride) for j in range(1, L)])
            self.td_stacks = nn.ModuleList(
                Stack(lv[j].blocks, ch[j], aux_channels=ch[j], dropout=cfg.dropout_q, block=cfg.block)
                for j in range(L))
        top_in = 2 * ch[-1] if self.biva else ch[-1]
        self.q_top_head = GaussianHead(top_in, lv[-1].latent, hw[-1], dense=lv[-1].dense)
        if cfg.classes:  # q(y | x): the top features, flattened, through a small MLP
            self.classifier = nn.Sequential(ELU(), nn.Flatten(), Linear(top_in * hw[-1][0] * hw[-1][1], 128),
                                            ELU(), Linear(128, cfg.classes))

        # ---- top-down (generative) path, shared by inference; gen_*[j] computes d_{j+1}
        # the top-down path starts from [z_L, y] when there is a class
        self.gen_zin = nn.ModuleList(
            LatentIn(z_down[j + 1] + (cfg.classes if j + 1 == L - 1 else 0), ch[j + 1], hw[j + 1],
                     dense=lv[j + 1].dense)
            for j in range(L - 1))
        self.gen_up_z = nn.ModuleList(up(ch[j + 1], ch[j], lv[j + 1].stride) for j in range(L - 1))
        self.gen_up_d = nn.ModuleList(
            up(ch[j + 1], ch[j], lv[j + 1].stride) if self.skip and j < L - 2 else nn.Identity()
            for j in range(L - 1))
        self.gen_stacks = nn.ModuleList(
            Stack(lv[j].blocks, ch[j], aux_channels=ch[j] if self.skip and j < L - 2 else 0, dropout=cfg.dropout_p,
                  block=cfg.block)
            for j in range(L - 1))
        n_pairs = 2 if self.biva else 1
        self.p_heads = nn.ModuleList(
            GaussianHead(ch[j], lv[j].latent, hw[j], dense=lv[j].dense, count=n_pairs) for j in range(L - 1))
        self.q_merge = nn.ModuleList(BLOCKS[cfg.block](ch[j], aux_channels=ch[j]) for j in range(L - 1))
        self.q_td_heads = nn.ModuleList(
            GaussianHead(ch[j], lv[j].latent, hw[j], dense=lv[j].dense) for j in range(L - 1))

        # ---- p(x | z): reads z_1 and d_1 at level 1's resolution
        self.out_zin = LatentIn(z_down[0], ch[0], hw[0], dense=lv[0].dense)
        self.out_stack = Stack(lv[0].blocks, ch[0], aux_channels=ch[0] if self.skip else 0, dropout=cfg.dropout_p,
                               block=cfg.block)
        self.out_up = up(ch[0], ch[0], lv[0].stride)
        p_channels = 1 if cfg.likelihood == "bernoulli" else lik.dmol_channels(c_img, cfg.mixtures)
        self.out_conv = Conv2d(ch[0], p_channels, 3, padding=1)

    # ------------------------------------------------------------------ data <-> model

    def prepare(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [0, 1], (B, C, H, W) -> (network input in [-1, 1], likelihood target).

        Bernoulli targets are x itself (expected in {0, 1}); 8-bit targets are snapped to the
        256-value grid in [-1, 1].
        """
        if self.config.likelihood == "bernoulli":
            return 2 * x - 1, x
        x = torch.round(x.clamp(0, 1) * 255) / 127.5 - 1
        return x, x

    def log_px(self, target: Tensor, px: Tensor, per_pixel: bool = False) -> Tensor:
        """log p(x | z) per image (B,), or per pixel (B, H, W) with `per_pixel`."""
        if self.config.likelihood == "bernoulli":
            return lik.bernoulli_log_prob(target, px, per_pixel)
        return lik.dmol_log_prob(target, px, self.config.mixtures, per_pixel)

    def px_image(self, px: Tensor, *, sample_pixels: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Parameters of p(x | z) -> image in [0, 1]: the mean, or a draw of the pixels."""
        c, m = self.config.image_shape[0], self.config.mixtures
        if self.config.likelihood == "bernoulli":
            return lik.bernoulli_sample(px, generator) if sample_pixels else lik.bernoulli_mean(px)
        x = lik.dmol_sample(px, c, m, generator) if sample_pixels else lik.dmol_mean(px, c, m)
        return (torch.round((x + 1) * 127.5) / 255).clamp(0, 1)

    # ------------------------------------------------------------------ inference pass

    def bottom_up(self, h: Tensor, *, mean_below: int = 0, q_mean: bool = False,
                  generator: torch.Generator | None = None) -> BottomUp:
        """Both deterministic streams climb from x; the BU stream is stochastic: level i emits
        q(z_i^BU | x, z^BU_{<i}) and the next level reads the sampled z_i^BU.

        mean_below: levels i <= mean_below pass the posterior mean of z_i^BU upwards (Havtorn
            2021, for a well-defined q(z_{>k} | x)); q_mean: every level does.
        """
        L = self.config.L
        z_bu, log_q_bu, q_bu, feats = [None] * (L - 1), [None] * (L - 1), [None] * (L - 1), []
        if not self.biva:
            b = in_float32(self.bu_stem, h)
            for j in range(L):
                b = self.bu_stacks[j](self.bu_down[j](b))
                feats.append(b)
            return BottomUp(z_bu, log_q_bu, q_bu, feats[:-1], self.q_top_head(feats[-1])[0], feats[-1])
        b, t = in_float32(self.bu_stem, h), in_float32(self.td_stem, h)
        for j in range(L):
            if j > 0:
                aux = self.bu_skip[j](torch.cat([b, t], dim=1))        # skip: BU + TD-inf features
                b = self.bu_stacks[j](self.bu_down[j](self.bu_zin[j](z)), aux)
                t = self.td_stacks[j](self.td_down[j](t), b)
            else:
                b = self.bu_stacks[0](b)
                t = self.td_stacks[0](t, b)
            if j < L - 1:
                mean, scale = q_bu[j] = self.q_bu_heads[j](b)[0]
                use_mean = q_mean or j + 1 <= mean_below
                z = mean if use_mean else lik.gaussian_sample(mean, scale, generator=generator)
                z_bu[j], log_q_bu[j] = z, lik.gaussian_log_prob(z, mean, scale)
                feats.append(t)
        top = torch.cat([b, t], dim=1)
        return BottomUp(z_bu, log_q_bu, q_bu, feats, self.q_top_head(top)[0], top)

    def class_logits(self, bu: BottomUp) -> Tensor:
        """Logits of q(y | x), (B, C), from the top level's bottom-up features."""
        assert self.config.classes, "this model has no class variable (classes = 0)"
        return self.classifier(bu.top).float()

    def with_class(self, z: Tensor, y: Tensor | None) -> Tensor:
        """[z_L, y]: the top latent with the class appended as channels (broadcast over a map).
        y: labels (B,) or class weights (B, C) (a mix of one-hots, for interpolation)."""
        C = self.config.classes
        if y is None:
            raise ValueError(f"this model has a class variable ({C} classes): pass y")
        y = F.one_hot(y.long(), C) if y.dim() == 1 else y
        if y.shape != (z.shape[0], C):
            raise ValueError(f"y must be {z.shape[0]} labels or ({z.shape[0]}, {C}) class weights, got {tuple(y.shape)}")
        y = y.to(z.dtype)
        if z.dim() == 4:
            y = y[:, :, None, None].expand(-1, -1, *z.shape[2:])
        return torch.cat([z, y], dim=1)

    # ------------------------------------------------------------------ the top-down pass

    def top_down(self, bu: BottomUp | None, *, k: int = 0, temperature: float | list[float] = 1.0,
                 q_mean: bool = False, start: Boundary | None = None, keep: int | None = None,
                 batch: int = 1, generator: torch.Generator | None = None,
                 fixed: list[Tensor] | None = None, y: Tensor | None = None, tie: int = 1) -> TopDown:
        """Generate from z_L down to x. Levels i > k take z from q (`bu` needed), levels i <= k
        from p(z_i | z_{>i}) with their prior scales multiplied by `temperature` (one value, or
        one per level, bottom-up). `start` resumes at a cached boundary (then k = start.k);
        `keep` returns the boundary above level `keep`. `batch` sizes prior draws without `bu`.
        fixed: one tensor per latent (bottom-up order) used as z for the levels above k instead of a
        posterior draw (interpolation); then `bu` is not needed and log_q stays None there.
        y: the class of each row (labels (B,) or weights (B, C)), for a model with classes; it
        joins z_L where the path starts from the top.
        tie: each run of `tie` consecutive rows shares its noise (common random numbers: one image
        under every class differs by the class, not by the draw; B must be a multiple of tie).
        """
        cfg, L = self.config, self.config.L
        draw = lambda mean, scale, t=1.0: lik.gaussian_sample(mean, scale, t, generator, tie=tie)  # noqa: E731
        temps = [float(temperature)] * L if isinstance(temperature, (int, float)) else [float(t) for t in temperature]
        if len(temps) != L:
            raise ValueError(f"expected 1 or {L} temperatures (one per level), got {len(temps)}")
        n = cfg.n_latents
        log_q, log_p, zs, qs = [None] * n, [None] * n, [None] * n, [None] * n
        boundary = None
        if start is not None and start.k < L:
            k, z, d, first = start.k, start.z, start.d, start.k
            y = start.y if y is None else y
        else:
            if start is not None:
                k = L
            assert k >= L or bu is not None or fixed is not None, "levels above k come from q: pass the bottom-up pass"
            if k < L and fixed is not None:
                z = fixed[-1]
            elif k < L:
                mean, scale = qs[-1] = bu.q_top
                z = mean if q_mean else draw(mean, scale)
                log_q[-1] = lik.gaussian_log_prob(z, mean, scale)
            else:
                shape = (batch, cfg.levels[-1].latent) + (() if cfg.levels[-1].dense else cfg.resolutions()[-1])
                dev = self.out_conv.weight.device
                mean = torch.zeros(shape, device=dev)                      # p(z_L) = N(0, I)
                z = draw(mean, torch.ones_like(mean), temps[-1])
            log_p[-1] = lik.gaussian_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
            zs[-1], d, first = z, None, L - 1
            if keep == L - 1:
                boundary = Boundary(L - 1, z, d, y)
        for j in range(first - 1, -1, -1):
            zin = self.with_class(z, y) if self.config.classes and j + 1 == L - 1 else z  # [z_L, y]
            a = self.gen_up_z[j](self.gen_zin[j](zin))
            d = self.gen_stacks[j](a, self.gen_up_d[j](d) if d is not None and self.skip else None)
            priors = self.p_heads[j](d)
            from_q = j + 1 > k
            given = fixed is not None and j + 1 > k
            if from_q and not given:
                qs_td = self.q_td_heads[j](self.q_merge[j](d, bu.feats[j]))[0]
            if self.biva:
                (pb_mean, pb_scale), (pt_mean, pt_scale) = priors
                ib, it = 2 * j, 2 * j + 1
                if given:
                    z_bu, z_td = fixed[ib], fixed[it]
                elif from_q:
                    z_bu, log_q[ib], qs[ib] = bu.z_bu[j], bu.log_q_bu[j], bu.q_bu[j]
                    z_td = qs_td[0] if q_mean else draw(*qs_td)
                    log_q[it], qs[it] = lik.gaussian_log_prob(z_td, *qs_td), qs_td
                else:  # a level is resampled as a pair: z^BU is redrawn from p as well
                    z_bu = draw(pb_mean, pb_scale, temps[j])
                    z_td = draw(pt_mean, pt_scale, temps[j])
                log_p[ib] = lik.gaussian_log_prob(z_bu, pb_mean, pb_scale)
                log_p[it] = lik.gaussian_log_prob(z_td, pt_mean, pt_scale)
                zs[ib], zs[it] = z_bu, z_td
                z = torch.cat([z_td, z_bu], dim=1)
            else:
                p_mean, p_scale = priors[0]
                if given:
                    z = fixed[j]
                elif from_q:
                    z = qs_td[0] if q_mean else draw(*qs_td)
                    log_q[j], qs[j] = lik.gaussian_log_prob(z, *qs_td), qs_td
                else:
                    z = draw(p_mean, p_scale, temps[j])
                log_p[j], zs[j] = lik.gaussian_log_prob(z, p_mean, p_scale), z
            if keep == j:
                boundary = Boundary(j, z, d, y)
        h = self.out_stack(self.out_zin(z), d if self.skip else None)
        px = in_float32(self.out_conv, elu(self.out_up(h)))
        return TopDown(px, log_q, log_p, zs, qs, boundary)

    # ------------------------------------------------------------------ the bound

    def forward(self, x: Tensor, *, k: int = 0, generator: torch.Generator | None = None,
                per_pixel: bool = False, y: Tensor | None = None,
                prior: str = "sample") -> tuple[Tensor, list[Tensor | None]]:
        """One posterior sample per image: (log p(x | z), [log q - log p per latent]); with
        per_pixel, log p(x | z) is (B, H, W), one value per pixel (its channels together).

        For k = 0 the second list holds a single-sample estimate of every latent's KL and
        log p(x | z) - sum(kl) is the ELBO L_1. For k > 0, z_{<=k} comes from the prior, the
        terms of latents at levels <= k are None, and the same expression is L^{>k}'s weight.
        With classes the list ends with the class's term (`class_term`): y given (labels (B,)),
        or drawn from q(y | x), so that the same expression bounds log p(x) (or log p(x, y)).

        prior="mode" takes z_{<=k} at the mean of p(z_{<=k} | z_{>k}) instead of a draw (as
        Havtorn 2021's released code scores L^{>k}): the weight then no longer bounds log p(x),
        but it spends none of its variance on the levels below k (spec section 6, the detector).
        """
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        h, target = self.prepare(x)
        bu = self.bottom_up(h, mean_below=k, generator=generator)
        y, y_term = self.class_term(bu, y, prior=k >= self.config.L, generator=generator)
        td = self.top_down(bu, k=k, batch=h.shape[0], generator=generator, y=y,  # batch: k = L draws every z from p
                           temperature=0.0 if prior == "mode" else 1.0)
        kl = [None if lq is None else lq - lp for lq, lp in zip(td.log_q, td.log_p)]
        if self.config.classes:
            kl.append(y_term)
        return self.log_px(target, td.px, per_pixel), kl

    def class_term(self, bu: BottomUp, y: Tensor | None, *, prior: bool = False,
                   generator: torch.Generator | None = None) -> tuple[Tensor | None, Tensor | None]:
        """(y, log q(y | x) - log p(y)) per image, p(y) = 1/C. A given label is a point posterior:
        its term is log C. Otherwise y ~ q(y | x), or y ~ p(y) with `prior` (then no term).
        (None, None) for a model without classes."""
        C, b = self.config.classes, bu.top.shape[0]
        if not C:
            if y is not None:
                raise ValueError("this model has no class variable: y must be None")
            return None, None
        if y is not None:
            return self.check_labels(y, b), torch.full((b,), math.log(C), device=bu.top.device)
        if prior:
            return torch.randint(C, (b,), generator=generator, device=bu.top.device), None
        log_q = self.class_logits(bu).log_softmax(-1)                          # (B, C)
        y = torch.multinomial(log_q.exp(), 1, generator=generator).squeeze(1)
        return y, log_q.gather(1, y[:, None]).squeeze(1) + math.log(C)

    def check_labels(self, label: int | list[int] | Tensor, n: int) -> Tensor:
        """n class labels as a long tensor on the model's device: one label (for all n rows) or n,
        integers in 0..C-1; anything else is refused with a message."""
        C = self.config.classes
        y = torch.as_tensor(label, device=self.out_conv.weight.device).flatten()
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {y.tolist()}")
        y = y.long().expand(n).clone() if y.numel() == 1 else y.long()
        if y.numel() != n:
            raise ValueError(f"expected 1 or {n} labels, got {y.numel()}")
        if bool(((y < 0) | (y >= C)).any()):
            raise ValueError(f"labels must be in 0..{C - 1}, got {y.tolist()}")
        return y

    def class_bounds(self, x: Tensor, y: Tensor | None = None, *, free_bits: float | Tensor = 0.0,
                     generator: torch.Generator | None = None, with_kl: bool = False):
        """L(x, y) = E_q(z|x,y)[log p(x, y, z) - log q(z | x, y)] for one posterior draw, and the
        logits of q(y | x) (B, C), from one bottom-up pass.

        y given (labels (B,)): L is (B,). y None: L(x, c) for every class c, (B, C), from C
        top-down passes over the same bottom-up pass and the same noise (common random numbers:
        the classes' bounds differ by the class, not by the draw). free_bits > 0 floors each latent's KL
        per image at that many nats (the training objective, spec section 5). with_kl adds the
        latents' KLs (before the floor): (B, N), or (B, C, N)."""
        C = self.config.classes
        assert C, "class_bounds needs a model with classes"
        h, target = self.prepare(x)
        b = h.shape[0]
        bu = self.bottom_up(h, generator=generator)
        logits = self.class_logits(bu)
        every = y is None
        if every:
            bu, target = bu.repeat(C), target.repeat_interleave(C, dim=0)
            y = torch.arange(C, device=h.device).repeat(b)                     # row i*C + c: class c
        td = self.top_down(bu, k=0, generator=generator, y=y, tie=C if every else 1)
        kl = torch.stack([lq - lp for lq, lp in zip(td.log_q, td.log_p)], dim=1).float()   # (rows, N)
        bound = self.log_px(target, td.px).float() - floor_kl(kl, free_bits).sum(1) - math.log(C)
        if every:
            bound, kl = bound.view(b, C), kl.view(b, C, -1)
        return (bound, logits, kl.detach()) if with_kl else (bound, logits)

    def log_weight(self, x: Tensor, *, k: int = 0, generator: torch.Generator | None = None,
                   prior: str = "sample") -> Tensor:
        """log p(x | z) p(z_{>k}) / q(z_{>k} | x) for one draw; its mean over draws is L^{>k}
        (prior="mode": z_{<=k} at the conditional prior's mean, see `forward`)."""
        log_px, kl = self(x, k=k, generator=generator, prior=prior)
        return log_px - sum(t for t in kl if t is not None)

    def latent_level(self, index: int) -> int:
        """The level i (1..L) that latent `index` belongs to (a class y, the last index, counts
        with the top level)."""
        return min(index // 2 + 1 if self.biva else index + 1, self.config.L)

    def latent_names(self) -> list[str]:
        return self.config.latent_names

    # the operations (operations.py) as methods: model.sample(16) is ops.sample(model, 16)
    device = property(ops.device)
    classify, sample, reconstruct, boundary = ops.classify, ops.sample, ops.reconstruct, ops.boundary
    resample, mix, interpolate = ops.resample, ops.mix, ops.interpolate
    elbo, iw_bound, scores, pixel_map = ops.elbo, ops.iw_bound, ops.scores, ops.pixel_map
    posterior_means, active_units = ops.posterior_means, ops.active_units
