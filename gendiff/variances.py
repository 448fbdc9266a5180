"""Variances: the reverse transition p_theta(x_{t-1} | x_t) given the predicted mean
(Sec. 3.2 and Table 2 of the paper; Improved DDPM's learned range).

Interface: :class:`Variance`. A variance says how many extra network output channels it needs
(:meth:`Variance.out_channels`) and turns the prediction into the reverse distribution
(:meth:`Variance.transition`). For the Gaussian family that is N(mu_theta, sigma_t^2 I) with
log sigma_t^2 from :meth:`Variance.log_variance`.

Time convention: the schedule's grid step t in {1..T} (the paper's t, an integer tensor (B,),
for a discrete schedule; t = i / T for a continuous one). At the first step both fixed choices
use beta~_2, as the official code does (beta~_1 = 0 would make log sigma_1^2 = -inf).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from .component import Component
from .distributions import Categorical, Gaussian
from .parameterizations import Prediction


class ReverseFamily(Component, ABC):
    """The reverse transition's distribution family (the "variance" family of recipes)."""

    family: ClassVar[str] = "variance"

    def out_channels(self, data_channels: int) -> int:
        """Extra network output channels (0 for a fixed variance)."""
        return 0

    @abstractmethod
    def transition(self, prediction: Prediction, var_output: Tensor | None, x_t: Tensor, t: Tensor, schedule):
        """p_theta(x_{t-1} | x_t) from the prediction at x_t."""


class Variance(ReverseFamily):
    """The reverse transition's Gaussian spread around the predicted mean."""

    provides: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"mean"})}

    @abstractmethod
    def log_variance(self, var_output: Tensor | None, x_t: Tensor, t: Tensor, schedule) -> Tensor:
        """log sigma_t^2, broadcastable to x_t. ``var_output`` is the network's extra output
        (``None`` when :meth:`out_channels` is 0)."""

    def transition(
        self, prediction: Prediction, var_output: Tensor | None, x_t: Tensor, t: Tensor, schedule
    ) -> Gaussian:
        """p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) (eq. 1)."""
        return Gaussian(prediction.mean, self.log_variance(var_output, x_t, t, schedule))


class FixedLarge(Variance):
    """sigma_t^2 = beta_t (optimal for x0 ~ N(0, I)), with beta~_2 at t = 1 as in the official
    code; the official CIFAR-10 default."""

    name = "fixed-large"

    def log_variance(self, var_output, x_t, t, schedule):
        return schedule.at("log_fixed_large", t, x_t)


class FixedSmall(Variance):
    """sigma_t^2 = beta~_t (eq. 7; optimal for a single point x0), beta~_2 at t = 1."""

    name = "fixed-small"

    def log_variance(self, var_output, x_t, t, schedule):
        return schedule.at("log_posterior_variance", t, x_t)


class Learned(Variance):
    """A free diagonal Sigma_theta(x_t, t): the network outputs log sigma^2 per element
    (the paper's "learned diagonal Sigma", found unstable in Table 2)."""

    name = "learned"
    provides = frozenset({"gaussian", "learned"})
    #: a fixed-target loss (simple, mse-mu) gives the variance head no gradient: it would never move
    requires = {**Variance.requires, "weighting": frozenset({"trains-variance"})}

    def out_channels(self, data_channels: int) -> int:
        return data_channels

    def log_variance(self, var_output, x_t, t, schedule):
        return var_output


class LearnedRange(Variance):
    """Improved DDPM (Nichol & Dhariwal 2021, eq. 15): the network outputs v in [-1, 1] (mapped
    from its raw output by (v + 1) / 2 = frac) and log sigma^2 = frac log beta_t + (1 - frac) log beta~_t."""

    name = "learned-range"
    provides = frozenset({"gaussian", "learned"})
    requires = Learned.requires

    def out_channels(self, data_channels: int) -> int:
        return data_channels

    def log_variance(self, var_output, x_t, t, schedule):
        frac = (var_output + 1.0) / 2.0
        log_max = schedule.at("log_beta", t, x_t)
        log_min = schedule.at("log_posterior_variance", t, x_t)
        return frac * log_max + (1.0 - frac) * log_min


__all__ = ["ReverseFamily", "Variance", "FixedLarge", "FixedSmall", "Learned", "LearnedRange", "CategoricalReveal"]


class CategoricalReveal(ReverseFamily):
    """The masking counterpart of the Gaussian variance (Sec. 4.3): p_theta(x_{t-1} | x_t)
    reveals the coordinates of step t, each drawn from its categorical over the K levels
    (the parameterization's logits), and copies the rest of x_t."""

    name = "categorical"
    provides = frozenset({"categorical"})
    requires = {"schedule": frozenset({"masking"}), "parameterization": frozenset({"logits"})}

    def transition(self, prediction, var_output, x_t, t, schedule) -> Categorical:
        return Categorical(prediction.logits, x_t, schedule.reveal_weights(x_t, t),
                           lambda generator: schedule.choose_reveal(x_t, t, generator))
