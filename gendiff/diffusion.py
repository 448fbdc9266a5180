"""The composed model: a diffusion assembled from one component of each family.

:class:`Diffusion` implements the paper's quantities by delegating to its components; it never
asks a component what kind it is. Every term of the bound, for every recipe, is computed here
the same way:

    L = L_T + sum_{t=2}^{T} L_{t-1} + L_0                                        (eq. 5)
    L_T     = schedule.prior_kl(x0)                       KL(q(x_T|x0) || p(x_T))
    L_{t-1} = schedule.q_posterior(x0, x_t, t).kl(p)      KL(q(x_{t-1}|x_t,x0) || p_theta(x_{t-1}|x_t))
    L_0     = p.nll(x0, K) at t = 1                       -log p_theta(x0|x1), eq. 13

where p = variance.transition(parameterization.predict(backbone(x_t, t)), ...).

Time convention: every method takes the paper's t in {1..T} as an integer tensor of shape (B,).
Data are on the paper's scale [-1, 1] (K levels: x = 2k/(K-1) - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .parameterizations import Prediction
from .weightings import LossTerms


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every dimension except the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


@dataclass
class NLL:
    """The bound of eq. 5 per example, in bits per dimension.

    ``prior``: L_T, shape (B,). ``terms``: shape (B, T); column t - 1 holds the term of paper
    time t, i.e. L_{t-1} (column 0 is the decoder term L_0 of eq. 13).
    """

    prior: Tensor
    terms: Tensor

    @property
    def decoder(self) -> Tensor:
        """L_0 = -log p_theta(x0 | x1) in bits/dim, shape (B,)."""
        return self.terms[:, 0]

    @property
    def total(self) -> Tensor:
        """The whole bound L_T + sum_{t>1} L_{t-1} + L_0 in bits/dim, shape (B,)."""
        return self.prior + self.terms.sum(dim=1)


@dataclass
class ReverseStep:
    """One network evaluation: the reverse distribution and the prediction it came from."""

    p: Any
    prediction: Prediction


@dataclass
class BoundTerm:
    """Paper time t, the draw x_t ~ q(x_t | x0), the prediction at it, and L_{t-1} in nats (B,)."""

    t: int
    x_t: Tensor
    prediction: Prediction
    nats: Tensor


class Diffusion(nn.Module):
    """A diffusion model composed of a schedule, a parameterization, a variance, a loss
    weighting, a backbone and a sampler (see :func:`gendiff.build`).

    Args:
        schedule, parameterization, variance, weighting, sampler: component instances.
        backbone: the network, ``backbone(x, t) -> output`` (an ``nn.Module`` or any callable).
        data_shape: (C, H, W) of one example.
        levels: K, the number of discrete data levels (the decoder's bins follow it).
    """

    def __init__(
        self,
        schedule,
        parameterization,
        variance,
        weighting,
        sampler,
        backbone: nn.Module | Callable[[Tensor, Tensor], Tensor],
        data_shape: tuple[int, int, int],
        levels: int = 256,
    ):
        super().__init__()
        self.schedule = schedule
        self.parameterization = parameterization
        self.variance = variance
        self.weighting = weighting
        self.sampler = sampler
        self.backbone = backbone
        self.data_shape = tuple(int(d) for d in data_shape)
        self.levels = int(levels)
        channels = self.data_shape[0]
        #: how the network output splits: (parameterization's share, variance's share)
        self.output_split = (
            parameterization.out_channels(channels, self.levels),
            variance.out_channels(channels),
        )

    def with_backbone(self, backbone) -> "Diffusion":
        """The same composed model around another network (e.g. the EMA weights)."""
        twin = Diffusion(self.schedule, self.parameterization, self.variance, self.weighting, self.sampler,
                         backbone, self.data_shape, self.levels)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("recipe", "dataset")})
        return twin

    # -- small helpers -----------------------------------------------------------------------
    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return self.schedule.timesteps

    @property
    def dims(self) -> int:
        """D, the number of data dimensions per example."""
        return math.prod(self.data_shape)

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @staticmethod
    def time(t: int, batch: int, device=None) -> Tensor:
        """The paper's time ``t`` (an int in {1..T}) repeated for a batch: LongTensor (batch,)."""
        return torch.full((batch,), int(t), dtype=torch.long, device=device)

    # -- the forward process (delegated to the schedule) ---------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0) (eq. 4); ``noise`` defaults to fresh randomness; t in {1..T}."""
        if noise is None:
            noise = self.schedule.noise_like(x0)
        return self.schedule.q_sample(x0, t, noise)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of q(x_{t-1} | x_t, x0) (eqs. 6, 7); t in {1..T}. At t = 1 the
        variance follows the official code's clipped value (see :meth:`GaussianSchedule.q_posterior`)."""
        q = self.schedule.q_posterior(x0, x_t, t)
        return q.mean, q.variance

    def prior_sample(self, shape, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ p(x_T) on the model's device."""
        return self.schedule.prior_sample(tuple(shape), generator=generator, device=self.device)

    # -- the reverse process -----------------------------------------------------------------
    def network(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run the backbone; return (the parameterization's output, the variance's output or None)."""
        out = self.backbone(self.schedule.model_input(x_t, t), t)
        if self.output_split[1] == 0:
            return out, None
        head, var = torch.split(out, self.output_split, dim=1)
        return head, var

    def predict(self, x_t: Tensor, t: Tensor, clip_x0: bool = False) -> Prediction:
        """The network's prediction (x0_hat, eps_hat, mu_theta) at x_t; t in {1..T}."""
        head, _ = self.network(x_t, t)
        return self.parameterization.predict(head, x_t, t, self.schedule, clip_x0=clip_x0)

    def reverse_step(self, x_t: Tensor, t: Tensor, clip_x0: bool = False) -> ReverseStep:
        """One network evaluation at x_t: the reverse distribution p_theta(x_{t-1} | x_t) (eq. 1)
        together with the prediction it came from; t in {1..T}."""
        head, var = self.network(x_t, t)
        pred = self.parameterization.predict(head, x_t, t, self.schedule, clip_x0=clip_x0)
        return ReverseStep(self.variance.transition(pred, var, x_t, t, self.schedule), pred)

    def p_transition(self, x_t: Tensor, t: Tensor, clip_x0: bool = False):
        """p_theta(x_{t-1} | x_t) as a distribution (eq. 1); t in {1..T}."""
        return self.reverse_step(x_t, t, clip_x0).p

    def p_mean_variance(self, x_t: Tensor, t: Tensor, clip_x0: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, variance, x0_hat) of p_theta(x_{t-1} | x_t); t in {1..T}."""
        step = self.reverse_step(x_t, t, clip_x0)
        return step.p.mean, step.p.variance, step.prediction.x0

    # -- the bound ---------------------------------------------------------------------------
    def bound_term(self, x0: Tensor, x_t: Tensor, t: Tensor, p) -> Tensor:
        """L_{t-1} per example, in nats: KL(q(x_{t-1}|x_t,x0) || p) for t > 1 and the
        decoder term -log p(x0|x1) (eq. 13) for t = 1. Shape (B,)."""
        kl = sum_flat(self.schedule.q_posterior(x0, x_t, t).kl(p))
        decoder = sum_flat(p.nll(x0, self.levels))
        return torch.where(t == 1, decoder, kl)

    @torch.no_grad()
    def bound_terms(self, x0: Tensor, generator: torch.Generator | None = None) -> Iterator[BoundTerm]:
        """For t = 1..T: one draw x_t ~ q(x_t | x0) per example (as the official
        ``calc_bpd_loop``), the reverse step at it, and L_{t-1} per example in nats (closed form).
        :meth:`nll_bpd` sums these; the rate-distortion analysis also reads the predictions."""
        batch = x0.shape[0]
        for t in range(1, self.timesteps + 1):
            tt = self.time(t, batch, x0.device)
            x_t = self.schedule.q_sample(x0, tt, self.schedule.noise_like(x0, generator))
            step = self.reverse_step(x_t, tt)
            yield BoundTerm(t, x_t, step.prediction, self.bound_term(x0, x_t, tt, step.p))

    @torch.no_grad()
    def nll_bpd(self, x0: Tensor, generator: torch.Generator | None = None) -> NLL:
        """The bound of eq. 5 per example in bits/dim, with its breakdown (L_T, each L_{t-1}, L_0).

        One draw x_t ~ q(x_t | x0) per example and per t; every term is then closed form.
        Costs T network evaluations per batch."""
        scale = 1.0 / (self.dims * math.log(2.0))
        prior = sum_flat(self.schedule.prior_kl(x0)) * scale
        terms = torch.empty(x0.shape[0], self.timesteps, dtype=x0.dtype, device=x0.device)
        for term in self.bound_terms(x0, generator):
            terms[:, term.t - 1] = term.nats * scale
        return NLL(prior, terms)

    # -- training (Algorithm 1) ----------------------------------------------------------------
    def loss_terms(self, x0: Tensor, generator: torch.Generator | None = None,
                   share: tuple[int, int] = (0, 1)) -> LossTerms:
        """Algorithm 1's draws for a batch: t ~ U{1..T}, noise, x_t, and the network's answer.

        ``share = (rank, world)``: ``x0`` holds rows ``rank::world`` of a global batch of
        ``world * len(x0)`` examples (data-parallel training); t and the noise are drawn for the
        global batch and this share's rows kept, so the draws do not depend on ``world``."""
        rank, world = share
        batch = x0.shape[0] * world
        t = torch.randint(1, self.timesteps + 1, (batch,), generator=generator, device=x0.device)[rank::world]
        shape = x0.new_empty((batch, *x0.shape[1:])) if world > 1 else x0
        noise = self.schedule.noise_like(shape, generator)[rank::world]
        x_t = self.schedule.q_sample(x0, t, noise)
        head, var = self.network(x_t, t)
        pred = self.parameterization.predict(head, x_t, t, self.schedule)
        scale = 1.0 / self.dims

        def bound_fn(prediction: Prediction) -> Tensor:
            p = self.variance.transition(prediction, var, x_t, t, self.schedule)
            prior = sum_flat(self.schedule.prior_kl(x0))
            return (prior + self.timesteps * self.bound_term(x0, x_t, t, p)) * scale

        return LossTerms(
            x0=x0,
            t=t,
            noise=noise,
            x_t=x_t,
            output=head,
            prediction=pred,
            var_output=var,
            target_fn=lambda: self.parameterization.target(x0, noise, x_t, t, self.schedule),
            bound_fn=bound_fn,
            posterior_mean_fn=lambda: self.schedule.q_posterior(x0, x_t, t).mean,
            transition_fn=lambda: self.variance.transition(pred, var, x_t, t, self.schedule),
        )

    def training_loss(self, x0: Tensor, generator: torch.Generator | None = None,
                      share: tuple[int, int] = (0, 1)) -> Tensor:
        """The recipe's training loss for a batch x0 in [-1, 1] (Algorithm 1), a scalar
        (``share``: see :meth:`loss_terms`)."""
        return self.weighting.loss(self.loss_terms(x0, generator, share)).mean()

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        sampler=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """``n`` samples x0 in [-1, 1], shape (n, C, H, W), drawn with the recipe's sampler
        (or ``sampler``)."""
        return (sampler or self.sampler).sample(self, (n, *self.data_shape), generator, progress)
