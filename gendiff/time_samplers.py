"""Time samplers: how Algorithm 1 draws t for each example (the recipe's ``[time_sampler]``).

Interface: :class:`TimeSampler`. ``sample(batch, schedule, generator, device)`` returns the
times (B,) in the schedule's convention and importance weights (B,) or None; the composed model
multiplies each example's loss by its weight, so that E[w L_t] under the sampler's p(t) equals
the uniform E[L_t] of Algorithm 1 (weights 1 / (T p(t))). After every optimizer step the trainer
calls ``update(t, losses)`` with the whole global batch's times and per-example losses (before
the weights), in the global batch's order, on every process alike. A sampler that learns keeps
its state in ``state_dict()`` (tensors only), which every checkpoint stores, so a resumed run
draws exactly the times an uninterrupted one would.

Built-ins: ``uniform`` (Algorithm 1), ``loss-second-moment`` (Nichol & Dhariwal 2021,
Sec. 3.3: importance sampling p(t) proportional to sqrt(E[L_t^2])) and ``low-discrepancy``
(Kingma et al. 2021, Appendix I: one uniform offset per batch, the B times evenly spread).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .component import Component


class TimeSampler(Component):
    """Draws the training times t (the uniform draw of Algorithm 1 by default)."""

    family: ClassVar[str] = "time_sampler"
    #: whether :meth:`update` learns anything (the trainer gathers the losses only then)
    learns: ClassVar[bool] = False

    def sample(self, batch: int, schedule, generator: torch.Generator | None = None,
               device=None) -> tuple[Tensor, Tensor | None]:
        """(t, importance weights or None) for ``batch`` examples."""
        return schedule.uniform_time(batch, generator, device), None

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Learn from one optimizer step: the global batch's times and per-example losses."""

    def state_dict(self) -> dict[str, Tensor]:
        """What a checkpoint stores (tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`'s output."""


class Uniform(TimeSampler):
    """t ~ U{1..T} (discrete schedules) or U(0, 1] (continuous): Algorithm 1, line 3."""

    name = "uniform"


class LossSecondMoment(TimeSampler):
    """Improved DDPM's importance sampling of t (Nichol & Dhariwal 2021, Sec. 3.3, eq. 18):
    p(t) proportional to sqrt(E[L_t^2]), from the last ``history`` losses seen at each t, mixed
    with ``uniform_mix`` of the uniform distribution; uniform until every t has ``history``
    losses. Each example's loss is weighted by 1 / (T p(t)), so the objective's expectation is
    unchanged and only its variance falls. Discrete schedules (t in {1..T}) only.

    Args:
        history: losses remembered per t (10, as in the paper).
        uniform_mix: the uniform share of p(t) (0.001, as in improved-diffusion).
    """

    name = "loss-second-moment"
    requires = {"schedule": frozenset({"discrete-time"})}
    learns = True

    def __init__(self, history: int = 10, uniform_mix: float = 0.001):
        if isinstance(history, bool) or not isinstance(history, int) or not 1 <= history <= 1000:
            raise ValueError(f"history must be an integer from 1 to 1000, got {history!r}")
        if isinstance(uniform_mix, bool) or not isinstance(uniform_mix, (int, float)) or not 0 < uniform_mix <= 1:
            raise ValueError(f"uniform_mix must be a number in (0, 1], got {uniform_mix!r}")
        self.history, self.uniform_mix = history, float(uniform_mix)
        self.losses: Tensor | None = None  # (T, history) float64, column j the j-th oldest kept
        self.counts: Tensor | None = None  # (T,) how many losses each t has seen (at most ``history``)

    def _ensure(self, T: int) -> None:
        if self.losses is None or len(self.losses) != T:
            self.losses = torch.zeros(T, self.history, dtype=torch.float64)
            self.counts = torch.zeros(T, dtype=torch.long)

    def probabilities(self, T: int) -> Tensor:
        """p(t) for t = 1..T (float64): uniform until every t has its history."""
        self._ensure(T)
        if bool((self.counts < self.history).any()):
            return torch.full((T,), 1.0 / T, dtype=torch.float64)
        weights = self.losses.pow(2).mean(dim=1).sqrt()
        p = weights / weights.sum()
        return p * (1 - self.uniform_mix) + self.uniform_mix / T

    def sample(self, batch, schedule, generator=None, device=None):
        T = schedule.timesteps
        p = self.probabilities(T)
        where = generator.device if generator is not None else torch.device(device or "cpu")
        p = p.to(where)
        index = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = 1.0 / (T * p[index])
        return (index + 1).to(device), weights.to(device=device, dtype=torch.float32)

    def update(self, t, losses):
        T = len(self.losses) if self.losses is not None else None
        if T is None:
            return
        for ti, loss in zip((t.long() - 1).tolist(), losses.detach().double().cpu().tolist()):
            if self.counts[ti] == self.history:  # drop the oldest
                self.losses[ti, :-1] = self.losses[ti, 1:].clone()
                self.losses[ti, -1] = loss
            else:
                self.losses[ti, self.counts[ti]] = loss
                self.counts[ti] += 1

    def state_dict(self):
        return {} if self.losses is None else {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state):
        if state:
            self.losses, self.counts = state["losses"].double().clone(), state["counts"].long().clone()


class LowDiscrepancy(TimeSampler):
    """VDM's low-discrepancy sampler (Kingma et al. 2021, Appendix I): one u ~ U[0, 1) per global
    batch and u_i = (u + i / B) mod 1 for its B examples, so the batch covers (0, 1] evenly; each
    u_i is still uniform, so the loss's expectation is unchanged and its variance falls. Times are
    t = 1 - u_i in (0, 1] for a continuous schedule, or the grid step ceil(u'_i T) (u'_i = 1 - u_i)
    for a discrete one, which is uniform on {1..T}.

    Args:
        grid: for a continuous schedule, draw the grid times t = i / T (i = ceil(u'_i T)) instead
            of any t; the T-step VDM loss (``vdm-discrete``) needs them (this provides "grid-times").
    """

    name = "low-discrepancy"

    def __init__(self, grid: bool = False):
        if not isinstance(grid, bool):
            raise ValueError(f"grid must be true or false, got {grid!r}")
        self.grid = grid
        self.provides = frozenset({"grid-times"}) if grid else frozenset()

    def sample(self, batch, schedule, generator=None, device=None):
        where = generator.device if generator is not None else torch.device(device or "cpu")
        u0 = torch.rand((), generator=generator, device=where, dtype=torch.float64)
        u = 1.0 - torch.remainder(u0 + torch.arange(batch, device=where, dtype=torch.float64) / batch, 1.0)  # (0, 1]
        T = schedule.timesteps
        if not schedule.continuous:
            return torch.ceil(u * T).clamp(1, T).long().to(device), None
        if self.grid:
            return (torch.ceil(u * T).clamp(1, T) / T).to(device), None
        return u.to(device), None
