"""The composed model: a diffusion assembled from one component of each family.

:class:`Diffusion` implements the paper's quantities by delegating to its components; it never
asks a component what kind it is. The forward process and time belong to the schedule, the
network's output is read by the parameterization and the variance, the bound is
:mod:`gendiff.bound`, Algorithm 1's objective :mod:`gendiff.objective`, and sampling the sampler's.

Conditioning (:mod:`gendiff.conditioning`): a conditional model's network also sees labels
``cond``; :meth:`Diffusion.conditioned` gives a view of the model with labels and a guidance
weight fixed, which is what samplers receive, so classifier-free guidance is applied in one
place (:meth:`Diffusion.network`) for every sampler.

Time convention: the schedule's (the paper's t in {1..T} as an integer tensor (B,) for a
discrete schedule; t in (0, 1] for a continuous one). Data are on the paper's scale [-1, 1]
(K levels: x = 2k/(K-1) - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .backbones.base import run_network
from .bound import NLL, BoundMixin, BoundTerm, sum_flat
from .conditioning import Conditioning
from .objective import ObjectiveMixin
from .parameterizations import Prediction
from .time_samplers import Uniform

__all__ = ["COMPONENT_FAMILIES", "Diffusion", "NLL", "BoundTerm", "ReverseStep", "sum_flat"]

#: the families of a composed model's components (:meth:`Diffusion.components`), backbone first
COMPONENT_FAMILIES = ("backbone", "schedule", "parameterization", "variance", "weighting", "sampler", "time_sampler")


@dataclass
class ReverseStep:
    """One network evaluation: the reverse distribution and the prediction it came from."""

    p: Any
    prediction: Prediction


class ComponentsMixin:
    """The composed model's components as a whole (a part of :class:`Diffusion`): listing them,
    the trainable ones (the trainable-component contract, docs/plugins.md) and their hooks."""

    def components(self) -> dict[str, Any]:
        """The model's component of every family, by family (backbone first)."""
        return {family: getattr(self, family) for family in COMPONENT_FAMILIES}

    def trainable(self) -> dict[str, nn.Module]:
        """The components that hold parameters, by family, backbone first: what the trainer
        optimises, the EMA averages and every checkpoint stores (the trainable-component contract,
        docs/plugins.md). Any family's component may be one: an ``nn.Module`` with parameters."""
        found = {}
        for family, comp in self.components().items():
            params = getattr(comp, "parameters", None)  # an nn.Module's
            if callable(params) and next(params(), None) is not None:
                found[family] = comp
        return found

    def with_components(self, **replace) -> "Diffusion":
        """The same composed model with some components replaced, by family (e.g. the EMA copies
        of every trainable component); the rest are shared."""
        unknown = set(replace) - set(COMPONENT_FAMILIES)
        if unknown:
            raise KeyError(f"not a component family of the model: {', '.join(sorted(unknown))}")
        parts = {**self.components(), **replace}
        twin = Diffusion(parts["schedule"], parts["parameterization"], parts["variance"], parts["weighting"],
                         parts["sampler"], parts["backbone"], self.data_shape, self.levels, parts["time_sampler"],
                         self.conditioning)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("recipe", "dataset")})
        return twin

    def after_backward(self, losses: Tensor) -> None:
        """Tell every trainable component that a backward pass of the mean of ``losses`` (B,)
        (this process's per-example losses, before importance weights) is done: a component that
        shapes its own gradient (``after_backward(losses)``, e.g. VDM's variance-minimising
        schedule) completes it here. The trainer calls this after every micro-batch."""
        for comp in self.trainable().values():
            hook = getattr(comp, "after_backward", None)
            if hook is not None:
                hook(losses)

    def parameter_problems(self) -> list[str]:
        """What each trainable component says is wrong with its current parameters
        (``check_parameters() -> str | None``, e.g. a learned schedule that is no longer monotone);
        the trainer asks after every optimizer step."""
        problems = []
        for comp in self.trainable().values():
            check = getattr(comp, "check_parameters", None)
            problem = check() if check is not None else None
            if problem:
                problems.append(problem)
        return problems


class Diffusion(ComponentsMixin, BoundMixin, ObjectiveMixin, nn.Module):
    """A diffusion model composed of a schedule, a parameterization, a variance, a loss
    weighting, a backbone, a sampler and a time sampler (see :func:`gendiff.build`).

    Args:
        schedule, parameterization, variance, weighting, sampler: component instances.
        backbone: the network, ``backbone(x, t) -> output``, or ``backbone(x, t, cond)`` for a
            conditional model (an ``nn.Module`` or any callable).
        data_shape: (C, H, W) of one example.
        levels: K, the number of discrete data levels (the decoder's bins follow it).
        time_sampler: how training draws t (default: uniform, Algorithm 1).
        conditioning: the class conditioning (default: none).
    """

    def __init__(self, schedule, parameterization, variance, weighting, sampler,
                 backbone: nn.Module | Callable[..., Tensor], data_shape: tuple[int, int, int], levels: int = 256,
                 time_sampler=None, conditioning: Conditioning | None = None):
        super().__init__()
        self.schedule = schedule
        self.parameterization = parameterization
        self.variance = variance
        self.weighting = weighting
        self.sampler = sampler
        self.time_sampler = time_sampler or Uniform()
        self.conditioning = conditioning or Conditioning()
        self.backbone = backbone
        self.data_shape = tuple(int(d) for d in data_shape)
        self.levels = int(levels)
        channels = self.data_shape[0]
        #: how the network output splits: (parameterization's share, variance's share)
        self.output_split = (
            parameterization.out_channels(channels, self.levels),
            variance.out_channels(channels),
        )
        self.cond: Tensor | None = None  #: the labels of a conditioned view (see :meth:`conditioned`)
        self.guidance = 0.0  #: the guidance weight of a conditioned view

    def with_backbone(self, backbone) -> "Diffusion":
        """The same composed model around another network."""
        return self.with_components(backbone=backbone)

    def conditioned(self, cond, guidance: float | None = None) -> "Diffusion":
        """A view of this model whose network always sees the labels ``cond`` (B,) (or one
        label for every example) with classifier-free guidance weight ``guidance`` (default: the
        recipe's ``[conditioning] guidance``; 0 is the plain conditional model). Samplers and
        analyses take the view as their model, unchanged."""
        view = self.with_backbone(self.backbone)
        view.cond = self.conditioning.labels(cond, device=self.device)
        view.guidance = self.conditioning.check_guidance(guidance)
        return view

    def checked_labels(self, cond, batch: int, device=None) -> Tensor | None:
        """``cond`` checked against this model's conditioning (None passes as None)."""
        return None if cond is None else self.conditioning.labels(cond, batch, device)

    # -- small helpers -----------------------------------------------------------------------
    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps (of the schedule's grid)."""
        return self.schedule.timesteps

    @property
    def dims(self) -> int:
        """D, the number of data dimensions per example."""
        return math.prod(self.data_shape)

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def time(self, t: int, batch: int, device=None) -> Tensor:
        """Grid step ``t`` in {1..T} as the schedule's time, repeated for a batch: the paper's t
        as a LongTensor (discrete schedules) or t / T in float64 (continuous)."""
        return self.schedule.times(t, batch, device)

    # -- the forward process (delegated to the schedule) ---------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0) (eq. 4); ``noise`` defaults to fresh randomness."""
        if noise is None:
            noise = self.schedule.noise_like(x0)
        return self.schedule.q_sample(x0, t, noise)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of q(x_{t-1} | x_t, x0) (eqs. 6, 7). At t = 1 the variance follows
        the official code's clipped value (see :meth:`GaussianSchedule.q_posterior`)."""
        q = self.schedule.q_posterior(x0, x_t, t)
        return q.mean, q.variance

    def prior_sample(self, shape, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ p(x_T) on the model's device."""
        return self.schedule.prior_sample(tuple(shape), generator=generator, device=self.device)

    # -- the reverse process -----------------------------------------------------------------
    def network(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Run the backbone; return (the parameterization's output, the variance's output or None).

        ``cond`` (B,) overrides a conditioned view's labels. With a guidance weight w > 0 the
        network runs on the labels and on the null label in one doubled batch, and the
        parameterization's output is (1 + w) out(c) - w out(null) (:meth:`Conditioning.guide`);
        the variance's output is the conditional one."""
        cond = self.cond if cond is None else cond
        x_in, t_in = self.schedule.model_input(x_t, t), self.schedule.network_time(t)
        if cond is None:
            return self._split(self._run_backbone(x_in, t_in))
        cond = cond.expand(x_t.shape[0]) if len(cond) == 1 else cond
        if not self.guidance:
            return self._split(self._run_backbone(x_in, t_in, cond))
        null = torch.full_like(cond, self.conditioning.null)
        both = self._run_backbone(torch.cat([x_in, x_in]), torch.cat([t_in, t_in]), torch.cat([cond, null]))
        (head, var), (head_null, _) = (self._split(half) for half in both.chunk(2))
        return self.conditioning.guide(head, head_null, self.guidance), var

    def _run_backbone(self, x_in: Tensor, *rest: Tensor) -> Tensor:
        """The backbone's output for one batch, checked (:func:`~gendiff.backbones.base.run_network`):
        a network that fails or returns the wrong thing is a :class:`BackboneError` naming it."""
        return run_network(self.backbone, (len(x_in), sum(self.output_split), *self.data_shape[1:]), x_in, *rest)

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.output_split[1] == 0:
            return out, None
        head, var = torch.split(out, self.output_split, dim=1)
        return head, var

    def predict(self, x_t: Tensor, t: Tensor, clip_x0: bool = False, cond=None) -> Prediction:
        """The network's prediction (x0_hat, eps_hat, mu_theta) at x_t."""
        head, _ = self.network(x_t, t, cond)
        return self.parameterization.predict(head, x_t, t, self.schedule, clip_x0=clip_x0)

    def reverse_step(self, x_t: Tensor, t: Tensor, clip_x0: bool = False, cond=None) -> ReverseStep:
        """One network evaluation at x_t: the reverse distribution p_theta(x_{t-1} | x_t) (eq. 1)
        together with the prediction it came from."""
        head, var = self.network(x_t, t, cond)
        pred = self.parameterization.predict(head, x_t, t, self.schedule, clip_x0=clip_x0)
        return ReverseStep(self.variance.transition(pred, var, x_t, t, self.schedule), pred)

    def p_transition(self, x_t: Tensor, t: Tensor, clip_x0: bool = False, cond=None):
        """p_theta(x_{t-1} | x_t) as a distribution (eq. 1)."""
        return self.reverse_step(x_t, t, clip_x0, cond).p

    def p_mean_variance(self, x_t: Tensor, t: Tensor, clip_x0: bool = False, cond=None) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, variance, x0_hat) of p_theta(x_{t-1} | x_t)."""
        step = self.reverse_step(x_t, t, clip_x0, cond)
        return step.p.mean, step.p.variance, step.prediction.x0

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler=None,
               progress: Callable[[int, int], None] | None = None, cond=None,
               guidance: float | None = None) -> Tensor:
        """``n`` samples x0 in [-1, 1], shape (n, C, H, W), drawn with the recipe's sampler (or
        ``sampler``). A conditional model samples classes ``cond`` (default: 0, 1, ..., K-1 in
        turn) with guidance weight ``guidance`` (default: the recipe's)."""
        model = self
        if self.conditioning.active:
            labels = self.conditioning.default_labels(n) if cond is None else cond
            model = self.conditioned(self.conditioning.labels(labels, n), guidance)
        elif cond is not None:
            self.conditioning.labels(cond)  # raises: this model takes no labels
        elif guidance:
            self.conditioning.check_guidance(guidance)  # raises: guidance needs a conditional model
        return (sampler or self.sampler).sample(model, (n, *self.data_shape), generator, progress)
