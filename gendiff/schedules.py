"""Noise schedules: the fixed forward process q(x_t | x0) of the paper (Sec. 2, eqs. 2-7).

Interface: :class:`NoiseSchedule`. A schedule owns everything about the forward process: how
to corrupt data (``q_sample``), the posterior q(x_{t-1} | x_t, x0), the prior p(x_T) and the
prior term L_T of the bound. The built-in Gaussian schedules only differ in their betas.

Time-index convention: every method takes the paper's t in {1..T} as an integer tensor of
shape (B,). The precomputed tables are indexed by that same t, with an extra entry at index
0 for t = 0 (``abar_0 = 1``), so ``table[t]`` is the paper's quantity at time t.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from .component import Component
from .distributions import BLANK, Gaussian, Reveal, is_masked


class NoiseSchedule(Component, ABC):
    """The forward process q(x_{1:T} | x0) and the prior p(x_T).

    Subclasses set ``provides`` to the kind of process (``{"gaussian"}`` here) so that other
    components can declare what they need.
    """

    family: ClassVar[str] = "schedule"
    #: extra channels the network input gets from :meth:`model_input` (0 for Gaussian noise)
    extra_input_channels: ClassVar[int] = 0
    timesteps: int

    @abstractmethod
    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw the randomness of q(x_t | x0) for a batch (eps ~ N(0, I) for Gaussians).
        It may depend on x0's shape, dtype and device only, not on its values (data-parallel
        training draws it for the global batch's shape)."""

    @abstractmethod
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x0) given the randomness ``noise`` (eq. 4); t in {1..T}, shape (B,)."""

    @abstractmethod
    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Gaussian:
        """q(x_{t-1} | x_t, x0) (eqs. 6, 7); t in {1..T}."""

    @abstractmethod
    def prior_sample(
        self, shape: tuple[int, ...], generator=None, device=None, dtype=None
    ) -> Tensor:
        """x_T ~ p(x_T)."""

    @abstractmethod
    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x0) || p(x_T)) per element, in nats."""

    def model_input(self, x_t: Tensor, t: Tensor) -> Tensor:
        """What the network sees for x_t (x_t itself; a masking process would add its mask)."""
        return x_t


#: the largest T a Gaussian schedule accepts (its float64 tables then take about 100 MB)
MAX_TIMESTEPS = 1_000_000


class GaussianSchedule(NoiseSchedule):
    """A Gaussian forward process defined by its betas (eq. 2): q(x_t|x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I).

    Subclasses implement :meth:`betas` (float64, shape (T,), beta_1..beta_T). Every derived
    quantity is computed once in float64 and cast on use (:meth:`at`).
    """

    provides: ClassVar[frozenset[str]] = frozenset({"gaussian"})

    def __init__(self, timesteps: int = 1000):
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or not 2 <= timesteps <= MAX_TIMESTEPS:
            raise ValueError(f"timesteps must be an integer from 2 to {MAX_TIMESTEPS:,}, got {timesteps!r}")
        self.timesteps = timesteps
        self._tables64: dict[str, Tensor] | None = None
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    @abstractmethod
    def betas(self) -> Tensor:
        """beta_1..beta_T as a float64 tensor of shape (T,), each in (0, 1)."""

    # -- the precomputed tables -------------------------------------------------------------
    @property
    def tables(self) -> dict[str, Tensor]:
        """float64 tables of length T + 1, indexed by the paper's t (entry 0 is t = 0)."""
        if self._tables64 is None:
            self._tables64 = self._compute_tables()
        return self._tables64

    def _compute_tables(self) -> dict[str, Tensor]:
        b = torch.as_tensor(self.betas(), dtype=torch.float64)
        if b.shape != (self.timesteps,):
            raise ValueError(f"betas() must have shape ({self.timesteps},), got {tuple(b.shape)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta_t must lie in (0, 1)")
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), b])  # beta_0 = 0
        alpha = 1.0 - beta
        abar = torch.cumprod(alpha, 0)  # abar_0 = 1
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # eq. 7: beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t; beta~_0 := 0, beta~_1 = 0
        post_var = torch.zeros_like(beta)
        post_var[1:] = (1.0 - abar_prev[1:]) / (1.0 - abar[1:]) * beta[1:]
        # the official code's clipped log: beta~_2 stands in for beta~_1 = 0 (and for t = 0)
        post_var_clipped = post_var.clone()
        post_var_clipped[:2] = post_var[2]
        # fixed-large: sigma_t^2 = beta_t, with beta~_2 at t = 1 as in the official code
        large = beta.clone()
        large[:2] = post_var[2]
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
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1.0 - abar).sqrt(),
            "sqrt_alpha": alpha.sqrt(),
            "log_beta": log_beta.log(),
            "posterior_variance": post_var,
            "log_posterior_variance": post_var_clipped.log(),
            "log_fixed_large": large.log(),
            "posterior_coef_x0": coef_x0,
            "posterior_coef_xt": coef_xt,
        }

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at paper times ``t`` (B,), shaped (B, 1, ..., 1) to broadcast
        against ``like`` and cast to its dtype and device."""
        key = (like.device, like.dtype)
        cast = self._cache.get(key)
        if cast is None:
            cast = {k: v.to(device=like.device, dtype=like.dtype) for k, v in self.tables.items()}
            self._cache[key] = cast
        values = cast[name][t.to(like.device).long()]
        return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))

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
        """Eq. 4 as a distribution: N(sqrt(abar_t) x0, (1 - abar_t) I); t in {0..T}."""
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
        t = torch.full((x0.shape[0],), self.timesteps, device=x0.device, dtype=torch.long)
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



ORDERS = ("raster", "random", "agnostic")


class MaskingSchedule(NoiseSchedule):
    """The paper's autoregressive special case (Sec. 4.3): q(x_t | x0) masks coordinates, one more
    per step when T = D, so x_T is the blank image (p(x_T) puts all its mass there: L_T = 0) and
    p_theta(x_{t-1} | x_t) reveals coordinates: training the bound trains an autoregressive model.

    Args:
        timesteps: T; 0 means D, the data dimension (one coordinate per step). T < D reveals
            about D / T coordinates per step.
        order: the generation order. "raster" (row by row, channel by channel), "random" (a
            fixed permutation drawn from ``seed``) or "agnostic" (a fresh random order for every
            example, as in ARDM and absorbing-state D3PM; the bound is then an upper bound).
        seed: the seed of the "random" order.

    Coordinate d has a generation rank r(d) in {1..D}; at time t the k(t) = round(t D / T)
    coordinates of highest rank are masked (x_t holds :data:`BLANK` there), so step t reveals the
    coordinates with D - k(t) < r <= D - k(t - 1). Time convention: the paper's t in {1..T}.
    """

    name = "masking"
    provides = frozenset({"masking"})

    def __init__(self, timesteps: int = 0, order: str = "raster", seed: int = 0):
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 0:
            raise ValueError(f"timesteps must be 0 (= the data dimension) or a positive integer, got {timesteps!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
        self.requested, self.order, self.seed = timesteps, order, seed
        self.timesteps = timesteps
        self.extra_input_channels = 0

    def bind(self, data_shape, levels) -> None:
        """Fix D, T, the mask channels and the generation order for the data's shape."""
        D = math.prod(data_shape)
        T = self.requested or D
        if T > D:
            raise ValueError(f"timesteps ({T}) cannot exceed the data dimension D = {D}")
        self.data_shape, self.dims, self.timesteps = tuple(data_shape), D, T
        self.extra_input_channels = data_shape[0]  # one mask channel per data channel
        if self.order == "random":
            rank = torch.randperm(D, generator=torch.Generator().manual_seed(self.seed)) + 1
        else:
            rank = torch.arange(1, D + 1)
        self.rank = rank.view(self.data_shape)
        t = torch.arange(T + 1)
        self.masked_count = (t * D + T // 2) // T  # k(t): k(0) = 0, k(T) = D

    # -- ranks and masks -----------------------------------------------------------------------
    def _k(self, t: Tensor, like: Tensor) -> Tensor:
        k = self.masked_count.to(like.device)[t.to(like.device).long()]
        return k.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)

    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The randomness of q: every coordinate's generation rank (fixed, or a fresh random
        permutation per example for the "agnostic" order), as a float tensor shaped like x0."""
        batch = x0.shape[0]
        if self.order == "agnostic":
            u = torch.rand((batch, self.dims), generator=generator, device=x0.device)
            ranks = u.argsort(dim=1).argsort(dim=1) + 1
            return ranks.view(x0.shape).to(x0.dtype)
        return self.rank.to(device=x0.device, dtype=x0.dtype).expand(x0.shape).clone()

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t: x0 with the k(t) coordinates of highest rank masked."""
        masked = noise > self.dims - self._k(t, x0)
        return torch.where(masked, torch.full_like(x0, BLANK), x0)

    def reveal_weights(self, x_t: Tensor, t: Tensor) -> Tensor:
        """q's probability that step t (x_t -> x_{t-1}) reveals each coordinate."""
        k, k_prev = self._k(t, x_t), self._k(t - 1, x_t)
        if self.order == "agnostic":
            return is_masked(x_t).to(x_t.dtype) * (k - k_prev) / k.clamp(min=1)
        rank = self.rank.to(device=x_t.device, dtype=x_t.dtype)
        return ((rank > self.dims - k) & (rank <= self.dims - k_prev)).to(x_t.dtype)

    def choose_reveal(self, x_t: Tensor, t: Tensor, generator=None) -> Tensor:
        """The coordinates the reverse step reveals: fixed by the order, or k(t) - k(t-1) of the
        masked ones chosen uniformly at random ("agnostic")."""
        if self.order != "agnostic":
            return self.reveal_weights(x_t, t) > 0
        batch = x_t.shape[0]
        n = (self._k(t, x_t) - self._k(t - 1, x_t)).view(batch).long()
        scores = torch.rand((batch, self.dims), generator=generator, device=x_t.device)
        scores = torch.where(is_masked(x_t).view(batch, -1), scores, torch.full_like(scores, -1.0))
        order = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 for the highest score
        return (order < n[:, None]).view(x_t.shape)

    # -- the NoiseSchedule interface -------------------------------------------------------------
    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Reveal:
        """Reveal the coordinates of step t (a point mass for a fixed order)."""
        return Reveal(x0, x_t, self.reveal_weights(x_t, t))

    def prior_sample(self, shape, generator=None, device=None, dtype=None) -> Tensor:
        """x_T: the blank image."""
        return torch.full(tuple(shape), BLANK, device=device, dtype=dtype or torch.get_default_dtype())

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = 0: q(x_T | x0) and p(x_T) are the same point mass on the blank image."""
        return torch.zeros_like(x0)

    def model_input(self, x_t: Tensor, t: Tensor) -> Tensor:
        """x_t with its masked coordinates set to 0, followed by one mask channel per data channel."""
        masked = is_masked(x_t)
        return torch.cat([x_t.masked_fill(masked, 0.0), masked.to(x_t.dtype)], dim=1)
