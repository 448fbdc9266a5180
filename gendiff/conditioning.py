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


def class_names(num_classes: int, dataset=None) -> tuple[str, ...]:
    """The names of classes 0..K-1: the dataset's ``class_names`` where it has them, else the numbers."""
    names = tuple(getattr(dataset, "class_names", ()) or ())
    return names if len(names) == num_classes else tuple(str(c) for c in range(num_classes))


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parse_classes(specs, num_classes: int, names: tuple[str, ...] = ()) -> list[int]:
    """Classes named on a command line: each spec a number ``0..K-1``, a class name (any case;
    spaces, ``-`` and ``_`` ignored, e.g. ``sneaker`` or ``ankle boot``) or ``all`` (every class in
    order). Raises :class:`ConditioningError` naming the choices for anything else, and for an
    unconditional model (``num_classes`` 0)."""
    specs = [str(s).strip() for s in specs]
    if not num_classes:
        raise ConditioningError(
            f"--class {' '.join(specs)}: this model is not class-conditional (it was trained without "
            f"[conditioning] labels = true), so it cannot sample a class. Leave out --class, or train a "
            f"conditional recipe such as recipes/quickstart_conditional.toml."
        )
    names = names if len(names) == num_classes else tuple(str(c) for c in range(num_classes))
    lookup = {_key(name): c for c, name in enumerate(names)}
    choices = ", ".join(f"{c} ({name})" if name != str(c) else str(c) for c, name in enumerate(names))
    classes: list[int] = []
    for spec in specs:
        if spec.lower() == "all":
            classes.extend(range(num_classes))
        elif spec.lstrip("+-").isdigit():
            c = int(spec)
            if not 0 <= c < num_classes:
                raise ConditioningError(f"--class {spec}: out of range; this model has classes 0..{num_classes - 1}: {choices}.")
            classes.append(c)
        elif _key(spec) in lookup:
            classes.append(lookup[_key(spec)])
        else:
            raise ConditioningError(f"--class {spec!r}: no class of that number or name; the classes are {choices}, or 'all'.")
    if not classes:
        raise ConditioningError("--class: no class given.")
    return classes


def proportional_labels(counts, n: int, seed: int = 0) -> Tensor:
    """n labels with the classes in the proportions of ``counts`` (K,) (e.g. the training split's
    class counts): each class gets its share of n rounded by largest remainder (so the proportions
    are met as closely as n allows, with no sampling noise), in an order shuffled by ``seed``."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or not len(counts) or bool((counts < 0).any()) or not float(counts.sum()) > 0:
        raise ConditioningError(f"class counts must be K >= 1 non-negative numbers with a positive sum, got {counts.tolist()}.")
    share = counts / counts.sum() * n
    each = share.floor().long()
    remainder = share - each
    short = n - int(each.sum())
    if short:  # the largest remainders get one more (ties: the lower class)
        order = sorted(range(len(counts)), key=lambda c: (-float(remainder[c]), c))
        each[order[:short]] += 1
    labels = torch.repeat_interleave(torch.arange(len(counts)), each)
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
