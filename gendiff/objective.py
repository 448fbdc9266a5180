"""Algorithm 1's objective (a part of :class:`gendiff.diffusion.Diffusion`): the draws of one
training batch and the loss the recipe's weighting forms from them.

Per batch: t from the time sampler (Algorithm 1's t ~ U{1..T} by default), the forward
randomness, the labels after label dropout (conditional models), x_t ~ q(x_t | x0) and one
network evaluation. The weighting turns them into per-example losses; the time sampler's
importance weights multiply them; the mean is the training loss.

Data-parallel training and gradient accumulation: ``share`` (:class:`Share`) says which rows of
the step's global batch ``x0`` holds; every draw (t, the noise, label dropout) is made for the whole
global batch and this share's rows kept, so the draws depend neither on the number of processes
nor on the number of micro-batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dataclasses import dataclass

from .bound import sum_flat
from .errors import GendiffError
from .parameterizations import Prediction
from .weightings import LossTerms


@dataclass(frozen=True)
class Share:
    """Which rows of a global batch a call sees: process ``rank`` of ``world`` holds the rows
    rank, rank + world, ... (its local batch, as ``DistributedSampler`` deals them), cut into
    ``count`` consecutive micro-batches of which this is number ``index``. With n rows per call
    the global batch has ``n * world * count`` rows. ``(rank, world)`` tuples are accepted."""

    rank: int = 0
    world: int = 1
    index: int = 0
    count: int = 1

    @classmethod
    def of(cls, share) -> "Share":
        return share if isinstance(share, Share) else cls(*share)

    def total(self, n: int) -> int:
        """The global batch size for n rows per call."""
        return n * self.world * self.count

    def take(self, draws: Tensor, n: int) -> Tensor:
        """This call's n rows of draws made for the global batch."""
        start = self.rank + self.world * self.index * n
        return draws[start:start + self.world * n:self.world]


class ObjectiveMixin:
    """The training objective's methods of the composed model (see the module docstring)."""

    def loss_terms(self, x0: Tensor, generator: torch.Generator | None = None,
                   share: Share | tuple[int, int] = (0, 1), cond=None) -> LossTerms:
        """Algorithm 1's draws for a batch x0 in [-1, 1] (with its labels ``cond`` for a
        conditional model) and the network's answer, as a :class:`LossTerms`."""
        share, n = Share.of(share), x0.shape[0]
        batch = share.total(n)
        t, importance = self.time_sampler.sample(batch, self.schedule, generator, x0.device)
        t = share.take(t, n)
        importance = None if importance is None else share.take(importance, n)
        shape = x0.new_empty((batch, *x0.shape[1:])) if batch != n else x0
        noise = share.take(self.schedule.noise_like(shape, generator), n)
        if self.conditioning.active:
            if cond is None:
                raise GendiffError("this model is class-conditional: training needs the labels of x0 (cond=labels).")
            cond = self.checked_labels(cond, n, x0.device)
            if self.conditioning.label_dropout:  # drawn for the global batch, after t and the noise
                cond = self.conditioning.drop(cond, share.take(torch.rand(batch, generator=generator,
                                                                          device=x0.device), n))
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

        def endpoints_fn() -> Tensor:
            prior = sum_flat(self.schedule.prior_kl(x0))
            rec = self.schedule.reconstruction(x0, noise, self.levels)
            return (prior if rec is None else prior + sum_flat(rec)) * scale

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
            endpoints_fn=endpoints_fn,
        )

    def objective(self, terms: LossTerms) -> tuple[Tensor, Tensor]:
        """(the scalar training loss, the weighting's per-example losses (B,)): the mean over
        the batch of the per-example losses times the time sampler's importance weights."""
        losses = self.weighting.loss(terms)
        weighted = losses if terms.importance is None else losses * terms.importance
        return weighted.mean(), losses

    def training_loss(self, x0: Tensor, generator: torch.Generator | None = None,
                      share: Share | tuple[int, int] = (0, 1), cond=None) -> Tensor:
        """The recipe's training loss for a batch x0 in [-1, 1] (Algorithm 1), a scalar."""
        return self.objective(self.loss_terms(x0, generator, share, cond))[0]
