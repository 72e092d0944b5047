"""Semi-supervised BIVA (spec section 5, M2 of Kingma et al. 2014 with BIVA as the hierarchy).

A class y (C values, p(y) = 1/C) joins the top of the model; `BIVA.class_bounds` gives

    L(x, y) = E_q(z|x,y)[log p(x, y, z) - log q(z | x, y)]                    labelled x
    U(x)    = sum_y q(y | x) L(x, y) + H(q(y | x))  <= log p(x)               unlabelled x

and the training objective over a data set of N images, with alpha = 0.1 N, is

    J = sum_labelled [L(x, y) + alpha log q(y | x)] + sum_unlabelled U(x).

U(x) equals log sum_y exp L(x, y) exactly when q(y | x) is the softmax of L(x, y), and is below it
otherwise (Gibbs' inequality): `unlabelled_bound` is that expression for any q.

Beyond spec section 5 (off by default, `consistency` > 0): the classifier also learns from the
unlabelled images by consistency with its own confident answers (pseudo-labels, as in FixMatch,
Sohn et al. 2020). For an unlabelled x whose q(y | x) at the posterior means puts at least
`threshold` on one class y_hat, the term log q(y_hat | A(x)) is added, A a random shift and rotation
(`jitter`); the labelled images' log q(y | x) then reads A(x) too. With weight lambda the term is

    J_c = lambda alpha n_l mean_x [1{max_y q(y | x) >= threshold} log q(y_hat | A(x))]

beside the labelled term alpha n_l mean log q(y | A(x_l)): lambda is FixMatch's weight of the
unlabelled loss relative to the labelled one. Options: A may also bend the image (an elastic
distortion, `jitter(elastic=...)`), and the
pseudo-labels may be read by another model, the moving average of the weights (a "mean teacher",
Tarvainen & Valpola 2017), steadier than the weights being trained.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def unlabelled_bound(bounds_xy: Tensor, logits: Tensor) -> Tensor:
    """U(x) = sum_y q(y | x) (L(x, y) - log q(y | x)), from L(x, y) (B, C) and the logits of
    q(y | x) (B, C): (B,)."""
    log_q = logits.to(torch.promote_types(bounds_xy.dtype, torch.float32)).log_softmax(-1)
    return (log_q.exp() * (bounds_xy - log_q)).sum(-1)


def draw_labels(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices (sorted) of `per_class` images of every class present in `labels`, drawn without
    replacement with a fixed seed: the labelled part of a training split."""
    if per_class < 1:
        raise ValueError(f"labels per class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} training images, fewer than {per_class} labels")
        picked.append(rng.choice(pool, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def objective(model, x_u: Tensor, x_l: Tensor | None = None, y_l: Tensor | None = None, *,
              n_unlabelled: int, n_labelled: int = 0, alpha: float, free_bits: float | Tensor = 0.0,
              x_l_aug: Tensor | None = None,
              x_c: Tensor | None = None, x_c_aug: Tensor | None = None, consistency: float = 0.0,
              threshold: float = 0.95, teacher=None,
              generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss -J / (N D) estimated from one batch, N = n_unlabelled + n_labelled: the
    sum over each part of the batch is scaled to the size of its set. free_bits floors each
    latent's KL as in unsupervised training. Returns the loss and detached statistics:
    "U" (mean U(x) of the unlabelled rows, nats), "kl" (its per-latent KL, q(y | x)-weighted,
    and the class term last), and for labelled rows "L", "ce" (mean -log q(y | x)), "accuracy".

    Beyond the spec (`consistency` > 0, see the module's docstring): x_l_aug, a jittered copy of
    x_l, is what the labelled log q(y | .) reads, and the unlabelled images x_c with their jittered
    copies x_c_aug add consistency * alpha * n_labelled * mean(consistency_term), the pseudo-labels
    read by `teacher` (default: the model itself; e.g. its weights' moving average)."""
    C, N = model.config.classes, n_unlabelled + n_labelled
    bounds_u, logits_u, kl_u = model.class_bounds(x_u, free_bits=free_bits, generator=generator, with_kl=True)
    U = unlabelled_bound(bounds_u, logits_u)
    J = U.sum() * (n_unlabelled / len(x_u))
    with torch.no_grad():
        q = logits_u.softmax(-1)                                               # (B, C)
        kl_y = (q * q.clamp_min(1e-30).log()).sum(-1) + np.log(C)              # KL(q(y | x) || p(y))
        kl = torch.cat([(q[:, :, None] * kl_u).sum(1), kl_y[:, None]], dim=1).mean(0)
    stats = {"U": U.detach().mean(), "kl": kl}
    if x_l is not None and len(x_l):
        bounds_l, logits_l = model.class_bounds(x_l, y_l, free_bits=free_bits, generator=generator)
        if x_l_aug is not None:
            logits_l = model.class_logits(model.bottom_up(model.prepare(x_l_aug)[0], generator=generator))
        log_q = logits_l.log_softmax(-1).gather(1, y_l[:, None].long()).squeeze(1)
        J = J + (bounds_l + alpha * log_q).sum() * (n_labelled / len(x_l))
        stats.update(L=bounds_l.detach().mean(), ce=-log_q.detach().mean(),
                     accuracy=(logits_l.argmax(-1) == y_l).float().mean())
    if consistency > 0:
        if not n_labelled or x_c is None or x_c_aug is None:
            raise ValueError("the consistency term needs labelled images (alpha n_labelled sets its scale) and "
                             "unlabelled images with their jittered copies")
        term, c_stats = consistency_term(model, x_c, x_c_aug, threshold, teacher=teacher, generator=generator)
        J = J + consistency * alpha * n_labelled * term.mean()
        stats.update(c_stats)
    return -J / (N * model.config.dims), stats


def jitter(x: Tensor, *, shift: float, rotate: float, elastic: float = 0.0, sigma: float = 4.0,
           generator: torch.Generator | None = None) -> Tensor:
    """Each image moved by a random whole-image affine map: a rotation of up to `rotate` degrees and
    a shift of up to `shift` pixels each way; with `elastic` > 0 also bent by an elastic distortion
    (Simard et al. 2003): a displacement field of uniform noise in [-1, 1] per pixel and axis,
    smoothed by a Gaussian of `sigma` pixels and scaled so that a field of constant 1 moves a pixel
    `elastic` pixels. Nearest-neighbour sampled (binary images stay binary), zeros outside.
    x: (B, C, H, W) float."""
    b, _, h, w = x.shape
    u = torch.rand(b, 3, generator=generator) * 2 - 1                        # (B, 3) in [-1, 1)
    angle = u[:, 0] * math.radians(rotate)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, u[:, 1] * 2 * shift / w], -1),
                         torch.stack([sin, cos, u[:, 2] * 2 * shift / h], -1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)          # (B, H, W, 2): (x, y) in [-1, 1]
    if elastic > 0:
        field = torch.rand(b, 2, h, w, generator=generator) * 2 - 1
        r = max(1, int(math.ceil(3 * sigma)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
        k = k / k.sum()
        field = F.conv2d(F.pad(field.reshape(2 * b, 1, h, w), (r, r, 0, 0)), k.view(1, 1, 1, -1))  # along x
        field = F.conv2d(F.pad(field, (0, 0, r, r)), k.view(1, 1, -1, 1)).reshape(b, 2, h, w)    # along y
        scale = torch.tensor([2 * elastic / w, 2 * elastic / h]).view(1, 2, 1, 1)                # pixels -> grid units
        grid = grid + (field * scale).permute(0, 2, 3, 1).to(x.device, x.dtype)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x


def consistency_term(model, x: Tensor, x_aug: Tensor, threshold: float, teacher=None,
                     generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """(B,) 1{max q(. | x) >= threshold} log q(y_hat | x_aug), y_hat = argmax q(y | x) at the posterior
    means with no gradient (the pseudo-label; q read by `teacher`, the model itself by default),
    x_aug through the model's training (sampled) bottom-up pass;
    and its statistics: "mask" (the share of confident images), "pseudo_agree" (how often y_hat is
    also argmax q(y | x_aug))."""
    teacher = model if teacher is None else teacher
    with torch.no_grad():
        p = teacher.class_logits(teacher.bottom_up(teacher.prepare(x)[0], q_mean=True)).softmax(-1)
        confidence, y_hat = p.max(-1)
        mask = (confidence >= threshold).float()
    logits = model.class_logits(model.bottom_up(model.prepare(x_aug)[0], generator=generator))
    log_q = logits.log_softmax(-1).gather(1, y_hat[:, None]).squeeze(1)
    return mask * log_q, {"mask": mask.mean(), "pseudo_agree": (logits.argmax(-1) == y_hat).float().mean().detach()}


@torch.inference_mode()
def predict(model, images, *, batch: int = 500, to_float=None) -> np.ndarray:
    """argmax q(y | x) of every image, (N,). images: (N, C, H, W), float in [0, 1] (or {0, 1}),
    array or tensor; to_float converts a batch of other values (e.g. uint8 0..255) to that."""
    out = [np.zeros(0, dtype=np.int64)]
    for i in range(0, len(images), batch):
        x = torch.as_tensor(images[i:i + batch])
        x = to_float(x) if to_float is not None else x.float()
        out.append(model.classify(x).argmax(-1).cpu().numpy())
    return np.concatenate(out)


def error_rate(model, images, labels: np.ndarray, *, batch: int = 500, to_float=None) -> float:
    """The fraction of images whose argmax q(y | x) (`predict`) is not their label."""
    wrong = int((predict(model, images, batch=batch, to_float=to_float) != np.asarray(labels)[:len(images)]).sum())
    return wrong / max(1, len(images))
