"""gendiff-langevin: a predictor-corrector sampler with annealed Langevin correctors, and a
sigmoid noise schedule, registered through gendiff's public hooks only."""

from __future__ import annotations

import gendiff

from .sampler import LangevinPC
from .schedule import SigmoidSchedule

__version__ = "0.1.0"


@gendiff.hookimpl
def gendiff_register_samplers():
    return [LangevinPC]


@gendiff.hookimpl
def gendiff_register_schedules():
    return [SigmoidSchedule]
