"""The schedule interface: the fixed forward process q(x_t | x0) and the meaning of time.

A schedule owns everything about the forward process: how to corrupt data (``q_sample``), the
posterior q(x_{t-1} | x_t, x0), the prior p(x_T), the prior term L_T of the bound, and *time*:

- a **discrete** schedule (``continuous = False``, the paper's) has times t in {1..T}, passed
  as integer tensors of shape (B,). A fractional time is refused with :class:`TimeError`, never
  truncated (:meth:`NoiseSchedule.index`).
- a **continuous** schedule (``continuous = True``) has times t in (0, 1], float64 tensors
  (B,). It still has a T-step grid t_i = i / T, on which the ancestral sampler, the bound and
  the fixed variances work exactly as for a discrete schedule with T steps.

Grid step i in {0..T} is time :meth:`step_time` (i itself, or i / T); :meth:`times` makes a
batch of it. :meth:`uniform_time` is Algorithm 1's t ~ U{1..T} (or U(0, 1]); :meth:`network_time`
is what the backbone sees (the paper's t, or 1000 t, so one sinusoidal embedding suits both).
Schedules state the kind of time they have as a capability tag: ``discrete-time`` or
``continuous-time`` (components that need grid quantities at training times require the first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from ..component import Component
from ..distributions import Gaussian
from ..errors import GendiffError


class TimeError(GendiffError, ValueError):
    """A time the schedule does not accept (a fractional t for a discrete schedule, a time off
    the grid for a grid quantity of a continuous one)."""


class NoiseSchedule(Component, ABC):
    """The forward process q(x_{1:T} | x0), the prior p(x_T) and the schedule's time.

    Subclasses set ``provides`` to the kind of process (``gaussian``, ``masking``) and of time
    (``discrete-time``, ``continuous-time``) so that other components can declare what they need.
    """

    family: ClassVar[str] = "schedule"
    #: extra channels the network input gets from :meth:`model_input` (0 for Gaussian noise)
    extra_input_channels: ClassVar[int] = 0
    #: False: t in {1..T} (integer tensors); True: t in (0, 1] (float64 tensors), grid t_i = i / T
    continuous: ClassVar[bool] = False
    #: the backbone sees ``time_scale * t`` for a continuous schedule (see :meth:`network_time`)
    time_scale: ClassVar[float] = 1000.0
    timesteps: int

    # -- time --------------------------------------------------------------------------------
    def step_time(self, i: int) -> float | int:
        """The time of grid step i in {0..T}: i (discrete) or i / T (continuous)."""
        return i / self.timesteps if self.continuous else int(i)

    def times(self, i: int, batch: int, device=None) -> Tensor:
        """Grid step i's time repeated for a batch: LongTensor (discrete) or float64 (continuous)."""
        if self.continuous:
            return torch.full((batch,), self.step_time(i), dtype=torch.float64, device=device)
        return torch.full((batch,), int(i), dtype=torch.long, device=device)

    def uniform_time(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Algorithm 1's draw: t ~ U{1..T} (discrete) or t ~ U(0, 1] (continuous), shape (batch,)."""
        if self.continuous:
            return 1.0 - torch.rand((batch,), generator=generator, device=device, dtype=torch.float64)
        return torch.randint(1, self.timesteps + 1, (batch,), generator=generator, device=device)

    def network_time(self, t: Tensor) -> Tensor:
        """What the backbone receives as time: the paper's t (discrete) or ``time_scale * t``."""
        return t * self.time_scale if self.continuous else t

    def first_step(self, t: Tensor) -> Tensor:
        """Whether t is the first grid step (where the bound's term is the decoder L_0)."""
        if self.continuous:
            return t <= self.step_time(1) * (1 + 1e-9)
        return t == 1

    def index(self, t: Tensor) -> Tensor:
        """A discrete schedule's t as a LongTensor, for table lookups; a fractional t is refused
        (never truncated). Integer tensors pass through without a check."""
        if not t.is_floating_point():
            return t.long()
        rounded = t.round()
        if bool((rounded != t).any()):
            bad = t[rounded != t][0].item()
            raise TimeError(
                f"schedule '{self.name}' has discrete time t in {{1..{self.timesteps}}}, but got the fractional "
                f"t = {bad!r}. Pass integer times, or use a continuous-time schedule (e.g. vp-cosine); samplers "
                f"that need times between the steps map them explicitly (see gendiff.samplers.Heun)."
            )
        return rounded.long()

    # -- the forward process -----------------------------------------------------------------
    @abstractmethod
    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw the randomness of q(x_t | x0) for a batch (eps ~ N(0, I) for Gaussians).
        It may depend on x0's shape, dtype and device only, not on its values (data-parallel
        training draws it for the global batch's shape)."""

    @abstractmethod
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x0) given the randomness ``noise`` (eq. 4); t of shape (B,)."""

    @abstractmethod
    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Gaussian:
        """q(x_{t-1} | x_t, x0) (eqs. 6, 7): the posterior one grid step back."""

    @abstractmethod
    def prior_sample(
        self, shape: tuple[int, ...], generator=None, device=None, dtype=None
    ) -> Tensor:
        """x_T ~ p(x_T)."""

    @abstractmethod
    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x0) || p(x_T)) per element, in nats."""

    @property
    def noisy_start(self) -> bool:
        """Whether z_0 is noisy (the schedule provides ``finite-snr``): the bound then has the
        reconstruction term :meth:`reconstruction`, and no grid step decodes."""
        return "finite-snr" in self.provides

    def reconstruction(self, x0: Tensor, noise: Tensor, levels: int) -> Tensor | None:
        """The bound's reconstruction term -log p(x0 | z_0) per element in nats, for a process
        whose z_0 = q_sample(x0, 0, noise) is itself noisy (a finite SNR at t = 0, as VDM's); None
        when z_0 = x0, so that the first grid step's reverse transition decodes (eq. 13)."""
        return None

    def model_input(self, x_t: Tensor, t: Tensor) -> Tensor:
        """What the network sees for x_t (x_t itself; a masking process would add its mask)."""
        return x_t
