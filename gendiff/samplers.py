"""Samplers: draw x0 from a composed model (Algorithm 2 and its successors).

Interface: :class:`Sampler` with one method, ``sample(model, shape, generator, progress)``.
A sampler receives the whole composed model, not one network output per step, so solvers
that call the model several times per step fit the same interface. What a sampler uses:

- ``model.prior_sample(shape, generator)``: x_T ~ p(x_T);
- ``model.p_transition(x_t, t, clip_x0=...)``: the reverse distribution p_theta(x_{t-1} | x_t),
  with ``.sample(generator)`` for t > 1 and ``.decode(generator)`` for the last step
  (``model.reverse_step`` gives it together with the prediction it came from);
- ``model.predict(x_t, t)``: the raw prediction (x0_hat, eps_hat, mean) for other solvers;
- ``model.timesteps`` and ``model.time(i, batch, device)`` (grid step i as the schedule's time);
- ``model.schedule`` for anything else (``log_snr``, ``time_from_log_snr``, the tables).

For a conditional model the sampler receives a conditioned view (:meth:`Diffusion.conditioned`):
its predictions are already conditioned and guided, so no sampler has conditioning code.

Time convention: grid steps i in {1..T} (the paper's t for a discrete schedule, t = i / T for a
continuous one); a reverse loop runs i = T, T-1, ..., 1. :class:`Heun` steps between any times a
continuous schedule accepts, and on a discrete one maps its noise levels to steps explicitly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch
from torch import Tensor

from .component import Component

#: ``progress(step, total)`` is called after every reverse step when given
Progress = Callable[[int, int], None]
#: ``trace(t, x_t, prediction)`` is called at every reverse step when given
Trace = Callable[[int, Tensor, object], None]


class Sampler(Component, ABC):
    """Turns a composed model into samples."""

    family: ClassVar[str] = "sampler"

    @abstractmethod
    def sample(
        self,
        model,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
    ) -> Tensor:
        """Samples x0 of ``shape`` (B, C, H, W) on the model's data scale [-1, 1]."""


class Ancestral(Sampler):
    """Algorithm 2: x_T ~ p(x_T); for t = T..1 draw x_{t-1} ~ p_theta(x_{t-1} | x_t); the last
    step (t = 1) takes the decoder's output without noise (z = 0 in Algorithm 2, line 4).

    ``clip_x0``: clip x0_hat to [-1, 1] before forming each mean, as the official sampler does.
    """

    name = "ancestral"

    def __init__(self, clip_x0: bool = True):
        if not isinstance(clip_x0, bool):
            raise ValueError(f"clip_x0 must be true or false, got {clip_x0!r}")
        self.clip_x0 = clip_x0

    @torch.no_grad()
    def sample(self, model, shape, generator=None, progress=None):
        x = model.prior_sample(shape, generator=generator)
        return self.run(model, x, model.timesteps, generator, progress)

    @torch.no_grad()
    def run(self, model, x: Tensor, t_from: int, generator=None, progress: Progress | None = None,
            trace: Trace | None = None) -> Tensor:
        """Algorithm 2 from x = x_{t_from} down to x0 (t = t_from, ..., 1). ``trace(t, x_t,
        prediction)`` sees every step's input and the model's prediction at it (progressive
        generation, Fig. 6 of the paper)."""
        for step, t in enumerate(range(t_from, 0, -1), start=1):
            rs = model.reverse_step(x, model.time(t, x.shape[0], x.device), clip_x0=self.clip_x0)
            if trace is not None:
                trace(t, x, rs.prediction)
            # Algorithm 2, lines 3-4: z ~ N(0, I) if t > 1 else z = 0
            x = rs.p.sample(generator) if t > 1 else rs.p.decode(generator)
            if progress is not None:
                progress(step, t_from)
        return x


def time_grid(T: int, steps: int) -> list[int]:
    """``steps`` paper times evenly spaced from T down to 1 (distinct integers, T and 1 included)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = min(steps, T)
    if steps == 1:
        return [T]
    return sorted({round(T - i * (T - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


class _Strided(Sampler):
    """Shared by the samplers that visit a subsequence of the T steps: one network evaluation at
    each time t of the grid, then ``update`` moves x from t to the next time s (0 after the last)."""

    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, steps: int = 50, clip_x0: bool = True):
        time_grid(2, steps)  # validates
        if not isinstance(clip_x0, bool):
            raise ValueError(f"clip_x0 must be true or false, got {clip_x0!r}")
        self.steps, self.clip_x0 = steps, clip_x0

    def grid(self, T: int) -> list[int]:
        return time_grid(T, self.steps)

    @abstractmethod
    def update(self, x: Tensor, pred, a_t: Tensor, a_s: Tensor, last: bool, state: dict, generator) -> Tensor:
        """x at the next time from x at t and the prediction there (abar_t, abar_s given)."""

    @torch.no_grad()
    def sample(self, model, shape, generator=None, progress=None):
        x = model.prior_sample(shape, generator=generator)
        grid = self.grid(model.timesteps)
        state: dict = {}
        for i, t in enumerate(grid):
            last = i + 1 == len(grid)
            s = 0 if last else grid[i + 1]
            pred = model.predict(x, model.time(t, shape[0], x.device), clip_x0=self.clip_x0)
            x = self.update(x, pred, self._abar(model, t, x), self._abar(model, s, x), last, state, generator)
            if progress is not None:
                progress(i + 1, len(grid))
        return x

    @staticmethod
    def _abar(model, t: int, x: Tensor) -> Tensor:
        """abar at paper time t (t = 0 gives 1), as a scalar tensor on x's device and dtype."""
        return model.schedule.tables["abar"][t].to(device=x.device, dtype=x.dtype)


def _noise(x: Tensor, generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class DDIM(_Strided):
    """DDIM (Song, Meng, Ermon 2021, eq. 12) on ``steps`` of the T times: from x0_hat and
    eps_hat at t, x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z with
    sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s); eta = 0 is deterministic,
    eta = 1 with all T steps is Algorithm 2 with the fixed-small variance. The last step lands
    on x0_hat. One network evaluation per step."""

    name = "ddim"

    def __init__(self, steps: int = 50, eta: float = 0.0, clip_x0: bool = True):
        super().__init__(steps, clip_x0)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
            raise ValueError(f"eta must be a non-negative number, got {eta!r}")
        self.eta = float(eta)

    def update(self, x, pred, a_t, a_s, last, state, generator):
        sigma = self.eta * torch.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = a_s.sqrt() * pred.x0 + torch.sqrt((1 - a_s - sigma**2).clamp(min=0)) * pred.eps
        return x if last or self.eta == 0 else x + sigma * _noise(x, generator)


class Respaced(_Strided):
    """Improved DDPM's respacing: Algorithm 2 on ``steps`` of the T times, with the betas of the
    shortened chain, beta'_i = 1 - abar_{t_i} / abar_{t_{i-1}}. Each step draws from the
    posterior of the respaced chain around x0_hat with variance beta~' ("small") or beta'
    ("large"); the last step is noiseless."""

    name = "respaced"

    def __init__(self, steps: int = 50, variance: str = "large", clip_x0: bool = True):
        super().__init__(steps, clip_x0)
        if variance not in ("small", "large"):
            raise ValueError(f"variance must be \"small\" or \"large\", got {variance!r}")
        self.variance = variance

    def update(self, x, pred, a_t, a_s, last, state, generator):
        beta = 1 - a_t / a_s  # the respaced chain's beta at this step
        mean = (a_s.sqrt() * beta / (1 - a_t)) * pred.x0 + ((1 - beta).sqrt() * (1 - a_s) / (1 - a_t)) * x
        if last:
            return mean.clamp(-1, 1)
        var = beta if self.variance == "large" else beta * (1 - a_s) / (1 - a_t)
        return mean + var.sqrt() * _noise(x, generator)


class DPMSolverPP(_Strided):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), the multistep second-order solver of the
    diffusion ODE in data prediction, with lambda = log(sqrt(abar) / sqrt(1 - abar)):
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i, D_i = x0_hat at the
    previous point, corrected by the one before (1 + 1/(2r)) D_i - D_{i-1} / (2r), r = h_{i-1}/h_i.
    ``steps`` network evaluations: steps - 1 solver steps from T down to t = 1, then x0_hat(x_1)."""

    name = "dpm-solver++"

    def grid(self, T: int) -> list[int]:
        return time_grid(T, max(2, self.steps))

    def update(self, x, pred, a_t, a_s, last, state, generator):
        if last:  # the final evaluation: denoise x_1
            return pred.x0.clamp(-1, 1)
        h = 0.5 * torch.log(a_s / (1 - a_s)) - 0.5 * torch.log(a_t / (1 - a_t))
        d = pred.x0
        if "d" in state:
            r = state["h"] / h
            d = (1 + 1 / (2 * r)) * pred.x0 - state["d"] / (2 * r)
        state.update(d=pred.x0, h=h)
        return torch.sqrt((1 - a_s) / (1 - a_t)) * x - a_s.sqrt() * torch.expm1(-h) * d


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022), eq. 5: ``steps`` noise levels from sigma_max down to sigma_min,
    evenly spaced in sigma^(1/rho), followed by sigma_N = 0 (float64, length steps + 1)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


class Heun(Sampler):
    """Karras et al. (2022), Algorithm 1 without churn: Heun's second-order method on the
    probability-flow ODE, in their variables x~ = x_t / alpha_t and sigma = sigma_t / alpha_t =
    exp(-lambda_t / 2) (lambda: the schedule's log-SNR), where dx~/dsigma = (x~ - D(x~; sigma)) / sigma
    and the denoiser D is the model's x0_hat at x_t = alpha_t x~.

    The noise levels follow :func:`karras_sigmas` from ``sigma_max`` to ``sigma_min`` (kept
    within the schedule's levels at grid steps T and 1), then 0. Each level is mapped to a time by the
    schedule (:meth:`GaussianSchedule.time_from_log_snr`) and replaced by that time's own sigma:
    exact for a continuous schedule; for a discrete one the step of nearest log-SNR (its times
    have nothing in between), so the ODE is integrated on noise levels the network was trained
    at and no time is ever truncated; repeated levels are dropped. The last step, to sigma = 0, is
    an Euler step, which lands on D. Network evaluations: 2 * steps - 1 (fewer on a discrete
    schedule when its distinct levels run out).

    Args:
        steps: N, the noise levels before 0 (18, as in Karras et al. for CIFAR-10).
        rho: the grid's exponent (7).
        sigma_min, sigma_max: the end levels (0.002 and 80, Karras et al.'s Table 1).
        clip_x0: clip x0_hat to [-1, 1] in every denoiser call (off: the plain ODE).
    """

    name = "heun"
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, steps: int = 18, rho: float = 7.0, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 clip_x0: bool = False):
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
            raise ValueError(f"steps must be an integer from 1 to 100,000, got {steps!r}")
        for label, v in (("rho", rho), ("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{label} must be a finite number > 0, got {v!r}")
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
        if not isinstance(clip_x0, bool):
            raise ValueError(f"clip_x0 must be true or false, got {clip_x0!r}")
        self.steps, self.rho, self.sigma_min, self.sigma_max = steps, float(rho), float(sigma_min), float(sigma_max)
        self.clip_x0 = clip_x0

    def levels(self, schedule) -> tuple[Tensor, Tensor]:
        """(times, sigmas): the grid's times in the schedule's convention and their exact sigmas
        (float64, the last sigma 0 with no time)."""
        ends = torch.stack([schedule.times(1, 1)[0], schedule.times(schedule.timesteps, 1)[0]])
        sig_lo, sig_hi = torch.exp(-0.5 * schedule.log_snr(ends)).tolist()
        lo, hi = max(self.sigma_min, sig_lo), min(self.sigma_max, sig_hi)
        sigmas = karras_sigmas(min(lo, hi), hi, self.steps, self.rho)
        times = schedule.time_from_log_snr(-2 * torch.log(sigmas[:-1]))
        times = torch.unique_consecutive(times)  # a discrete schedule may map neighbours to one step
        exact = torch.exp(-0.5 * schedule.log_snr(times))
        return times, torch.cat([exact, torch.zeros(1, dtype=torch.float64)])

    @torch.no_grad()
    def sample(self, model, shape, generator=None, progress=None):
        times, sigmas = self.levels(model.schedule)
        x = model.prior_sample(shape, generator=generator)
        x = x * torch.sqrt(1 + sigmas[0] ** 2).to(x.dtype)  # x~ = x_T / alpha_T

        def slope(x, i):  # (x~ - D(x~; sigma_i)) / sigma_i, at the step's own time
            t = times[i].expand(shape[0]).to(x.device)
            s = sigmas[i].item()
            x0 = model.predict(x / math.sqrt(1 + s * s), t, clip_x0=self.clip_x0).x0
            return (x - x0) / s

        n = len(times)
        for i in range(n):
            h = (sigmas[i + 1] - sigmas[i]).item()
            d = slope(x, i)
            x_next = x + h * d  # Euler
            if i + 1 < n:  # Heun's correction (Algorithm 1, lines 6-8)
                x_next = x + h * 0.5 * (d + slope(x_next, i + 1))
            x = x_next
            if progress is not None:
                progress(i + 1, n)
        return x
