"""Algorithm 1's objective (a part of :class:`gendiff.diffusion.Diffusion`): the draws of one
training batch and the loss the recipe's weighting forms from them.

Per batch: t from the time sampler (Algorithm 1's t ~ U{1..T} by default), the forward
randomness, the labels after label dropout (conditional models), x_t ~ q(x_t | x0) and one
network evaluation. The weighting turns them into per-example losses; the time sampler's
importance weights multiply them; the mean is the training loss.

Data-parallel training: ``share = (rank, world)`` says ``x0`` holds rows ``rank::world`` of a
global batch of ``world * len(x0)`` examples; every draw is made for the global batch and this
share's rows kept, so the draws do not depend on ``world``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .bound import sum_flat
from .errors import GendiffError
from .parameterizations import Prediction
from .weightings import LossTerms


class ObjectiveMixin:
    """The training objective's methods of the composed model (see the module docstring)."""

    def loss_terms(self, x0: Tensor, generator: torch.Generator | None = None,
                   share: tuple[int, int] = (0, 1), cond=None) -> LossTerms:
        """Algorithm 1's draws for a batch x0 in [-1, 1] (with its labels ``cond`` for a
        conditional model) and the network's answer, as a :class:`LossTerms`."""
        rank, world = share
        batch = x0.shape[0] * world
        t, importance = self.time_sampler.sample(batch, self.schedule, generator, x0.device)
        t = t[rank::world]
        importance = None if importance is None else importance[rank::world]
        shape = x0.new_empty((batch, *x0.shape[1:])) if world > 1 else x0
        noise = self.schedule.noise_like(shape, generator)[rank::world]
        if self.conditioning.active:
            if cond is None:
                raise GendiffError("this model is class-conditional: training needs the labels of x0 (cond=labels).")
            cond = self.conditioning.drop(self.checked_labels(cond, x0.shape[0], x0.device), generator, share)
        else:
            cond = self.checked_labels(cond, x0.shape[0], x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        head, var = self.network(x_t, t, cond)
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
            schedule=self.schedule,
            parameterization=self.parameterization,
            cond=cond,
            importance=importance,
        )

    def objective(self, terms: LossTerms) -> tuple[Tensor, Tensor]:
        """(the scalar training loss, the weighting's per-example losses (B,)): the mean over
        the batch of the per-example losses times the time sampler's importance weights."""
        losses = self.weighting.loss(terms)
        weighted = losses if terms.importance is None else losses * terms.importance
        return weighted.mean(), losses

    def training_loss(self, x0: Tensor, generator: torch.Generator | None = None,
                      share: tuple[int, int] = (0, 1), cond=None) -> Tensor:
        """The recipe's training loss for a batch x0 in [-1, 1] (Algorithm 1), a scalar."""
        return self.objective(self.loss_terms(x0, generator, share, cond))[0]
