"""The variational bound of eq. 5, term by term, for every recipe (a part of
:class:`gendiff.diffusion.Diffusion`):

    L = L_T + sum_{t=2}^{T} L_{t-1} + L_0                                        (eq. 5)
    L_T     = schedule.prior_kl(x0)                       KL(q(x_T|x0) || p(x_T))
    L_{t-1} = schedule.q_posterior(x0, x_t, t).kl(p)      KL(q(x_{t-1}|x_t,x0) || p_theta(x_{t-1}|x_t))
    L_0     = p.nll(x0, K) at t = 1                       -log p_theta(x0|x1), eq. 13

where p is the model's reverse distribution at x_t. Every term is closed form; one draw
x_t ~ q(x_t | x0) per example and per t, as the official ``calc_bpd_loop``. The terms run over
the schedule's grid: the paper's t in {1..T}, or t_i = i / T for a continuous schedule.

Two conventions for x0_hat: the exact bound (``clip_x0 = False``, the default) uses the
network's prediction as it is; ``clip_x0 = True`` clips x0_hat to [-1, 1] before forming each
reverse mean, as the official evaluation did (``calc_bpd_loop`` with ``clip_denoised=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .parameterizations import Prediction


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every dimension except the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


@dataclass
class NLL:
    """The bound of eq. 5 per example, in bits per dimension.

    ``prior``: L_T, shape (B,). ``terms``: shape (B, T); column i - 1 holds the term of grid
    step i, i.e. L_{i-1} (column 0 is the decoder term L_0 of eq. 13).
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
class BoundTerm:
    """Grid step t, the draw x_t ~ q(x_t | x0), the prediction at it, and L_{t-1} in nats (B,)."""

    t: int
    x_t: Tensor
    prediction: Prediction
    nats: Tensor


class BoundMixin:
    """The bound's methods of the composed model (see the module docstring)."""

    def bound_term(self, x0: Tensor, x_t: Tensor, t: Tensor, p) -> Tensor:
        """L_{t-1} per example, in nats: KL(q(x_{t-1}|x_t,x0) || p) for t > 1 and the
        decoder term -log p(x0|x1) (eq. 13) at the first step. Shape (B,)."""
        kl = sum_flat(self.schedule.q_posterior(x0, x_t, t).kl(p))
        decoder = sum_flat(p.nll(x0, self.levels))
        return torch.where(self.schedule.first_step(t), decoder, kl)

    @torch.no_grad()
    def bound_terms(self, x0: Tensor, generator: torch.Generator | None = None, cond=None,
                    clip_x0: bool = False):
        """For grid steps t = 1..T: one draw x_t ~ q(x_t | x0) per example, the reverse step at
        it, and L_{t-1} per example in nats (closed form). :meth:`nll_bpd` sums these; the
        rate-distortion analysis also reads the predictions. ``cond``: the labels of x0 for a
        conditional model; ``clip_x0``: the official clipped convention (module docstring)."""
        batch = x0.shape[0]
        cond = self.checked_labels(cond, batch, x0.device)
        for t in range(1, self.timesteps + 1):
            tt = self.time(t, batch, x0.device)
            x_t = self.schedule.q_sample(x0, tt, self.schedule.noise_like(x0, generator))
            step = self.reverse_step(x_t, tt, clip_x0, cond)
            yield BoundTerm(t, x_t, step.prediction, self.bound_term(x0, x_t, tt, step.p))

    @torch.no_grad()
    def nll_bpd(self, x0: Tensor, generator: torch.Generator | None = None, cond=None,
                clip_x0: bool = False) -> NLL:
        """The bound of eq. 5 per example in bits/dim, with its breakdown (L_T, each L_{t-1}, L_0).

        One draw x_t ~ q(x_t | x0) per example and per t; every term is then closed form.
        Costs T network evaluations per batch."""
        scale = 1.0 / (self.dims * math.log(2.0))
        prior = sum_flat(self.schedule.prior_kl(x0)) * scale
        terms = torch.empty(x0.shape[0], self.timesteps, dtype=x0.dtype, device=x0.device)
        for term in self.bound_terms(x0, generator, cond, clip_x0):
            terms[:, term.t - 1] = term.nats * scale
        return NLL(prior, terms)
