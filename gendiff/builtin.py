"""gendiff's own components, registered through the same hooks a third-party plugin uses."""

from __future__ import annotations

from . import parameterizations, samplers, schedules, variances, weightings
from .backbones import UNet
from .datasets import CIFAR10, Digits, ImageFolder
from .plugins import hookimpl


@hookimpl
def gendiff_register_schedules():
    return [schedules.LinearSchedule, schedules.CosineSchedule, schedules.QuadraticSchedule]


@hookimpl
def gendiff_register_parameterizations():
    return [
        parameterizations.EpsParameterization,
        parameterizations.X0Parameterization,
        parameterizations.MeanParameterization,
        parameterizations.VParameterization,
        parameterizations.ScoreParameterization,
    ]


@hookimpl
def gendiff_register_variances():
    return [variances.FixedLarge, variances.FixedSmall, variances.Learned, variances.LearnedRange]


@hookimpl
def gendiff_register_weightings():
    return [weightings.Simple, weightings.VLB, weightings.MeanMSE, weightings.Hybrid]


@hookimpl
def gendiff_register_backbones():
    return [UNet]


@hookimpl
def gendiff_register_samplers():
    return [samplers.Ancestral]


@hookimpl
def gendiff_register_datasets():
    return [Digits, CIFAR10, ImageFolder]
