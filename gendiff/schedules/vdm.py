"""Variational Diffusion Model schedules (Kingma, Salimans, Poole & Ho 2021): the forward process
given by gamma(t) = -log SNR(t), fixed or learned, with a finite SNR at both ends.

    alpha_t^2 = sigmoid(-gamma(t)),  sigma_t^2 = sigmoid(gamma(t)),  SNR(t) = exp(-gamma(t))   (VDM eq. 3-4)

gamma increases from ``gamma_min`` at t = 0 to ``gamma_max`` at t = 1. Time is continuous, t in
[0, 1] (float64); the grid t_i = i / T serves the ancestral sampler and the T-step bound.

**What t = 0 means here.** ``abar_at(0) = sigmoid(-gamma_min) < 1``: z_0 = alpha_0 x0 + sigma_0 eps
is a slightly noisy copy of the data, not the data. The bound then has three parts (VDM eq. 11):
the prior term KL(q(z_1 | x) || N(0, I)) (:meth:`prior_kl`), the diffusion loss from t = 0 to 1
(T KL terms on the grid, or the continuous-time integral), and the reconstruction term
-log p(x | z_0) (:meth:`reconstruction`), with the decoder p(x_i | z_0) proportional to
q(z_0 | x_i) over the K data levels. No grid step decodes (:meth:`first_step` is false
everywhere): the first step's term is a KL to z_0 like the others.

Built-ins: ``vdm-fixed`` (gamma linear between its endpoints), ``vdm-learned-endpoints``
(gamma(t) = b + |w| t, both learned) and ``vdm-learned`` (VDM's monotone network, rescaled to
its endpoints, which may be learned; its interior is trained to minimise the variance of the loss
estimate, VDM Sec. 5.2, or on the loss itself).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..distributions import unit_to_levels
from .gaussian import ContinuousGaussianSchedule

#: how far gamma may reach: |gamma| <= 30 keeps sigmoid(+-gamma) representable in float64 with room
GAMMA_LIMIT = 30.0


def _number(label: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number, got {value!r}")
    if abs(value) > GAMMA_LIMIT:
        raise ValueError(f"{label} must lie in [-{GAMMA_LIMIT:g}, {GAMMA_LIMIT:g}] (gamma = -log SNR), got {value!r}")
    return float(value)


class VDMSchedule(ContinuousGaussianSchedule, nn.Module):
    """A VDM forward process given by gamma(t) = -log SNR(t) (module docstring).

    Subclasses give :meth:`gamma` (float64 in, float64 out, increasing in t). Args shared by all:
    ``timesteps`` (T of the grid), ``gamma_min`` (gamma at t = 0; VDM's -13.3), ``gamma_max``
    (gamma at t = 1; VDM's 5.0). ``gamma_min < gamma_max`` is required. A learned schedule's
    parameters are float64 (they are few; its gradients are sums that cancel, see VDMLearned)."""

    provides: ClassVar[frozenset[str]] = frozenset({"gaussian", "continuous-time", "finite-snr"})

    def __init__(self, timesteps: int = 1000, gamma_min: float = -13.3, gamma_max: float = 5.0):
        nn.Module.__init__(self)
        ContinuousGaussianSchedule.__init__(self, timesteps)
        lo, hi = _number("gamma_min", gamma_min), _number("gamma_max", gamma_max)
        if not lo < hi:
            raise ValueError(f"gamma_min ({gamma_min}) must be below gamma_max ({gamma_max}): gamma = -log SNR "
                             f"increases from t = 0 (nearly clean) to t = 1 (nearly pure noise)")

    @abstractmethod
    def gamma(self, t: Tensor) -> Tensor:
        """gamma(t) = -log SNR(t) for float64 t in [0, 1] (shape kept), increasing in t."""

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(gamma(t), gamma'(t)), float64; the derivative is exact (autograd unless a subclass
        gives it in closed form) and keeps its graph to the parameters when gradients are on."""
        lam, dlam = ContinuousGaussianSchedule.log_snr_and_derivative(self, t)  # of lambda = -gamma
        return -lam, -dlam

    # -- the process in terms of gamma ----------------------------------------------------------
    def abar_at(self, t: Tensor) -> Tensor:
        """alpha_t^2 = sigmoid(-gamma(t)) (VDM eq. 4); below 1 at t = 0."""
        return torch.sigmoid(-self.gamma(t.double()))

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = -gamma(t), float64."""
        return -self.gamma(t.double())

    def snr(self, t: Tensor) -> Tensor:
        return torch.exp(-self.gamma(t.double()))

    def log_snr_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        g, dg = self.gamma_and_derivative(t)
        return -g, -dg

    def first_step(self, t: Tensor) -> Tensor:
        """No grid step decodes: z_0 is noisy, and its decoder is :meth:`reconstruction`."""
        return torch.zeros(t.shape, dtype=torch.bool, device=t.device)

    def reconstruction(self, x0: Tensor, noise: Tensor, levels: int) -> Tensor:
        """-log p(x0 | z_0) per element in nats, z_0 = alpha_0 x0 + sigma_0 noise: the decoder
        p(x_i = v_k | z_0) proportional to q(z_0 | v_k) over the K levels v_k = 2k / (K - 1) - 1
        (VDM eq. 13 on gendiff's data scale), i.e. a softmax over -(z_0 / alpha_0 - v_k)^2 / (2 / SNR_0)."""
        zero = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        g0 = self.gamma(zero).to(x0.dtype).reshape((-1,) + (1,) * (x0.ndim - 1))
        alpha0, sigma0 = torch.sigmoid(-g0).sqrt(), torch.sigmoid(g0).sqrt()
        z0 = alpha0 * x0 + sigma0 * noise
        scaled = (z0 / alpha0).unsqueeze(-1)  # x0 + noise / sqrt(SNR_0)
        values = torch.linspace(-1.0, 1.0, levels, dtype=x0.dtype, device=x0.device)
        logits = -0.5 * (scaled - values) ** 2 * torch.exp(-g0).unsqueeze(-1)
        k = unit_to_levels(x0, levels).long().unsqueeze(-1)
        return -(torch.log_softmax(logits, dim=-1).gather(-1, k).squeeze(-1))

    def check_parameters(self) -> str | None:
        """A problem with the schedule's current parameters (non-finite, or gamma not strictly
        increasing on the grid), else None; the trainer asks after every step."""
        with torch.no_grad():
            grid = torch.linspace(0.0, 1.0, self.timesteps + 1, dtype=torch.float64,
                                  device=next(iter(self.parameters()), torch.zeros(())).device)
            g = self.gamma(grid)
        if not bool(torch.isfinite(g).all()):
            return f"schedule '{self.name}' has non-finite gamma(t) on its grid"
        if not bool((g[1:] > g[:-1]).all()):
            i = int(torch.nonzero(g[1:] <= g[:-1])[0])
            return (f"schedule '{self.name}' is no longer increasing: gamma({i}/{self.timesteps}) = {float(g[i]):.6g} "
                    f">= gamma({i + 1}/{self.timesteps}) = {float(g[i + 1]):.6g}")
        if float(g.abs().max()) > GAMMA_LIMIT:
            return f"schedule '{self.name}' left |gamma| <= {GAMMA_LIMIT:g} (gamma(1) = {float(g[-1]):.6g})"
        return None

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}"


class VDMFixed(VDMSchedule):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t: VDM's fixed linear log-SNR schedule."""

    name = "vdm-fixed"

    def __init__(self, timesteps: int = 1000, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__(timesteps, gamma_min, gamma_max)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def gamma(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.double()
        return self.gamma(t), torch.full_like(t, self.gamma_max - self.gamma_min)


class VDMLearnedEndpoints(VDMSchedule):
    """gamma(t) = b + |w| t with b and w learned, starting at b = gamma_min, w = gamma_max - gamma_min
    (VDM's linear schedule with learned endpoints: only gamma(0) = b and gamma(1) = b + |w| change
    the continuous-time bound). Trained by the VDM weightings (it requires "trains-schedule")."""

    name = "vdm-learned-endpoints"
    provides = VDMSchedule.provides | {"learned"}
    requires = {"weighting": frozenset({"trains-schedule"})}

    def __init__(self, timesteps: int = 1000, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__(timesteps, gamma_min, gamma_max)
        self.b = nn.Parameter(torch.tensor(float(gamma_min), dtype=torch.float64))  # float64: see VDMLearned
        self.w = nn.Parameter(torch.tensor(float(gamma_max) - float(gamma_min), dtype=torch.float64))

    def gamma(self, t: Tensor) -> Tensor:
        return self.b.double() + self.w.double().abs() * t

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.double()
        g = self.gamma(t)
        dg = self.w.double().abs().expand_as(t)
        return (g, dg) if torch.is_grad_enabled() else (g.detach(), dg.detach())


class VDMLearned(VDMSchedule):
    """VDM's learned monotone schedule (Kingma et al. 2021, Appendix H / google-research/vdm's
    NoiseSchedule_NNet): with positive weights (absolute values),

        h~(t) = l1(t) + l3(2 (sigmoid(l2(l1(t))) - 1/2)) / features,

    l1: 1 -> 1, l2: 1 -> ``features`` (1024), l3: ``features`` -> 1 (no bias), rescaled so that
    gamma(0) = gamma_min and gamma(1) = gamma_max exactly:

        gamma(t) = gamma_min + (gamma_max - gamma_min) (h~(t) - h~(0)) / (h~(1) - h~(0)).

    Args:
        learned_endpoints: learn gamma_min and gamma_max (they set the bound's prior and
            reconstruction terms and its value) or keep them fixed.
        interior: how the shape between the endpoints learns. ``"variance"`` (VDM Sec. 5.2): the
            continuous-time bound does not depend on it, so it is trained to minimise the variance
            of the per-example loss estimate, E[L^2], with the exact gradient sum_i 2 L_i dL_i/d eta
            (the trainer calls :meth:`after_backward`). ``"loss"``: on the loss like every other
            parameter (for the discrete-T bound, which does depend on it).
        features: width of the sigmoid layer.
    """

    name = "vdm-learned"
    provides = VDMSchedule.provides | {"learned"}
    requires = {"weighting": frozenset({"trains-schedule"})}
    #: how many gamma evaluations of one training step are kept for :meth:`after_backward`
    MAX_PENDING = 64

    def __init__(self, timesteps: int = 1000, gamma_min: float = -13.3, gamma_max: float = 5.0,
                 features: int = 1024, learned_endpoints: bool = True, interior: str = "variance"):
        super().__init__(timesteps, gamma_min, gamma_max)
        if isinstance(features, bool) or not isinstance(features, int) or not 1 <= features <= 65536:
            raise ValueError(f"features must be an integer from 1 to 65536, got {features!r}")
        if not isinstance(learned_endpoints, bool):
            raise ValueError(f"learned_endpoints must be true or false, got {learned_endpoints!r}")
        if interior not in ("variance", "loss"):
            raise ValueError(f"interior must be \"variance\" (minimise the loss estimate's variance, VDM) or "
                             f"\"loss\", got {interior!r}")
        self.features, self.learned_endpoints, self.interior = features, learned_endpoints, interior
        # float64 parameters: the interior's gradient is a sum of O(1) terms that cancel to ~1e-9 (the
        # rescaling to the endpoints removes l1's scale and shift to first order); summed in float32 it
        # is rounding noise, which Adam turns into lr-sized steps
        ends = torch.tensor([float(gamma_min), float(gamma_max)], dtype=torch.float64)
        if learned_endpoints:
            self.ends = nn.Parameter(ends)
        else:
            self.register_buffer("ends", ends)
        # the initialisation: l1 from the linear schedule (so gamma starts linear), l2 and l3 normal with
        # std 0.01 (the sigmoid layer starts near its linear part; the interior bends as it learns)
        self.l1_w = nn.Parameter(torch.tensor([float(gamma_max) - float(gamma_min)], dtype=torch.float64))
        self.l1_b = nn.Parameter(torch.tensor([float(gamma_min)], dtype=torch.float64))
        self.l2_w = nn.Parameter((torch.randn(features) * 0.01).double())
        self.l2_b = nn.Parameter((torch.randn(features) * 0.01).double())
        self.l3_w = nn.Parameter((torch.randn(features) * 0.01).double())
        self._pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    # -- the network ------------------------------------------------------------------------------
    def _raw(self, t: Tensor) -> Tensor:
        """h~(t) for float64 t of any shape (the positive-weight network, in float64)."""
        h = self.l1_w.double().abs() * t + self.l1_b.double()
        s = 2.0 * (torch.sigmoid(h.unsqueeze(-1) * self.l2_w.double().abs() + self.l2_b.double()) - 0.5)
        return h + (s * self.l3_w.double().abs()).sum(-1) / self.features

    def _interior(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(h(t), h'(t)) with h(t) = (h~(t) - h~(0)) / (h~(1) - h~(0)) in [0, 1], float64; the
        derivative by autograd, with its graph when gradients are on."""
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            tt = t.detach().double().requires_grad_(True)
            ends = self._raw(torch.tensor([0.0, 1.0], dtype=torch.float64, device=tt.device))
            h = (self._raw(tt) - ends[0]) / (ends[1] - ends[0])
            (dh,) = torch.autograd.grad(h.sum(), tt, create_graph=outer)
        return (h if outer else h.detach()), dh

    def _shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        h, dh = self._interior(t)
        if self.interior == "variance" and self.training and torch.is_grad_enabled():
            # the loss sees h and h' as leaves; after the backward pass, after_backward sends the
            # variance's gradient 2 L dL/dh through them into the network (VDM Sec. 5.2)
            leaf, dleaf = h.detach().requires_grad_(True), dh.detach().requires_grad_(True)
            self._pending = self._pending[-(self.MAX_PENDING - 1):] + [(h, dh, leaf, dleaf)]
            return leaf, dleaf
        return h, dh

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        h, dh = self._shape(t.double())
        lo, hi = self.ends.double()[0], self.ends.double()[1]
        return lo + (hi - lo) * h, (hi - lo) * dh

    def gamma(self, t: Tensor) -> Tensor:
        return self.gamma_and_derivative(t)[0]

    # -- the trainable-component hooks --------------------------------------------------------------
    def after_backward(self, losses: Tensor) -> None:
        """Complete the interior's gradient after a backward pass of the mean of ``losses`` (B,):
        d/d eta mean(L^2) = sum_i 2 L_i (dmean(L)/dh_i) dh_i/d eta, exact, through the schedule's
        small network only. Every gamma evaluation of the step whose rows are the batch's counts."""
        pending, self._pending = self._pending, []
        heads, grads = [], []
        for h, dh, leaf, dleaf in pending:
            for out, inp in ((h, leaf), (dh, dleaf)):
                if inp.grad is None or not out.requires_grad:
                    continue
                if inp.grad.shape != losses.shape:
                    raise ValueError(f"schedule '{self.name}': a gamma evaluation of {tuple(inp.shape)} times cannot be "
                                     f"matched to {tuple(losses.shape)} per-example losses")
                heads.append(out)
                grads.append(2.0 * losses.detach().double() * inp.grad)
        if heads:
            torch.autograd.backward(heads, grads)

    def check_parameters(self) -> str | None:
        lo, hi = (float(v) for v in self.ends.detach())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"schedule '{self.name}' has non-finite endpoints (gamma_min {lo}, gamma_max {hi})"
        if not lo < hi:
            return f"schedule '{self.name}' has gamma_min = {lo:.6g} >= gamma_max = {hi:.6g}"
        return super().check_parameters()

    def extra_repr(self) -> str:
        return (f"timesteps={self.timesteps}, features={self.features}, learned_endpoints={self.learned_endpoints}, "
                f"interior={self.interior!r}")
