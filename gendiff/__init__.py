"""gendiff: diffusion models from replaceable components (Ho, Jain, Abbeel 2020, exactly).

Public API::

    import gendiff
    model = gendiff.build("recipes/ddpm_cifar10.toml")   # or a dict, or a model callable
    loss = model.training_loss(x0)                      # Algorithm 1
    nll = model.nll_bpd(x0)                              # eq. 5 in bits/dim, with its terms
    x = model.sample(16)                                 # Algorithm 2, x0 in [-1, 1]

Time convention: the schedule's. The paper's t in {1..T}, as an integer tensor, for a discrete
schedule (a fractional t is refused); t in (0, 1] with a grid t_i = i / T for a continuous one.
"""

from __future__ import annotations

from .hookspecs import hookimpl
from .version import __version__

__all__ = ["build", "hookimpl", "__version__", "Diffusion", "NLL"]


def __getattr__(name):  # keep ``import gendiff`` light: torch-heavy modules load on first use
    if name == "build":
        from .builder import build

        return build
    if name in ("Diffusion", "NLL"):
        from . import diffusion

        return getattr(diffusion, name)
    raise AttributeError(f"module 'gendiff' has no attribute {name!r}")
