"""Gaussian forward processes (eqs. 2, 4, 6, 7 of the paper), discrete and continuous in time.

- :class:`GaussianSchedule` (discrete): subclasses give ``betas()``; every derived quantity is
  a float64 table indexed by the paper's t in {1..T} (entry 0 is t = 0, ``abar_0 = 1``).
- :class:`ContinuousGaussianSchedule`: subclasses give ``abar_at(t)`` for t in [0, 1]; the
  *pointwise* quantities (abar, sqrt_abar, sqrt_one_minus_abar, snr, log_snr) are computed at any
  t, and the *grid* quantities of one step (beta, the posterior, the fixed variances) come from
  the T-step grid t_i = i / T, on which the tables are built exactly as for a discrete schedule.

Both give alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) (:meth:`GaussianSchedule.alpha_sigma`;
Kingma et al.'s notation, not the paper's alpha_t = 1 - beta_t, which is the table ``alpha``),
SNR = abar / (1 - abar) and log-SNR at every time they accept, and the inverse map from log-SNR
to time (:meth:`GaussianSchedule.time_from_log_snr`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from ..distributions import Gaussian
from .base import NoiseSchedule, TimeError

#: the quantities of q(x_t | x0) alone, defined at every time a schedule accepts
POINTWISE = ("abar", "sqrt_abar", "sqrt_one_minus_abar", "snr", "log_snr")


def pointwise(name: str, abar: Tensor) -> Tensor:
    """A :data:`POINTWISE` quantity from abar_t (float64)."""
    if name == "abar":
        return abar
    if name == "sqrt_abar":
        return abar.sqrt()
    if name == "sqrt_one_minus_abar":
        return (1.0 - abar).sqrt()
    if name == "snr":
        return abar / (1.0 - abar)
    if name == "log_snr":
        return torch.log(abar) - torch.log1p(-abar)
    raise KeyError(name)


#: the largest T a Gaussian schedule accepts (its float64 tables then take about 100 MB)
MAX_TIMESTEPS = 1_000_000


class GaussianSchedule(NoiseSchedule):
    """A Gaussian forward process defined by its betas (eq. 2): q(x_t|x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I).

    Subclasses implement :meth:`betas` (float64, shape (T,), beta_1..beta_T). Every derived
    quantity is computed once in float64 and cast on use (:meth:`at`).
    """

    provides: ClassVar[frozenset[str]] = frozenset({"gaussian", "discrete-time"})

    def __init__(self, timesteps: int = 1000):
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or not 2 <= timesteps <= MAX_TIMESTEPS:
            raise ValueError(f"timesteps must be an integer from 2 to {MAX_TIMESTEPS:,}, got {timesteps!r}")
        self.timesteps = timesteps
        self._tables64: dict[str, Tensor] | None = None
        self._tables_version: tuple = ()
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    @abstractmethod
    def betas(self) -> Tensor:
        """beta_1..beta_T as a float64 tensor of shape (T,), each in (0, 1)."""

    # -- the precomputed tables -------------------------------------------------------------
    @property
    def tables(self) -> dict[str, Tensor]:
        """float64 tables of length T + 1, indexed by the paper's t (entry 0 is t = 0).

        Built under ``no_grad`` from the schedule's current parameters (a schedule that is an
        ``nn.Module`` may learn): they are rebuilt whenever a parameter or buffer changes (an
        optimizer step, ``load_state_dict``, a move to another device), never served stale."""
        version = self.parameter_version()
        if self._tables64 is None or version != self._tables_version:
            with torch.no_grad():
                self._tables64, self._cache, self._tables_version = self._compute_tables(), {}, version
        return self._tables64

    def parameter_version(self) -> tuple:
        """The parameters' and buffers' storages and in-place version counters (() for none)."""
        if not isinstance(self, torch.nn.Module):
            return ()
        return tuple((p.data_ptr(), p._version) for p in (*self.parameters(), *self.buffers()))

    def grid_abar(self) -> tuple[Tensor, Tensor]:
        """(beta_0..beta_T, abar_0..abar_T) of the T-step grid, float64: the betas given and
        abar_t = prod_{s<=t} (1 - beta_s), abar_0 = 1 (eq. 4)."""
        b = torch.as_tensor(self.betas(), dtype=torch.float64)
        if b.shape != (self.timesteps,):
            raise ValueError(f"betas() must have shape ({self.timesteps},), got {tuple(b.shape)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta_t must lie in (0, 1)")
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), b])  # beta_0 = 0
        return beta, torch.cumprod(1.0 - beta, 0)

    def _compute_tables(self) -> dict[str, Tensor]:
        beta, abar = self.grid_abar()
        alpha = 1.0 - beta
        abar_prev = torch.cat([abar[:1] / alpha[:1], abar[:-1]])  # entry 0 unused
        clean_start = bool(abar[0] == 1.0)  # z_0 = x0 (the paper); False: finite SNR at t = 0 (VDM)
        # eq. 7: beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t; beta~_0 := 0
        post_var = torch.zeros_like(beta)
        post_var[1:] = (1.0 - abar_prev[1:]) / (1.0 - abar[1:]) * beta[1:]
        post_var_clipped = post_var.clone()
        large = beta.clone()
        if clean_start:
            # beta~_1 = 0: the official code's clipped log, beta~_2 stands in for beta~_1 (and t = 0);
            # fixed-large: sigma_t^2 = beta_t, with beta~_2 at t = 1 as in the official code
            post_var_clipped[:2] = post_var[2]
            large[:2] = post_var[2]
        else:  # every beta~_t > 0 (the first step ends at a noisy z_0); entry 0 unused
            post_var_clipped[0] = post_var[1]
            large[0] = beta[1]
        coef_x0 = torch.zeros_like(beta)
        coef_xt = torch.zeros_like(beta)
        coef_x0[1:] = abar_prev[1:].sqrt() * beta[1:] / (1.0 - abar[1:])  # eq. 7, x0 term
        coef_xt[1:] = alpha[1:].sqrt() * (1.0 - abar_prev[1:]) / (1.0 - abar[1:])  # x_t term
        log_beta = beta.clone()
        log_beta[0] = beta[1]
        return {
            "beta": beta,
            "alpha": alpha,
            "abar": abar,
            "abar_prev": abar_prev,
            **{name: pointwise(name, abar) for name in POINTWISE if name != "abar"},
            "sqrt_alpha": alpha.sqrt(),
            "log_beta": log_beta.log(),
            "posterior_variance": post_var,
            "log_posterior_variance": post_var_clipped.log(),
            "log_fixed_large": large.log(),
            "posterior_coef_x0": coef_x0,
            "posterior_coef_xt": coef_xt,
        }

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Quantity ``name`` at times ``t`` (B,), shaped (B, 1, ..., 1) to broadcast against ``like``
        and cast to its dtype and device. A discrete schedule refuses a fractional t; a continuous
        one computes the :data:`POINTWISE` quantities at any t and the others on its grid."""
        key = (like.device, like.dtype)
        tables = self.tables  # rebuilt first if the parameters changed (which also empties the cache)
        cast = self._cache.get(key)
        if cast is None:
            cast = {k: v.to(device=like.device, dtype=like.dtype) for k, v in tables.items()}
            self._cache[key] = cast
        if self.continuous and name in POINTWISE:
            values = pointwise(name, self.abar_at(t.to(like.device, torch.float64))).to(like.dtype)
        else:
            values = cast[name][self.grid_index(t, name).to(like.device)]
        return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))

    def grid_index(self, t: Tensor, name: str = "") -> Tensor:
        """The grid step i of times t (LongTensor): t itself for a discrete schedule (a fractional
        t refused), i = t T for a continuous one (a time between grid points refused)."""
        if not self.continuous:
            return self.index(t)
        scaled = t.double() * self.timesteps
        i = scaled.round()
        off = (scaled - i).abs() > 1e-6
        if bool(off.any()):
            raise TimeError(
                f"{'table ' + repr(name) + ' of ' if name else ''}schedule '{self.name}' is defined on its grid "
                f"t = i / {self.timesteps} only (one step of its {self.timesteps}-step discretization), but got "
                f"t = {t[off][0].item()!r}. Components that need it at training times require a discrete-time schedule."
            )
        return i.long()

    # -- any accepted time ---------------------------------------------------------------------
    def abar(self, t: Tensor) -> Tensor:
        """abar_t at times t (B,), float64 on t's device (eq. 4: q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I))."""
        if self.continuous:
            return self.abar_at(t.double())
        return self.tables["abar"].to(t.device)[self.index(t)]

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t)): x_t = alpha_t x0 + sigma_t eps; float64."""
        abar = self.abar(t)
        return pointwise("sqrt_abar", abar), pointwise("sqrt_one_minus_abar", abar)

    def snr(self, t: Tensor) -> Tensor:
        """SNR(t) = alpha_t^2 / sigma_t^2 = abar_t / (1 - abar_t), float64 (B,)."""
        return pointwise("snr", self.abar(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log SNR(t), float64 (B,); decreasing in t."""
        return pointwise("log_snr", self.abar(t))

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """The time whose log-SNR is ``log_snr`` (1-D float64). A discrete schedule has no time
        between its steps: it returns the step t in {1..T} of nearest log-SNR (the explicit mapping
        samplers on a sigma grid use, as k-diffusion's quantized discrete schedules)."""
        table = self.tables["log_snr"][1:].to(log_snr.device).flip(0)  # increasing: t = T .. 1
        lam = log_snr.double().clamp(table[0], table[-1])
        hi = torch.searchsorted(table, lam).clamp(1, len(table) - 1)
        lo = hi - 1
        pick = torch.where((lam - table[lo]).abs() <= (table[hi] - lam).abs(), lo, hi)
        return self.timesteps - pick

    # -- conversions between the views (eqs. 4, 11, 15) -------------------------------------
    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Eq. 15: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (x_t - self.at("sqrt_one_minus_abar", t, x_t) * eps) / self.at("sqrt_abar", t, x_t)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Eq. 4 solved for eps: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        return (x_t - self.at("sqrt_abar", t, x_t) * x0) / self.at("sqrt_one_minus_abar", t, x_t)

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Eq. 7: mu~_t(x_t, x0) = sqrt(abar_{t-1}) beta_t/(1-abar_t) x0 + sqrt(alpha_t)(1-abar_{t-1})/(1-abar_t) x_t."""
        return self.at("posterior_coef_x0", t, x_t) * x0 + self.at("posterior_coef_xt", t, x_t) * x_t

    # -- the NoiseSchedule interface --------------------------------------------------------
    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I) shaped like x0."""
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Eq. 4: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; t in {1..T}."""
        return self.at("sqrt_abar", t, x0) * x0 + self.at("sqrt_one_minus_abar", t, x0) * noise

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> Gaussian:
        """Eq. 4 as a distribution: N(sqrt(abar_t) x0, (1 - abar_t) I) at any accepted t."""
        mean = self.at("sqrt_abar", t, x0) * x0
        return Gaussian(mean, torch.log1p(-self.at("abar", t, x0)).expand_as(x0))

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Gaussian:
        """Eqs. 6-7: N(mu~_t(x_t, x0), beta~_t I); t in {1..T}.

        beta~_1 = 0 exactly; as in the official code, the returned log-variance at t = 1 is
        that of t = 2 (only t >= 2 enters a KL: L_0 is the decoder term).
        """
        mean = self.posterior_mean(x0, x_t, t)
        return Gaussian(mean, self.at("log_posterior_variance", t, x_t))

    def prior_sample(self, shape, generator=None, device=None, dtype=None) -> Tensor:
        """x_T ~ N(0, I) (eq. 1)."""
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(N(sqrt(abar_T) x0, (1 - abar_T) I) || N(0, I)) per element, in nats."""
        t = self.times(self.timesteps, x0.shape[0], x0.device)
        prior = Gaussian(torch.zeros_like(x0), torch.zeros_like(x0))
        return self.q_mean_variance(x0, t).kl(prior)


class _RampSchedule(GaussianSchedule):
    """Betas that ramp from ``beta_start`` (t = 1) to ``beta_end`` (t = T)."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__(timesteps)
        for label, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 1):
                raise ValueError(f"{label} must be a number in (0, 1), got {v!r}")
        if beta_start > beta_end:
            raise ValueError(f"beta_start ({beta_start}) must not exceed beta_end ({beta_end})")
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)


class LinearSchedule(_RampSchedule):
    """The paper's schedule (Sec. 4): beta_t linear from ``beta_start`` to ``beta_end`` over T steps."""

    name = "linear"

    def betas(self) -> Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=torch.float64)


class QuadraticSchedule(_RampSchedule):
    """beta_t = (linspace(sqrt(beta_start), sqrt(beta_end), T))^2 (the official code's "quad")."""

    name = "quadratic"

    def betas(self) -> Tensor:
        root = torch.linspace(
            math.sqrt(self.beta_start), math.sqrt(self.beta_end), self.timesteps, dtype=torch.float64
        )
        return root**2


class CosineSchedule(GaussianSchedule):
    """Nichol & Dhariwal (2021), eq. 17: abar_t = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2,
    beta_t = 1 - abar_t / abar_{t-1} clipped at ``max_beta`` (0.999)."""

    name = "cosine"

    def __init__(self, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        super().__init__(timesteps)
        if not (0 <= float(s) < 1):
            raise ValueError(f"s must lie in [0, 1), got {s!r}")
        if not (0 < float(max_beta) < 1):
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
        self.s, self.max_beta = float(s), float(max_beta)

    def betas(self) -> Tensor:
        t = torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=self.max_beta)


class ContinuousGaussianSchedule(GaussianSchedule):
    """A Gaussian forward process in continuous time t in [0, 1] (a VP-SDE; Kingma et al. 2021's
    VDM view): subclasses give ``abar_at(t)`` (float64, strictly decreasing, above 0 at t = 1).

    ``abar_at(0)`` is 1 for a process that starts at the data (z_0 = x0, the paper's view), or
    below 1 for one with a finite SNR at t = 0 (VDM): z_0 = alpha_0 x0 + sigma_0 eps is then
    itself noisy, and the bound adds the reconstruction term -log p(x0 | z_0)
    (:meth:`NoiseSchedule.reconstruction`).

    ``timesteps`` is T of the grid t_i = i / T that the ancestral sampler, the bound and the
    fixed variances use; their tables are built from abar at the grid points, abar_i = abar(i / T),
    beta_i = 1 - abar_i / abar_{i-1}, exactly as for a discrete schedule."""

    continuous: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = frozenset({"gaussian", "continuous-time"})

    @abstractmethod
    def abar_at(self, t: Tensor) -> Tensor:
        """abar(t) for float64 t in [0, 1]: at most 1 at t = 0, strictly decreasing, above 0 at t = 1."""

    def grid_abar(self) -> tuple[Tensor, Tensor]:
        abar = self.abar_at(torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps).double()
        if not bool(torch.isfinite(abar).all()) or not bool((abar[1:] < abar[:-1]).all()) or not (
                0 < float(abar[-1]) and float(abar[0]) <= 1):
            raise ValueError(f"schedule '{self.name}': abar(t) must be finite, strictly decreasing on the "
                             f"{self.timesteps}-step grid, at most 1 at t = 0 and above 0 at t = 1")
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 - abar[1:] / abar[:-1]])
        return beta, abar

    def betas(self) -> Tensor:
        return self.grid_abar()[0][1:]

    def log_snr_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(lambda(t), dlambda/dt) at float64 times t, the derivative exact (autograd); both keep
        their graph to the schedule's parameters when gradients are on (the continuous-time bound
        and its weighting, :class:`gendiff.weightings.ContinuousVLB`, need lambda')."""
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            tt = t.detach().double().requires_grad_(True)
            lam = self.log_snr(tt)
            (dlam,) = torch.autograd.grad(lam.sum(), tt, create_graph=outer)
        return (lam if outer else lam.detach()), dlam

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """The exact t in [0, 1] with lambda(t) = ``log_snr`` (bisection in float64; values beyond
        the schedule's range give t = 0 or 1)."""
        lam = log_snr.double()
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(64):  # lambda decreases in t
            mid = 0.5 * (lo + hi)
            above = pointwise("log_snr", self.abar_at(mid)) > lam
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)


class VPCosine(ContinuousGaussianSchedule):
    """The cosine schedule in continuous time (Nichol & Dhariwal 2021, eq. 17, with t in [0, 1]):
    abar(t) = cos^2(phi(t)) / cos^2(phi(0)), phi rising linearly from s / (1 + s) * pi / 2 at t = 0
    to atan(exp(-logsnr_min / 2)) at t = 1, so log-SNR(1) = ``logsnr_min`` (about) instead of -inf.

    Args:
        timesteps: T of the sampling / likelihood grid t_i = i / T.
        s: the offset that keeps the noise at small t from vanishing too fast (0.008).
        logsnr_min: log-SNR at t = 1 (-20: abar_1 of about 2e-9, L_T negligible).
    """

    name = "vp-cosine"

    def __init__(self, timesteps: int = 1000, s: float = 0.008, logsnr_min: float = -20.0):
        super().__init__(timesteps)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1:
            raise ValueError(f"s must lie in (0, 1), got {s!r}")
        if isinstance(logsnr_min, bool) or not isinstance(logsnr_min, (int, float)) or not -40 <= logsnr_min <= -5:
            raise ValueError(f"logsnr_min must be a number in [-40, -5], got {logsnr_min!r}")
        self.s, self.logsnr_min = float(s), float(logsnr_min)
        self.phi0 = self.s / (1 + self.s) * math.pi / 2
        self.phi1 = math.atan(math.exp(-self.logsnr_min / 2))

    def abar_at(self, t: Tensor) -> Tensor:
        phi = self.phi0 + t * (self.phi1 - self.phi0)
        return torch.cos(phi) ** 2 / math.cos(self.phi0) ** 2


class VPLinear(ContinuousGaussianSchedule):
    """The VP-SDE of Song et al. (2021), beta(t) = beta_min + t (beta_max - beta_min) in continuous
    time: abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2). With T = 1000 its grid is
    close to the paper's linear schedule (beta_min = 0.1 = 1000 * 1e-4, beta_max = 20 = 1000 * 0.02).
    """

    name = "vp-linear"

    def __init__(self, timesteps: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0):
        super().__init__(timesteps)
        for label, v in (("beta_min", beta_min), ("beta_max", beta_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 100:
                raise ValueError(f"{label} must be a number in (0, 100], got {v!r}")
        if beta_min > beta_max:
            raise ValueError(f"beta_min ({beta_min}) must not exceed beta_max ({beta_max})")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def abar_at(self, t: Tensor) -> Tensor:
        return torch.exp(-self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2)
