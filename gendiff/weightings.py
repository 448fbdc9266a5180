"""Loss weightings: how one training example's loss is formed from its sampled time
(eqs. 8, 12, 14 of the paper; Table 2's ablations; Improved DDPM's hybrid loss; min-SNR-gamma
and P2, which weight by the schedule's signal-to-noise ratio).

Interface: :class:`LossWeighting` with one method, ``loss(terms) -> (B,)``. ``terms`` is a
:class:`LossTerms`: the sampled t, x0, noise, x_t and the network's prediction, the schedule and
the parameterization, plus the pieces a weighting combines, each computed only when asked for:

- :meth:`LossTerms.mse`: mean squared error between the network output and its
  parameterization's target (eq. 14 for eps), or in another view: ``mse("x0")``,
  ``mse("eps")``, ``mse("v")``;
- :meth:`LossTerms.snr` and :meth:`LossTerms.log_snr`: SNR(t) = abar_t / (1 - abar_t) per example;
- :meth:`LossTerms.bound`: an unbiased one-sample estimate of the whole variational bound
  (eq. 5), L_T + T * L_{t-1}, in nats per dimension, every term in closed form;
- :meth:`LossTerms.mean_mse`: ||mu~_t - mu_theta||^2 per dimension (Table 2's unweighted MSE);
- :meth:`LossTerms.endpoints`: the bound's prior and reconstruction terms, L_T - log p(x0 | z_0),
  per dimension, with their gradient to the schedule (VDM's bound; the reconstruction is 0 for a
  schedule whose z_0 is the data);
- :meth:`LossTerms.log_snr_and_derivative`: lambda(t) and lambda'(t) at the training times.

VDM's weightings (Kingma et al. 2021) train the schedule as well: ``vdm`` is the continuous-time
bound (VDM eq. 17) and ``vdm-discrete`` the T-step one (VDM eq. 14); both provide
``trains-schedule``, which a learned schedule requires.

How t is drawn is the time sampler's business (:mod:`gendiff.time_samplers`); its importance
weights are applied by the composed model, not by the weighting. Time convention: ``terms.t`` is
in the schedule's convention (the paper's t in {1..T} for a discrete schedule). Weightings that
need the bound or the mean at the training times require a ``discrete-time`` schedule; those that
train a learned variance provide ``trains-variance`` (a learned variance requires it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from .component import Component
from .parameterizations import Prediction


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension except the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


@dataclass
class LossTerms:
    """One batch of Algorithm 1's draws and the network's answer; pieces computed on demand."""

    x0: Tensor
    t: Tensor
    noise: Tensor
    x_t: Tensor
    output: Tensor  #: the parameterization's share of the network output
    prediction: Prediction
    var_output: Tensor | None
    #: ``target_fn() ->`` the parameterization's regression target (supplied by the model)
    target_fn: Callable[[], Tensor]
    #: ``bound_fn(prediction) -> (B,)`` nats/dim estimate of the bound (supplied by the model)
    bound_fn: Callable[[Prediction], Tensor]
    #: ``posterior_mean_fn() -> mu~_t`` (supplied by the model)
    posterior_mean_fn: Callable[[], Tensor]
    #: ``transition_fn() ->`` the reverse distribution p_theta(x_{t-1} | x_t) (supplied by the model)
    transition_fn: Callable[[], object]
    schedule: Any = None  #: the model's schedule (SNR, the views' coefficients)
    parameterization: Any = None  #: the model's parameterization
    cond: Tensor | None = None  #: the training labels after label dropout (None: unconditional)
    #: the time sampler's importance weights (B,) or None; the model applies them, not the weighting
    importance: Tensor | None = None
    #: ``endpoints_fn() -> (B,)`` nats: L_T + the reconstruction term (supplied by the model)
    endpoints_fn: Callable[[], Tensor] | None = None

    @property
    def target(self) -> Tensor:
        return self.target_fn()

    def snr(self) -> Tensor:
        """SNR(t) = abar_t / (1 - abar_t) per example, shape (B,), in x0's dtype (Gaussian schedules)."""
        return self.schedule.snr(self.t).to(self.x0.dtype)

    def log_snr(self) -> Tensor:
        """log SNR(t) per example, shape (B,), in x0's dtype (Gaussian schedules)."""
        return self.schedule.log_snr(self.t).to(self.x0.dtype)

    def mse(self, view: str | None = None) -> Tensor:
        """Mean squared error per example, shape (B,): of the network output against its
        parameterization's target (``view = None``; eq. 14 under eps), or between the truth and
        the prediction in the view ``"x0"``, ``"eps"`` or ``"v"`` (v = alpha_t eps - sigma_t x0,
        alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t); Gaussian parameterizations)."""
        if view is None:
            return mean_flat((self.target - self.output) ** 2)
        if view == "x0":
            return mean_flat((self.x0 - self.prediction.x0) ** 2)
        if view == "eps":
            return mean_flat((self.noise - self.prediction.eps) ** 2)
        if view == "v":
            a = self.schedule.at("sqrt_abar", self.t, self.x0)
            s = self.schedule.at("sqrt_one_minus_abar", self.t, self.x0)
            v = a * self.noise - s * self.x0
            v_hat = a * self.prediction.eps - s * self.prediction.x0
            return mean_flat((v - v_hat) ** 2)
        raise ValueError(f"unknown view {view!r}; use None, 'x0', 'eps' or 'v'")

    def bound(self, detach_prediction: bool = False) -> Tensor:
        """(L_T + T * L_{t-1}) / D in nats per dimension, shape (B,): a one-sample unbiased
        estimate of the bound (eq. 5), with L_0 = the discretized decoder (eq. 13) when t = 1.

        With ``detach_prediction`` the predicted mean gets no gradient, so only a learned
        variance is trained by it (Improved DDPM's hybrid loss)."""
        pred = self.prediction.detach() if detach_prediction else self.prediction
        return self.bound_fn(pred)

    def endpoints(self) -> Tensor:
        """(L_T - log p(x0 | z_0)) / D in nats per dimension, shape (B,): the prior term and the
        reconstruction term of the bound (VDM eq. 11), differentiable in the schedule's parameters.
        The reconstruction is 0 for a schedule whose z_0 is the data; the draw of z_0 uses ``noise``."""
        return self.endpoints_fn()

    def log_snr_and_derivative(self) -> tuple[Tensor, Tensor]:
        """(lambda(t), lambda'(t)) per example at the training times, float64 (B,), the derivative
        exact, both with their graph to the schedule's parameters (continuous Gaussian schedules)."""
        return self.schedule.log_snr_and_derivative(self.t)

    def mean_mse(self) -> Tensor:
        """mean_flat((mu~_t(x_t, x0) - mu_theta(x_t, t))^2), shape (B,)."""
        return mean_flat((self.posterior_mean_fn() - self.prediction.mean) ** 2)


class LossWeighting(Component, ABC):
    """Forms the per-example training loss from :class:`LossTerms`."""

    family: ClassVar[str] = "weighting"

    @abstractmethod
    def loss(self, terms: LossTerms) -> Tensor:
        """Per-example loss, shape (B,); the trainer averages it."""


class Simple(LossWeighting):
    """L_simple (eq. 14): the unweighted MSE of the parameterization's target. Under eps it is
    ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2; the paper's default."""

    name = "simple"
    requires = {"parameterization": frozenset({"regression"})}

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.mse()


class VLB(LossWeighting):
    """The true variational bound (eq. 5): the closed-form KLs of the reverse transitions for
    t > 1 plus the decoder term (eq. 13) at t = 1, L_T included, for any forward process. For a
    Gaussian process under eps with a fixed variance this is eq. 12's weighting of the eps MSE."""

    name = "vlb"
    provides = frozenset({"trains-variance"})
    requires = {"schedule": frozenset({"discrete-time"})}

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.bound()


class MeanMSE(LossWeighting):
    """The unweighted mean MSE of Table 2: ||mu~_t - mu_theta||^2 (eq. 8 without its 1/(2 sigma_t^2)
    weight; the paper found it unstable for mu-prediction)."""

    name = "mse-mu"
    requires = {"variance": frozenset({"gaussian"}), "schedule": frozenset({"discrete-time"})}

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.mean_mse()


class Hybrid(LossWeighting):
    """Improved DDPM's L_hybrid = L_simple + lambda L_vlb (lambda = 0.001), where the bound term
    sees a frozen mean so that it trains only the learned variance."""

    name = "hybrid"
    provides = frozenset({"trains-variance"})
    requires = {"variance": frozenset({"learned"}), "schedule": frozenset({"discrete-time"})}

    def __init__(self, vlb_weight: float = 0.001):
        if isinstance(vlb_weight, bool) or not isinstance(vlb_weight, (int, float)) or vlb_weight < 0:
            raise ValueError(f"vlb_weight must be a non-negative number, got {vlb_weight!r}")
        self.vlb_weight = float(vlb_weight)

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.mse() + self.vlb_weight * terms.bound(detach_prediction=True)


class MinSNR(LossWeighting):
    """Min-SNR-gamma (Hang et al. 2023): the x0 error weighted by min(SNR(t), gamma),
    min(SNR, gamma) ||x0 - x0_hat||^2, for any Gaussian parameterization. In the eps view this is
    min(SNR, gamma) / SNR ||eps - eps_hat||^2, in the v view min(SNR, gamma) / (SNR + 1) ||v - v_hat||^2
    (the paper's three forms), since ||x0 - x0_hat||^2 = ||eps - eps_hat||^2 / SNR = ||v - v_hat||^2 / (SNR + 1)
    at fixed x_t. gamma = 5 is the paper's choice."""

    name = "min-snr"
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, gamma: float = 5.0):
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma must be a positive number, got {gamma!r}")
        self.gamma = float(gamma)

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.snr().clamp(max=self.gamma) * terms.mse("x0")


class P2(LossWeighting):
    """Perception-prioritized weighting (Choi et al. 2022): the eps error weighted by
    1 / (k + SNR(t))^gamma, which lowers the weight of the nearly clean, high-SNR steps.
    gamma = 0 is L_simple (eq. 14); the paper uses k = 1 and gamma in {0.5, 1}."""

    name = "p2"
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, k: float = 1.0, gamma: float = 1.0):
        for label, v in (("k", k), ("gamma", gamma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{label} must be a number >= 0, got {v!r}")
        if k == 0 and gamma > 0:
            raise ValueError("k must be > 0 when gamma > 0 (the weight 1 / SNR^gamma is unbounded at t = T)")
        self.k, self.gamma = float(k), float(gamma)

    def loss(self, terms: LossTerms) -> Tensor:
        return terms.mse("eps") / (self.k + terms.snr()) ** self.gamma


class ContinuousVLB(LossWeighting):
    """VDM's continuous-time bound (Kingma et al. 2021, eq. 17) as the training loss, per dimension:

        L = L_T - log p(x0 | z_0) + 1/2 * (-lambda'(t)) * ||eps - eps_hat(z_t, t)||^2,   t ~ U(0, 1],

    lambda = log SNR = -gamma, so -lambda' = gamma' > 0, taken exactly (autograd or closed form).
    Its expectation is the bound as T -> infinity (in nats; divide by log 2 for bits), and it trains
    the schedule: the endpoints through the prior and reconstruction terms, a learned interior
    through gamma' and z_t (or, for ``vdm-learned``'s ``interior = "variance"``, the variance).
    Requires a continuous schedule with finite SNR at t = 0 (a reconstruction term) and a
    parameterization that gives eps."""

    name = "vdm"
    provides = frozenset({"trains-schedule"})
    requires = {"schedule": frozenset({"continuous-time", "finite-snr"}), "parameterization": frozenset({"eps"})}

    def loss(self, terms: LossTerms) -> Tensor:
        _, dlam = terms.log_snr_and_derivative()
        err = terms.mse("eps")  # mean over dimensions of (eps - eps_hat)^2
        return terms.endpoints() + 0.5 * (-dlam).to(err.dtype) * err


class DiscreteVLB(LossWeighting):
    """VDM's T-step bound (Kingma et al. 2021, eq. 14) as the training loss, per dimension:

        L = L_T - log p(x0 | z_0) + T/2 * expm1(gamma(t) - gamma(s)) * ||eps - eps_hat(z_t, t)||^2,

    t = i / T drawn on the schedule's grid (i in {1..T}) and s = t - 1/T. Each KL term of the T-step
    bound with the posterior variance is 1/2 (SNR(s) - SNR(t)) ||x0 - x0_hat||^2 (VDM eq. 13), and
    ||x0 - x0_hat||^2 = ||eps - eps_hat||^2 / SNR(t), hence expm1(gamma_t - gamma_s). Tends to
    ``vdm`` as T grows. It needs grid times: use the ``low-discrepancy`` time sampler with
    ``grid = true`` (it provides "grid-times")."""

    name = "vdm-discrete"
    provides = frozenset({"trains-schedule"})
    requires = {"schedule": frozenset({"continuous-time", "finite-snr"}), "parameterization": frozenset({"eps"}),
                "time_sampler": frozenset({"grid-times"})}

    def loss(self, terms: LossTerms) -> Tensor:
        schedule = terms.schedule
        i = schedule.grid_index(terms.t, "the vdm-discrete step")  # refuses a time off the grid
        T = schedule.timesteps
        t = i.double() / T
        gamma_t, gamma_s = -schedule.log_snr(t), -schedule.log_snr(t - 1.0 / T)
        err = terms.mse("eps")
        return terms.endpoints() + 0.5 * T * torch.expm1(gamma_t - gamma_s).to(err.dtype) * err


class MaskedCE(LossWeighting):
    """For masking processes: the mean cross-entropy over *all* masked coordinates of x_t, a
    lower-variance training signal than the bound's single revealed coordinate (ARDM's
    objective). For an order-agnostic process with T = D it equals the bound term exactly; for
    a fixed order it also trains conditionals the sampler never uses. The bound itself is
    still what ``nll_bpd`` evaluates."""

    name = "masked-ce"
    requires = {"variance": frozenset({"categorical"})}

    def loss(self, terms: LossTerms) -> Tensor:
        p = terms.transition_fn()
        masked = (terms.x_t < -1.5).to(terms.x0.dtype)
        ce = p.ce(terms.x0) * masked
        return ce.reshape(len(ce), -1).sum(1) / masked.reshape(len(ce), -1).sum(1).clamp(min=1)


__all__ = ["LossTerms", "LossWeighting", "Simple", "VLB", "MeanMSE", "Hybrid", "MinSNR", "P2", "ContinuousVLB",
           "DiscreteVLB", "MaskedCE", "mean_flat"]
