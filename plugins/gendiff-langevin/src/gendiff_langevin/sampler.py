"""Predictor-corrector sampling with annealed Langevin dynamics (Song et al. 2021, Alg. 5),
on a gendiff model through its public interface.

The score of the noisy marginal is read off the eps prediction (the unified perspective,
Tweedie): grad log q(x_t) = -eps_theta(x_t, t) / sqrt(1 - abar_t). At every t = T..1:

1. corrector, ``corrector_steps`` times: z ~ N(0, I),
   step = 2 alpha_t (snr ||z|| / ||score||)^2 (per example),
   x <- x + step * score + sqrt(2 step) z;
2. predictor: one step of Algorithm 2 (x_{t-1} ~ p_theta(x_{t-1} | x_t); noiseless at t = 1).
"""

from __future__ import annotations

import torch
from gendiff.samplers import Sampler


class LangevinPC(Sampler):
    """Annealed Langevin corrector + ancestral predictor.

    Args:
        corrector_steps: Langevin steps per noise level (1).
        snr: the signal-to-noise ratio that sets the step size (0.16 as for CIFAR-10 VP in Song et al.).
        clip_x0: clip x0_hat to [-1, 1] in the predictor step, as gendiff's ancestral sampler.
    """

    name = "langevin-pc"
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, corrector_steps: int = 1, snr: float = 0.16, clip_x0: bool = True):
        if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
            raise ValueError(f"corrector_steps must be a non-negative integer, got {corrector_steps!r}")
        if isinstance(snr, bool) or not isinstance(snr, (int, float)) or snr <= 0:
            raise ValueError(f"snr must be a positive number, got {snr!r}")
        self.corrector_steps, self.snr, self.clip_x0 = corrector_steps, float(snr), clip_x0

    def score(self, model, x, t):
        """grad log q(x_t) from the model's eps prediction."""
        eps = model.predict(x, t).eps
        return -eps / model.schedule.at("sqrt_one_minus_abar", t, x)

    @torch.no_grad()
    def sample(self, model, shape, generator=None, progress=None):
        x = model.prior_sample(shape, generator=generator)
        T = model.timesteps
        for step, t in enumerate(range(T, 0, -1), start=1):
            tt = model.time(t, shape[0], x.device)
            alpha = model.schedule.at("alpha", tt, x)
            for _ in range(self.corrector_steps):  # annealed Langevin at noise level t
                s = self.score(model, x, tt)
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                ratio = z.flatten(1).norm(dim=1) / s.flatten(1).norm(dim=1).clamp(min=1e-12)
                size = (2 * alpha.flatten() * (self.snr * ratio) ** 2).view(-1, *([1] * (x.ndim - 1)))
                x = x + size * s + (2 * size).sqrt() * z
            p = model.p_transition(x, tt, clip_x0=self.clip_x0)  # the predictor: Algorithm 2
            x = p.sample(generator) if t > 1 else p.decode(generator)
            if progress is not None:
                progress(step, T)
        return x
