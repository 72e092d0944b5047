"""The update guard: skip an update that would wreck the run, and never skip silently for long.

A fixed skip threshold on the gradient norm (vdvae's rule) fails in a known way: one bad update
moves the weights to a region where every gradient norm sits above the threshold, every later
update is skipped and the run freezes while its progress bar keeps counting. The guard instead

1. skips an update when the loss or the gradient norm is not finite, or the norm exceeds
   `factor` times the 90th percentile of the norms of the last WINDOW accepted updates (before
   MIN_HISTORY updates have been accepted, the config's fixed `threshold` stands in for it). Not
   the median: early in training the norms grow tens of times over in a few dozen steps (a
   32x32 face model on 159 images, 2026-12-07: 0.20 at step 0, 1.2 at step 37, 3.9 at step 40),
   and ten times a median that lags behind skipped 12 of the first 60 healthy updates and rolled
   the run back to step 0; ten times the 90th percentile skipped none;
2. keeps the last two healthy states (weights, optimizer, EMA), taken every `log_every` steps
   when that stretch had no skip;
3. after `max_skips` skips in a row, restores the older of the two (at least one healthy stretch
   before the trouble began), halves the learning rate and says so; after `max_rollbacks`
   rollbacks with no healthy stretch between them the run cannot learn and stops.

The decision is a 0-dim tensor computed on the device (no host read), so a GPU step need not
wait for it; the host reads the count of skips in a row when the trainer asks.
"""
from __future__ import annotations

import torch

WINDOW = 100        # accepted gradient norms the adaptive threshold looks at
MIN_HISTORY = 20    # accepted norms before the adaptive threshold replaces the fixed one
QUANTILE = 0.9      # of the recent accepted norms, times the factor: the adaptive threshold
LR_FACTOR = 0.5     # the learning rate's factor at every rollback


class UpdateGuard:
    def __init__(self, *, factor: float, threshold: float, max_skips: int, max_rollbacks: int,
                 device: torch.device):
        if factor <= 1 or threshold <= 0 or max_skips < 1 or max_rollbacks < 0:
            raise ValueError("train config: skip_factor must be > 1, skip_threshold > 0, max_skips >= 1 "
                             f"and max_rollbacks >= 0 (got {factor}, {threshold}, {max_skips}, {max_rollbacks})")
        self.factor, self.threshold = factor, threshold
        self.max_skips, self.max_rollbacks = max_skips, max_rollbacks
        self.norms = torch.full((WINDOW,), float("nan"), device=device)  # a ring of accepted norms
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.in_a_row = torch.zeros((), device=device)                   # skips since the last update
        self.lr_scale = 1.0
        self.rollbacks = 0                                               # since the last healthy stretch
        self.snapshots: list[tuple[int, dict]] = []                      # (step, state), older first

    # ------------------------------------------------------------------ the decision

    def limit(self) -> torch.Tensor:
        """The gradient norm above which the next update is skipped (0-dim, on the device)."""
        seen = torch.isfinite(self.norms).sum()
        adaptive = self.factor * torch.nanquantile(self.norms, QUANTILE)
        return torch.where(seen >= MIN_HISTORY, adaptive, torch.full_like(adaptive, self.threshold))

    def recent(self) -> float:
        """The 90th percentile of the recent accepted norms (nan before any), for messages."""
        return float(torch.nanquantile(self.norms, QUANTILE)) if torch.isfinite(self.norms).any() else float("nan")

    def decide(self, grad_norm: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """1.0 to apply this update, 0.0 to skip it; records the norm of an applied one."""
        ok = torch.isfinite(grad_norm) & torch.isfinite(loss) & (grad_norm < self.limit())
        slot = self.pos.view(1)
        self.norms.scatter_(0, slot, torch.where(ok, grad_norm.float(), self.norms.gather(0, slot)[0]).view(1))
        self.pos = (self.pos + ok.long()) % WINDOW
        self.in_a_row = torch.where(ok, torch.zeros_like(self.in_a_row), self.in_a_row + 1)
        return ok.float()

    def stuck(self) -> bool:
        """max_skips skips in a row (one host read)."""
        return int(self.in_a_row) >= self.max_skips

    # ------------------------------------------------------------------ healthy states

    def remember(self, step: int, state: dict) -> None:
        """A state after a healthy stretch; the older of the last two is the rollback target."""
        self.snapshots = (self.snapshots + [(step, state)])[-2:]
        self.rollbacks = 0

    def rollback_target(self) -> tuple[int, dict]:
        self.rollbacks += 1
        self.lr_scale *= LR_FACTOR
        self.in_a_row.zero_()
        return self.snapshots[0]

    def gave_up(self) -> bool:
        return self.rollbacks > self.max_rollbacks

    # ------------------------------------------------------------------ resume

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, scalars) for the resume state; the snapshots are not kept (a resumed run's
        first healthy state is the one it resumed from)."""
        return ({"guard.norms": self.norms, "guard.pos": self.pos, "guard.in_a_row": self.in_a_row},
                {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks})

    def load(self, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
        if "guard.norms" not in tensors:  # a state saved before the guard adapted: a fresh history
            return
        self.norms.copy_(tensors["guard.norms"])
        self.pos.copy_(tensors["guard.pos"])
        self.in_a_row.copy_(tensors["guard.in_a_row"])
        self.lr_scale, self.rollbacks = float(scalars["lr_scale"]), int(scalars["rollbacks"])
