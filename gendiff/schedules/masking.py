"""The masking forward process of the paper's autoregressive special case (Sec. 4.3).

Time convention: discrete, the paper's t in {1..T} (integer tensors; a fractional t is refused).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..distributions import BLANK, Reveal, is_masked
from .base import NoiseSchedule

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
    provides = frozenset({"masking", "discrete-time"})

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
        k = self.masked_count.to(like.device)[self.index(t).to(like.device)]
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
