"""Training, shared by every recipe (Algorithm 1 and the paper's optimisation).

- :mod:`.setup`: :func:`prepare` turns a recipe into a :class:`RunSetup` (model, resolved recipe, data);
- :mod:`.data`: :class:`DataStream`, batches whose position is a function of the step;
- :mod:`.folder`: :class:`RunFolder`, the run folder's recipe, metrics and checkpoints;
- :mod:`.trainer`: :class:`Trainer`, the optimisation loop.

Using a finished run (loading, sampling) is :mod:`gendiff.runs`; devices, precision and seeded
generators are :mod:`gendiff.runtime`. Both are re-exported here for convenience.
"""

from ..errors import TrainingError
from ..runs import generate, load_run, write_samples
from ..runtime import autocast, bf16_supported, choose_device, choose_precision, step_generator
from .data import DataStream
from .folder import RunFolder
from .setup import RunSetup, prepare
from .trainer import COMPILE_OPTIONS, EMA, Trainer, TrainSummary, make_adam

__all__ = [
    "COMPILE_OPTIONS", "DataStream", "EMA", "RunFolder", "RunSetup", "TrainSummary", "Trainer", "TrainingError",
    "autocast", "bf16_supported", "choose_device", "choose_precision", "generate", "load_run", "make_adam",
    "prepare", "step_generator", "write_samples",
]
