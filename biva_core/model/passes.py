"""What the passes of the model hand on: the bottom-up pass's leavings, the top-down state above
a level (`Boundary`, a cache for resampling) and the top-down pass's result; and the two ways
L^{>k} takes z_{<=k} from the prior."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

# how L^{>k} takes z_{<=k} from p(z_{<=k} | z_{>k}): a draw, or its mean; and how to say it
PRIORS = ("sample", "mode")
PRIOR_WORDS = {"sample": "drawn from the prior", "mode": "at the prior mean"}

Gaussian = tuple[Tensor, Tensor]  # (mean, scale), float32


@dataclass
class BottomUp:
    """What the inference pass leaves for the top-down pass (per level j < L-1, and the top)."""
    z_bu: list[Tensor | None]        # sampled z_i^BU (BIVA only)
    log_q_bu: list[Tensor | None]    # log q(z_i^BU | .) per image, (B,)
    q_bu: list[Gaussian | None]
    feats: list[Tensor]              # TD-inference features (BIVA) or BU features (LVAE)
    q_top: Gaussian                  # q(z_L | x)
    top: Tensor                      # the features q(z_L | .) and q(y | x) read, (B, c, h, w)

    def repeat(self, n: int) -> "BottomUp":
        """Every image n times in a row (B * n rows): one bottom-up pass for n top-down passes."""
        rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)  # noqa: E731
        pair = lambda g: None if g is None else (rep(g[0]), rep(g[1]))  # noqa: E731
        return BottomUp([rep(t) for t in self.z_bu], [rep(t) for t in self.log_q_bu],
                        [pair(g) for g in self.q_bu], [rep(t) for t in self.feats], pair(self.q_top), rep(self.top))


@dataclass
class Boundary:
    """The top-down state just above level k: z_{k+1} as passed down and d_{k+1} (skip input),
    and the class of each row for a model with classes."""
    k: int
    z: Tensor
    d: Tensor | None
    y: Tensor | None = None


@dataclass
class TopDown:
    px: Tensor                       # parameters of p(x | z), (B, P, H, W)
    log_q: list[Tensor | None]       # per latent, (B,); None where z came from the prior
    log_p: list[Tensor]              # per latent, (B,)
    z: list[Tensor]
    q: list[Gaussian | None]         # posterior parameters where z came from q
    boundary: Boundary | None
