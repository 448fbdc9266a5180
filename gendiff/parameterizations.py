"""Parameterizations: what the network predicts, and how that becomes x0_hat, eps_hat and the
reverse mean mu_theta (Sec. 3.2 of the paper; eqs. 4, 7, 11, 15).

Interface: :class:`Parameterization`. A Gaussian parameterization gives three maps; everything
else (the clipped prediction, the mean) is derived once in :meth:`Parameterization.predict`:

- ``target(x0, noise, x_t, t, schedule)``: what the network should output (the regression
  target of the "simple" loss);
- ``to_x0`` and ``to_eps``: the network output expressed as x0_hat and eps_hat;
- ``to_mean`` (optional): the reverse mean; by default mu~_t(x_t, x0_hat) of eq. 7, which for the
  eps parameterization is exactly eq. 11.

All views are the same model family (the "unified perspective"): the round trip
``to_x0(target(x0, eps, ...))`` returns x0 for every parameterization. Time convention: the
schedule's (the paper's t in {1..T}, an integer tensor (B,), for a discrete schedule; t in (0, 1]
for a continuous one, where the x0 and eps views exist at any t and the mean on the grid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch
from torch import Tensor

from .component import Component
from .distributions import is_masked, levels_to_unit


class Prediction:
    """The network's prediction in every view the rest of gendiff needs.

    ``x0``: x0_hat (eq. 15); ``eps``: eps_hat; ``mean``: mu_theta(x_t, t), the reverse mean;
    ``logits``: per-level logits, for parameterizations of discrete reverse processes. A
    parameterization fills the views it provides (its ``provides`` tags) and leaves the rest None.
    The mean may be given lazily (``mean_fn``): it is formed on first use, so training at times
    where only the forward marginal is defined (a continuous schedule) never needs it.
    """

    def __init__(self, x0: Tensor, eps: Tensor | None = None, mean: Tensor | None = None,
                 logits: Tensor | None = None, *, mean_fn: Callable[[], Tensor] | None = None):
        self.x0, self.eps, self.logits = x0, eps, logits
        self._mean, self._mean_fn = mean, mean_fn

    @property
    def mean(self) -> Tensor | None:
        if self._mean is None and self._mean_fn is not None:
            self._mean, self._mean_fn = self._mean_fn(), None
        return self._mean

    def detach(self) -> "Prediction":
        """The same prediction cut from the graph (no gradient flows back through it)."""
        return Prediction(_detach(self.x0), _detach(self.eps), None, _detach(self.logits),
                          mean_fn=lambda: _detach(self.mean))

    def __repr__(self) -> str:
        views = [name for name in ("x0", "eps", "mean", "logits") if getattr(self, name) is not None]
        return f"Prediction({', '.join(views)})"


def _detach(value: Tensor | None) -> Tensor | None:
    return None if value is None else value.detach()


class Parameterization(Component, ABC):
    """What the network predicts: ``out_channels`` says how many output channels it needs and
    ``predict`` turns the network output into a :class:`Prediction`."""

    family: ClassVar[str] = "parameterization"

    def out_channels(self, data_channels: int, levels: int) -> int:
        """Network output channels this parameterization needs (one value per data channel)."""
        return data_channels

    @abstractmethod
    def predict(self, output: Tensor, x_t: Tensor, t: Tensor, schedule, clip_x0: bool = False) -> Prediction:
        """The network output in the views this parameterization provides."""

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """The regression target of the network (parameterizations that provide "regression")."""
        raise NotImplementedError(f"parameterization '{self.name}' has no regression target")


class GaussianParameterization(Parameterization):
    """A parameterization of a Gaussian reverse mean. Subclasses implement ``target``, ``to_x0``
    and ``to_eps``; ``to_mean`` defaults to the posterior mean of eq. 7."""

    provides: ClassVar[frozenset[str]] = frozenset({"mean", "eps", "regression"})
    requires = {"schedule": frozenset({"gaussian"})}

    @abstractmethod
    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """The regression target of the network for x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) noise."""

    @abstractmethod
    def to_x0(self, output: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """x0_hat from the network output."""

    @abstractmethod
    def to_eps(self, output: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """eps_hat from the network output."""

    def to_mean(self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """mu_theta(x_t, t): by default the posterior mean mu~_t(x_t, x0_hat) of eq. 7."""
        return schedule.posterior_mean(x0, x_t, t)

    def clipped_mean(self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """The reverse mean when x0_hat is clipped to [-1, 1] (sampling only): mu~_t(x_t, clip(x0_hat))
        of eq. 7, as the official sampler forms it from the clipped prediction."""
        return schedule.posterior_mean(x0, x_t, t)

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor, schedule, clip_x0: bool = False) -> Prediction:
        """The network output in every view. With ``clip_x0`` (sampling, or the official clipped
        bound) x0_hat is clipped to [-1, 1], eps is re-derived from it and the mean is
        :meth:`clipped_mean`. The mean is formed lazily, on first use."""
        x0 = self.to_x0(output, x_t, t, schedule)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            return Prediction(x0, schedule.eps_from_x0(x_t, t, x0),
                              mean_fn=lambda: self.clipped_mean(output, x0, x_t, t, schedule))
        eps = self.to_eps(output, x_t, t, schedule)
        return Prediction(x0, eps, mean_fn=lambda: self.to_mean(output, x0, x_t, t, schedule))


class EpsParameterization(GaussianParameterization):
    """eps-prediction (eq. 11): the network predicts the noise; x0_hat by eq. 15, and
    mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t)."""

    name = "eps"

    def target(self, x0, noise, x_t, t, schedule):
        return noise

    def to_eps(self, output, x_t, t, schedule):
        return output

    def to_x0(self, output, x_t, t, schedule):
        return schedule.x0_from_eps(x_t, t, output)

    def to_mean(self, output, x0, x_t, t, schedule):
        # eq. 11, written directly (it equals mu~_t(x_t, x0_hat) exactly)
        coef = schedule.at("beta", t, x_t) / schedule.at("sqrt_one_minus_abar", t, x_t)
        return (x_t - coef * output) / schedule.at("sqrt_alpha", t, x_t)


class X0Parameterization(GaussianParameterization):
    """x0-prediction: the network predicts x0 directly; mu_theta = mu~_t(x_t, x0_hat) (eq. 7)."""

    name = "x0"

    def target(self, x0, noise, x_t, t, schedule):
        return x0

    def to_x0(self, output, x_t, t, schedule):
        return output

    def to_eps(self, output, x_t, t, schedule):
        return schedule.eps_from_x0(x_t, t, output)


class MeanParameterization(GaussianParameterization):
    """mu-prediction, the paper's baseline (Table 2): the network outputs mu_theta(x_t, t)
    itself; x0_hat inverts eq. 7, x0 = (mu - coef_xt x_t) / coef_x0 (coef_x0 > 0 for all t).

    With ``clip_x0`` the mean stays the network's own and only the displayed x0_hat is clipped,
    as in the official code (``_predict_xstart_from_xprev``, then clipping) and improved-diffusion
    (``PREVIOUS_X``). Its target is eq. 7's posterior mean, one grid step back: a discrete-time
    schedule is required."""

    name = "mu"
    requires = {"schedule": frozenset({"gaussian", "discrete-time"})}

    def target(self, x0, noise, x_t, t, schedule):
        return schedule.posterior_mean(x0, x_t, t)

    def to_x0(self, output, x_t, t, schedule):
        return (output - schedule.at("posterior_coef_xt", t, x_t) * x_t) / schedule.at(
            "posterior_coef_x0", t, x_t
        )

    def to_eps(self, output, x_t, t, schedule):
        return schedule.eps_from_x0(x_t, t, self.to_x0(output, x_t, t, schedule))

    def to_mean(self, output, x0, x_t, t, schedule):
        return output

    def clipped_mean(self, output, x0, x_t, t, schedule):
        return output  # the network's mean; clipping changes only x0_hat (and the eps derived from it)


class VParameterization(GaussianParameterization):
    """v-prediction (Salimans & Ho 2022): v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0, so
    x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v and eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""

    name = "v"

    def target(self, x0, noise, x_t, t, schedule):
        return schedule.at("sqrt_abar", t, x0) * noise - schedule.at("sqrt_one_minus_abar", t, x0) * x0

    def to_x0(self, output, x_t, t, schedule):
        return schedule.at("sqrt_abar", t, x_t) * x_t - schedule.at("sqrt_one_minus_abar", t, x_t) * output

    def to_eps(self, output, x_t, t, schedule):
        return schedule.at("sqrt_one_minus_abar", t, x_t) * x_t + schedule.at("sqrt_abar", t, x_t) * output


class ScoreParameterization(GaussianParameterization):
    """Score-prediction (the unified view, Tweedie): s = grad log q(x_t) = -eps / sqrt(1 - abar_t);
    mu_theta = (x_t + beta_t s_theta) / sqrt(alpha_t)."""

    name = "score"

    def target(self, x0, noise, x_t, t, schedule):
        return -noise / schedule.at("sqrt_one_minus_abar", t, x0)

    def to_eps(self, output, x_t, t, schedule):
        return -schedule.at("sqrt_one_minus_abar", t, x_t) * output

    def to_x0(self, output, x_t, t, schedule):
        return schedule.x0_from_eps(x_t, t, self.to_eps(output, x_t, t, schedule))

    def to_mean(self, output, x0, x_t, t, schedule):
        return (x_t + schedule.at("beta", t, x_t) * output) / schedule.at("sqrt_alpha", t, x_t)


class X0Logits(Parameterization):
    """x0 logits for a masking process (Sec. 4.3): for every coordinate, logits over its K levels,
    p_theta(x0^d = k | x_t). The network outputs C x K channels (channel c * K + k). x0_hat is the
    expected value for masked coordinates and x_t itself where x_t is revealed."""

    name = "x0-logits"
    provides = frozenset({"logits"})
    requires = {"schedule": frozenset({"masking"})}

    def out_channels(self, data_channels: int, levels: int) -> int:
        return data_channels * levels

    def predict(self, output, x_t, t, schedule, clip_x0: bool = False) -> Prediction:
        batch, channels = x_t.shape[:2]
        logits = output.reshape(batch, channels, -1, *x_t.shape[2:])
        levels = logits.shape[2]
        values = levels_to_unit(torch.arange(levels, device=x_t.device), levels).to(x_t.dtype)
        expect = (torch.softmax(logits.to(x_t.dtype), dim=2) * values.view(1, 1, -1, 1, 1)).sum(2)
        return Prediction(torch.where(is_masked(x_t), expect, x_t), logits=logits)
