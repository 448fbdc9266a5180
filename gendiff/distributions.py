"""Distributions of the forward posterior and the reverse transitions, with closed-form terms.

Every term of the bound (eq. 5) is computed here in closed form, per element, in nats:

- :meth:`Gaussian.kl`: KL(q || p) between diagonal Gaussians (the L_{t-1}, t > 1, and L_T);
- :meth:`Gaussian.nll`: the discretized decoder of eq. 13, -log p(x0 | x1), with bins of width
  2/(K-1) centred on the K data levels and the outermost bins open to -inf / +inf.

A distribution here is a small dataclass of tensors shaped like the data, (B, C, H, W) or
broadcastable to it. The composed model sums per-element terms over the non-batch dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def log_normal_interval(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for the standard normal CDF Phi, stable in both tails.

    ``lo`` may be ``-inf`` and ``hi`` may be ``+inf``. For an interval in the upper tail the
    symmetric form Phi(-lo) - Phi(-hi) is used so no precision is lost to 1 - Phi.
    """
    upper = lo > 0
    a = torch.where(upper, -hi, lo)  # reflect intervals that lie (mostly) above zero
    b = torch.where(upper, -lo, hi)
    log_b = _log_ndtr_safe(b)
    log_a = _log_ndtr_safe(a)
    # log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b)))
    diff = (log_a - log_b).clamp(max=-1e-30)
    return log_b + torch.log(-torch.expm1(diff))


def _log_ndtr_safe(x: Tensor) -> Tensor:
    """log Phi(x) with exact limits at +-inf and finite gradients everywhere (no 0 * nan)."""
    finite = torch.isfinite(x)
    value = torch.special.log_ndtr(torch.where(finite, x, torch.zeros_like(x)))
    limit = torch.where(x > 0, torch.zeros_like(x), torch.full_like(x, -math.inf))
    return torch.where(finite, value, limit)


def levels_to_unit(k: Tensor, levels: int) -> Tensor:
    """Integers k in {0..K-1} to the paper's data scale x = 2k/(K-1) - 1 in [-1, 1]."""
    return k.to(torch.get_default_dtype() if not k.is_floating_point() else k.dtype) * (
        2.0 / (levels - 1)
    ) - 1.0


def unit_to_levels(x: Tensor, levels: int) -> Tensor:
    """The nearest level index k in {0..K-1} of values x in [-1, 1] (clamped outside)."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * (levels - 1) / 2.0).long()


@dataclass
class Gaussian:
    """A diagonal Gaussian N(mean, exp(log_var)); ``log_var`` broadcasts against ``mean``."""

    mean: Tensor
    log_var: Tensor

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.log_var).expand_as(self.mean)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A draw ``mean + sigma z`` with ``z ~ N(0, I)`` (one step of Algorithm 2, t > 1)."""
        z = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(0.5 * self.log_var) * z

    def decode(self, generator: torch.Generator | None = None) -> Tensor:
        """The output of Algorithm 2's last step (t = 1): the mean, without noise, in [-1, 1].

        The decoder of eq. 13 puts the mean's neighbourhood into the bin of its nearest data
        level and everything beyond the edges into the outermost bins, so clamping to [-1, 1]
        changes no bin. Algorithm 2 shows mu_theta(x1, 1) noiselessly.
        """
        return self.mean.clamp(-1.0, 1.0)

    def kl(self, other: "Gaussian") -> Tensor:
        """KL(self || other) per element, in nats (the closed form used for every L_{t-1})."""
        return 0.5 * (
            -1.0
            + other.log_var
            - self.log_var
            + torch.exp(self.log_var - other.log_var)
            + (self.mean - other.mean) ** 2 * torch.exp(-other.log_var)
        )

    def nll(self, x0: Tensor, levels: int) -> Tensor:
        """-log p(x0) per element, in nats, under the discretized Gaussian decoder (eq. 13).

        ``x0`` holds data levels on the [-1, 1] scale; bin edges are ``x0 -+ 1/(K-1)``, the first
        bin opens to -inf and the last to +inf, so the K bin probabilities sum to 1.
        """
        half = 1.0 / (levels - 1)
        k = unit_to_levels(x0, levels)
        inv_std = torch.exp(-0.5 * self.log_var)
        lo = torch.where(k == 0, torch.full_like(x0, -math.inf), (x0 - half - self.mean) * inv_std)
        hi = torch.where(
            k == levels - 1, torch.full_like(x0, math.inf), (x0 + half - self.mean) * inv_std
        )
        return -log_normal_interval(lo, hi)


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 logits from autocast are widened; float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


#: the value of a masked coordinate in x_t (outside the data range [-1, 1], so x_t carries its mask)
BLANK = -2.0


def is_masked(x_t: Tensor) -> Tensor:
    """Which coordinates of x_t are masked (hold :data:`BLANK`)."""
    return x_t < -1.5


@dataclass
class Reveal:
    """q(x_{t-1} | x_t, x0) of a masking process: coordinate d of x0 is revealed with probability
    ``weights[d]`` (1 for the coordinates a fixed order reveals at step t; n_t / m_t for each of the
    m_t masked coordinates when n_t of them are revealed in a random order). Every other
    coordinate is copied from x_t (Sec. 4.3)."""

    x0: Tensor
    x_t: Tensor
    weights: Tensor

    @property
    def mean(self) -> Tensor:
        return torch.where(self.weights > 0, self.x0, self.x_t)

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.x0)

    def kl(self, other: "Categorical") -> Tensor:
        """KL(q || p) per element, in nats: the revealed coordinates' cross-entropies under p,
        weighted by how likely q is to reveal them. For a fixed order this is
        -log p_theta(x0^(t) | x_t): the bound is the exact autoregressive NLL."""
        return self.weights * other.ce(self.x0)


@dataclass
class Categorical:
    """p_theta(x_{t-1} | x_t) of a masking process: reveal the coordinates chosen by ``choose``
    and draw each from its categorical over the K levels (logits (B, C, K, H, W)); keep the rest.
    ``weights`` are q's reveal probabilities at this step (for the decoder term at t = 1)."""

    logits: Tensor
    x_t: Tensor
    weights: Tensor
    choose: object  #: choose(generator) -> bool mask of the coordinates revealed at this step

    @property
    def levels(self) -> int:
        return self.logits.shape[2]

    def _values(self) -> Tensor:
        return levels_to_unit(torch.arange(self.levels, device=self.logits.device), self.levels).to(self.x_t.dtype)

    def ce(self, x0: Tensor) -> Tensor:
        """-log p(x0^d) for every coordinate d, in nats, (B, C, H, W)."""
        k = unit_to_levels(x0, self.levels)
        logp = torch.log_softmax(_wide(self.logits), dim=2)
        return -logp.gather(2, k.unsqueeze(2)).squeeze(2).to(x0.dtype)

    def nll(self, x0: Tensor, levels: int) -> Tensor:
        """The decoder term at t = 1: the cross-entropies of the coordinates revealed last."""
        return self.weights * self.ce(x0)

    @property
    def mean(self) -> Tensor:
        probs = torch.softmax(_wide(self.logits), dim=2).to(self.x_t.dtype)
        expect = (probs * self._values().view(1, 1, -1, 1, 1)).sum(2)
        return torch.where(is_masked(self.x_t), expect, self.x_t)

    @property
    def variance(self) -> Tensor:
        probs = torch.softmax(_wide(self.logits), dim=2).to(self.x_t.dtype)
        v = self._values().view(1, 1, -1, 1, 1)
        var = (probs * v**2).sum(2) - (probs * v).sum(2) ** 2
        return torch.where(is_masked(self.x_t), var, torch.zeros_like(var))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """x_{t-1}: the chosen coordinates drawn from their categoricals (Gumbel-max)."""
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device).clamp_(1e-20, 1.0)
        k = (_wide(self.logits) - torch.log(-torch.log(u))).argmax(dim=2)
        reveal = self.choose(generator)
        return torch.where(reveal, self._values()[k], self.x_t)

    def decode(self, generator: torch.Generator | None = None) -> Tensor:
        """The last step reveals the last coordinates by sampling them too (no noise to drop)."""
        return self.sample(generator)
