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

A schedule with a finite SNR at t = 0 (VDM's, ``noisy_start``) ends the grid at a noisy z_0: every
grid step, the first included, is then a KL term, and the bound adds the reconstruction term
-log p(x0 | z_0) (``schedule.reconstruction``; VDM eq. 11). For such a schedule
:meth:`BoundMixin.continuous_bound` also gives the bound as T -> infinity (VDM eq. 17):

    L_inf = L_T - log p(x0 | z_0) + 1/2 E_{t ~ U(0, 1]} [-lambda'(t) ||eps - eps_hat(z_t, t)||^2],

estimated by Monte Carlo over t (antithetic draws) with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import GendiffError
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
    #: -log p(x0 | z_0) in bits/dim (B,) for a schedule with a noisy z_0 (VDM), else None
    reconstruction: Tensor | None = None

    @property
    def decoder(self) -> Tensor:
        """The decoder term in bits/dim, shape (B,): L_0 = -log p_theta(x0 | x1) (the first grid
        step), or -log p(x0 | z_0) for a schedule with a noisy z_0."""
        return self.terms[:, 0] if self.reconstruction is None else self.reconstruction

    @property
    def total(self) -> Tensor:
        """The whole bound L_T + sum_{t>1} L_{t-1} + L_0 in bits/dim, shape (B,)."""
        total = self.prior + self.terms.sum(dim=1)
        return total if self.reconstruction is None else total + self.reconstruction


@dataclass
class ContinuousNLL:
    """The continuous-time bound (VDM eq. 17) per example, in bits per dimension.

    ``prior``: L_T (B,); ``reconstruction``: -log p(x0 | z_0) (B,); ``diffusion``: (B, S), one
    Monte Carlo estimate of the diffusion loss per draw of t (S draws per example)."""

    prior: Tensor
    reconstruction: Tensor
    diffusion: Tensor

    @property
    def total(self) -> Tensor:
        """The bound per example (B,), its diffusion part averaged over the S draws of t."""
        return self.prior + self.reconstruction + self.diffusion.mean(dim=1)

    @property
    def draws(self) -> Tensor:
        """Every single-draw estimate of the whole bound, (B, S)."""
        return (self.prior + self.reconstruction).unsqueeze(1) + self.diffusion


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
        rec = None
        if self.schedule.noisy_start:  # z_0 = alpha_0 x0 + sigma_0 eps, drawn after the grid's draws
            rec = sum_flat(self.schedule.reconstruction(x0, self.schedule.noise_like(x0, generator), self.levels)) * scale
        return NLL(prior, terms, rec)

    @torch.no_grad()
    def continuous_bound(self, x0: Tensor, generator: torch.Generator | None = None, cond=None,
                         draws: int = 1) -> ContinuousNLL:
        """The continuous-time bound (VDM eq. 17) per example in bits/dim: L_T and the
        reconstruction term in closed form (one draw of z_0), and the diffusion loss
        1/2 (-lambda'(t)) ||eps - eps_hat||^2 at ``draws`` times t per example, spread evenly
        over (0, 1] from one uniform offset per example (antithetic: each draw is still U(0, 1]).
        Costs ``draws`` network evaluations per batch. Needs a continuous schedule with a noisy z_0
        (VDM's) and a parameterization that gives eps."""
        if not (self.schedule.continuous and self.schedule.noisy_start):
            raise GendiffError(
                f"the continuous-time bound needs a continuous-time schedule with a finite SNR at t = 0 (one that "
                f"provides \"finite-snr\", e.g. vdm-fixed); schedule '{self.schedule.name}' is not one, so its bound "
                f"is the T-step bound (nll_bpd)")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be a positive integer, got {draws!r}")
        batch, scale = x0.shape[0], 1.0 / (self.dims * math.log(2.0))
        cond = self.checked_labels(cond, batch, x0.device)
        prior = sum_flat(self.schedule.prior_kl(x0)) * scale
        rec = sum_flat(self.schedule.reconstruction(x0, self.schedule.noise_like(x0, generator), self.levels)) * scale
        where = generator.device if generator is not None else x0.device
        offset = torch.rand(batch, 1, generator=generator, device=where, dtype=torch.float64)
        times = (1.0 - torch.remainder(offset + torch.arange(draws, device=where, dtype=torch.float64) / draws, 1.0))
        diffusion = torch.empty(batch, draws, dtype=x0.dtype, device=x0.device)
        for j in range(draws):
            t = times[:, j].to(x0.device)
            noise = self.schedule.noise_like(x0, generator)
            z_t = self.schedule.q_sample(x0, t, noise)
            eps_hat = self.predict(z_t, t, cond=cond).eps
            _, dlam = self.schedule.log_snr_and_derivative(t)
            diffusion[:, j] = 0.5 * (-dlam).to(x0.dtype) * sum_flat((noise - eps_hat) ** 2) * scale
        return ContinuousNLL(prior, rec, diffusion)
