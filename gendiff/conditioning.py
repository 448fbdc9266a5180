"""Class conditioning and classifier-free guidance (Ho & Salimans 2022).

A conditional model sees, besides (x_t, t), a class label c in {0..K-1} per example, or the
*null* label K ("no class"). Training replaces each label by the null label with probability
``label_dropout`` (p_uncond), so one network learns both eps(x_t, c) and eps(x_t, null).
Sampling with guidance weight w uses

    eps~(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t, null)

(w = 0 is the plain conditional model). :meth:`Conditioning.guide` applies this to the
parameterization's share of the network output, once, inside :meth:`Diffusion.network`, so every
sampler gets guided predictions without code of its own. For every built-in Gaussian
parameterization the output is an affine function of eps at fixed (x_t, t) with coefficients
that sum to one across the two terms, so guiding the output is exactly guiding eps; for x0
logits (masking) it is guidance on the logits. A learned variance keeps the conditional output.

Labels are LongTensors (B,); a single label (an int or a one-element tensor) is repeated over
the batch. The recipe's ``[conditioning]`` table sets ``labels``, ``label_dropout`` and ``guidance``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import GendiffError


class ConditioningError(GendiffError, ValueError):
    """Labels or a guidance weight that the model cannot take."""


class GuidanceWarning(UserWarning):
    """Guidance asked of a model that never learned the null label."""


@dataclass(frozen=True)
class Conditioning:
    """What a composed model is conditioned on.

    Args:
        num_classes: K, the number of classes (0: an unconditional model).
        label_dropout: the training probability of the null label (classifier-free guidance).
        guidance: the default guidance weight w for sampling.
    """

    num_classes: int = 0
    label_dropout: float = 0.0
    guidance: float = 0.0

    @property
    def null(self) -> int:
        """The null label ("no class"): K."""
        return self.num_classes

    @property
    def active(self) -> bool:
        return self.num_classes > 0

    def labels(self, cond, batch: int | None = None, device=None) -> Tensor:
        """Checked labels as a LongTensor: shape (batch,) (a single label is repeated), values in
        {0..K} (K is the null label). Raises :class:`ConditioningError` for anything else."""
        if not self.active:
            raise ConditioningError("this model is not class-conditional: it takes no labels (cond must be None).")
        if isinstance(cond, bool) or not isinstance(cond, (int, Tensor)):
            raise ConditioningError(f"labels must be an integer or an integer tensor, got {type(cond).__name__}.")
        labels = torch.as_tensor(cond, device=device)
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim > 1:
            raise ConditioningError(f"labels must be integers of shape (B,), got {labels.dtype} {tuple(labels.shape)}.")
        labels = labels.reshape(-1).long()
        if batch is not None and len(labels) == 1:
            labels = labels.expand(batch)
        if batch is not None and len(labels) != batch:
            raise ConditioningError(f"{len(labels)} labels for a batch of {batch}.")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > self.null):
            raise ConditioningError(
                f"labels must lie in 0..{self.num_classes - 1} (or {self.null}, the null label), got "
                f"{int(labels.min())}..{int(labels.max())}."
            )
        return labels

    def default_labels(self, n: int, device=None) -> Tensor | None:
        """The classes 0, 1, ..., K-1, 0, 1, ... for n samples (None for an unconditional model)."""
        return torch.arange(n, device=device) % self.num_classes if self.active else None

    def check_guidance(self, guidance: float | None) -> float:
        """The guidance weight to use (the default when None): finite and >= 0. Guidance of a
        model trained without label dropout warns: its null label was never learned."""
        w = self.guidance if guidance is None else guidance
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConditioningError(f"the guidance weight must be a finite number >= 0, got {w!r}.")
        if w and not self.active:
            raise ConditioningError("guidance needs a class-conditional model; this one is unconditional.")
        if w and self.label_dropout == 0:
            warnings.warn(
                f"guidance weight {w} on a model trained with label_dropout = 0: the null label was never "
                f"learned, so eps(x, null) is untrained and the guided samples are not meaningful.",
                GuidanceWarning, stacklevel=3,
            )
        return float(w)

    def drop(self, labels: Tensor, uniform: Tensor) -> Tensor:
        """Training labels with each replaced by the null label where ``uniform`` (U(0, 1) draws,
        one per label) falls below ``label_dropout``."""
        return torch.where(uniform < self.label_dropout, torch.full_like(labels, self.null), labels)

    @staticmethod
    def guide(conditional: Tensor, unconditional: Tensor, w: float) -> Tensor:
        """(1 + w) conditional - w unconditional (Ho & Salimans 2022, eq. 6)."""
        return conditional + w * (conditional - unconditional)
