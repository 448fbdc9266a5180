"""Every registered implementation of every family passes its family's conformance suite."""

import functools

import pytest

from gendiff import testing
from gendiff.plugins import create_plugin_system

SYSTEM = create_plugin_system()


@functools.lru_cache(maxsize=1)
def context():
    """One small digits run shared by the metric suites (built on first use)."""
    return testing.eval_context()
#: datasets whose files cannot exist here are checked in tests/test_datasets.py on fakes
NEEDS_FILES = {"cifar10", "image-folder", "mnist", "fashion-mnist"}
SUITES = {
    "schedule": lambda cls: testing.check_schedule(testing.example_instance(cls)),
    "parameterization": lambda cls: testing.check_parameterization(testing.example_instance(cls)),
    "variance": lambda cls: testing.check_variance(testing.example_instance(cls)),
    "weighting": lambda cls: testing.check_weighting(testing.example_instance(cls)),
    "sampler": lambda cls: testing.check_sampler(testing.example_instance(cls)),
    "dataset": lambda cls: testing.check_dataset(testing.example_instance(cls)),
    "time_sampler": lambda cls: testing.check_time_sampler(testing.example_instance(cls)),
    "metric": lambda cls: testing.check_metric(testing.example_instance(cls), context()),
    "logger": lambda cls: testing.check_logger(testing.example_instance(cls)),
    "backbone": testing.check_backbone,
}
CASES = [
    (family, name)
    for family in SUITES
    for name in SYSTEM.registry(family).names()
    if not (family == "dataset" and name in NEEDS_FILES)
]


@pytest.mark.parametrize("family, name", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_registered_component_conforms(family, name):
    SUITES[family](SYSTEM.registry(family).get(name))


def test_every_family_is_covered():
    assert set(SUITES) == set(SYSTEM.registries)


def test_the_suites_can_fail():
    """A suite that cannot fail proves nothing: feed each a deliberately broken component."""
    from gendiff.parameterizations import EpsParameterization
    from gendiff.samplers import Ancestral
    from gendiff.schedules import LinearSchedule
    from gendiff.variances import FixedLarge
    from gendiff.weightings import Simple

    class WrongX0(EpsParameterization):
        name = "wrong-x0"

        def to_x0(self, output, x_t, t, schedule):
            return x_t  # forgets to remove the noise

    class ForgetfulSchedule(LinearSchedule):
        name = "forgetful"

        def posterior_mean(self, x0, x_t, t):
            return x_t  # ignores eq. 7

    class HugeVariance(FixedLarge):
        name = "huge"

        def log_variance(self, var_output, x_t, t, schedule):
            return super().log_variance(var_output, x_t, t, schedule) + 3.0

    class Unseeded(Ancestral):
        name = "unseeded"

        def sample(self, model, shape, generator=None, progress=None):
            return super().sample(model, shape, None, progress)

    class PerBatch(Simple):
        name = "per-batch"

        def loss(self, terms):
            return terms.mse().mean()

    with pytest.raises(AssertionError, match="eq. 7"):
        testing.check_schedule(ForgetfulSchedule(timesteps=20))
    with pytest.raises(AssertionError, match="x0 round trip"):
        testing.check_parameterization(WrongX0())
    with pytest.raises(AssertionError, match="between"):
        testing.check_variance(HugeVariance())
    with pytest.raises(AssertionError, match="same generator seed"):
        testing.check_sampler(Unseeded())
    with pytest.raises(AssertionError, match="one value per example"):
        testing.check_weighting(PerBatch())
