"""Noise schedules: the fixed forward process q(x_t | x0) and its time (Sec. 2, eqs. 2-7).

- :mod:`.base`: the interface :class:`NoiseSchedule` and the time contract (discrete or continuous);
- :mod:`.gaussian`: Gaussian processes, discrete (:class:`GaussianSchedule`: ``linear``,
  ``quadratic``, ``cosine``) and continuous (:class:`ContinuousGaussianSchedule`: ``vp-cosine``,
  ``vp-linear``);
- :mod:`.vdm`: Variational Diffusion Model schedules given by gamma(t) = -log SNR(t), finite SNR
  at both ends (``vdm-fixed``, ``vdm-learned-endpoints``, ``vdm-learned``);
- :mod:`.masking`: the masking process of the autoregressive special case (Sec. 4.3).

Time convention: a discrete schedule's t is the paper's t in {1..T} (integer tensors (B,)); a
continuous schedule's t lies in (0, 1] (float64 tensors), with grid t_i = i / T.
"""

from .base import NoiseSchedule, TimeError
from .gaussian import (
    MAX_TIMESTEPS, POINTWISE, ContinuousGaussianSchedule, CosineSchedule, GaussianSchedule, LinearSchedule,
    QuadraticSchedule, VPCosine, VPLinear, pointwise,
)
from .masking import ORDERS, MaskingSchedule
from .vdm import VDMFixed, VDMLearned, VDMLearnedEndpoints, VDMSchedule

__all__ = [
    "MAX_TIMESTEPS", "ORDERS", "POINTWISE", "ContinuousGaussianSchedule", "CosineSchedule", "GaussianSchedule",
    "LinearSchedule", "MaskingSchedule", "NoiseSchedule", "QuadraticSchedule", "TimeError", "VDMFixed", "VDMLearned",
    "VDMLearnedEndpoints", "VDMSchedule", "VPCosine", "VPLinear", "pointwise",
]
