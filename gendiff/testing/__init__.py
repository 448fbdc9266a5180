"""Conformance suites, one per component family, for gendiff's own components and for plugins.

Each ``check_<family>`` function builds what it needs, runs the family's contract (shapes,
dtypes, float64 agreement, the family's invariants) and raises ``AssertionError`` with a message
saying what broke. A plugin author runs them from pytest::

    from gendiff.testing import check_schedule
    from my_plugin import MySchedule

    def test_my_schedule_conforms():
        check_schedule(MySchedule())

Components that need constructor arguments give a small working set as the class attribute
``example_args`` (used by :func:`example_instance`).
"""

from .helpers import example_instance
from .models import TinyConv, eval_context, testing_plugin_system, tiny_model
from .process import check_parameterization, check_schedule, check_variance
from .suites import (
    check_backbone, check_dataset, check_logger, check_metric, check_sampler, check_time_sampler, check_trainable,
    check_weighting,
)

__all__ = [
    "example_instance",
    "check_schedule",
    "check_parameterization",
    "check_variance",
    "check_weighting",
    "check_backbone",
    "check_sampler",
    "check_dataset",
    "check_time_sampler",
    "check_metric",
    "check_logger",
    "check_trainable",
    "eval_context",
    "tiny_model",
    "testing_plugin_system",
    "TinyConv",
]


