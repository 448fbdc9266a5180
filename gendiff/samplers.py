"""Samplers: draw x0 from a composed model (Algorithm 2 and its successors).

Interface: :class:`Sampler` with one method, ``sample(model, shape, generator, progress)``.
A sampler receives the whole composed model, not one network output per step, so solvers
that call the model several times per step fit the same interface. What a sampler uses:

- ``model.prior_sample(shape, generator)``: x_T ~ p(x_T);
- ``model.p_transition(x_t, t, clip_x0=...)``: the reverse distribution p_theta(x_{t-1} | x_t),
  with ``.sample(generator)`` for t > 1 and ``.decode(generator)`` for the last step
  (``model.reverse_step`` gives it together with the prediction it came from);
- ``model.predict(x_t, t)``: the raw prediction (x0_hat, eps_hat, mean) for other solvers;
- ``model.timesteps`` and ``model.time(t, batch, device)``.

Time convention: the paper's t in {1..T}; a reverse loop runs t = T, T-1, ..., 1.
"""

from __future__ import annotations

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
