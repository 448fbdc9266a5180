"""The sigmoid schedule (as used by GeoDiff and later work): betas follow a logistic ramp."""

from __future__ import annotations

import torch
from gendiff.schedules import GaussianSchedule


class SigmoidSchedule(GaussianSchedule):
    """beta_t = beta_start + (beta_end - beta_start) * sigmoid(linspace(-6, 6, T)): slow at both
    ends, fast in the middle. Time convention: gendiff's, the paper's t in {1..T}."""

    name = "sigmoid"

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__(timesteps)
        for label, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{label} must be a number in (0, 1), got {v!r}")
        if beta_start >= beta_end:
            raise ValueError(f"beta_start ({beta_start}) must be below beta_end ({beta_end})")
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)

    def betas(self) -> torch.Tensor:
        ramp = torch.sigmoid(torch.linspace(-6, 6, self.timesteps, dtype=torch.float64))
        return self.beta_start + (self.beta_end - self.beta_start) * ramp
