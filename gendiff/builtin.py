"""gendiff's own components, registered through the same hooks a third-party plugin uses."""

from __future__ import annotations

from . import loggers, parameterizations, samplers, schedules, time_samplers, variances, weightings
from .backbones import UNet
from .datasets import CIFAR10, MNIST, Digits, FashionMNIST, ImageFolder
from .evaluation import metrics
from .hookspecs import hookimpl


@hookimpl
def gendiff_register_schedules():
    return [schedules.LinearSchedule, schedules.CosineSchedule, schedules.QuadraticSchedule, schedules.VPCosine,
            schedules.VPLinear, schedules.MaskingSchedule, schedules.VDMFixed, schedules.VDMLearnedEndpoints,
            schedules.VDMLearned]


@hookimpl
def gendiff_register_parameterizations():
    return [
        parameterizations.EpsParameterization,
        parameterizations.X0Parameterization,
        parameterizations.MeanParameterization,
        parameterizations.VParameterization,
        parameterizations.ScoreParameterization,
        parameterizations.X0Logits,
    ]


@hookimpl
def gendiff_register_variances():
    return [variances.FixedLarge, variances.FixedSmall, variances.Learned, variances.LearnedRange,
            variances.CategoricalReveal]


@hookimpl
def gendiff_register_weightings():
    return [weightings.Simple, weightings.VLB, weightings.MeanMSE, weightings.Hybrid, weightings.MinSNR, weightings.P2,
            weightings.ContinuousVLB, weightings.DiscreteVLB, weightings.MaskedCE]


@hookimpl
def gendiff_register_backbones():
    return [UNet]


@hookimpl
def gendiff_register_samplers():
    return [samplers.Ancestral, samplers.DDIM, samplers.Respaced, samplers.DPMSolverPP, samplers.Heun]


@hookimpl
def gendiff_register_time_samplers():
    return [time_samplers.Uniform, time_samplers.LossSecondMoment, time_samplers.LowDiscrepancy]


@hookimpl
def gendiff_register_datasets():
    return [Digits, MNIST, FashionMNIST, CIFAR10, ImageFolder]


@hookimpl
def gendiff_register_metrics():
    return list(metrics.BUILTIN)


@hookimpl
def gendiff_register_loggers():
    return list(loggers.BUILTIN)
