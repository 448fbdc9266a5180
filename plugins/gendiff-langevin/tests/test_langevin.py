"""gendiff-langevin's own tests: gendiff's published conformance suites, plus the plugin's
behaviour as an installed package."""

import pytest
import torch
from gendiff.plugins import create_plugin_system
from gendiff.testing import check_sampler, check_schedule

from gendiff_langevin import LangevinPC, SigmoidSchedule


def test_the_sampler_conforms():
    check_sampler(LangevinPC(corrector_steps=2))


def test_the_schedule_conforms():
    check_schedule(SigmoidSchedule(timesteps=100))


def test_registered_through_the_entry_point():
    system = create_plugin_system()
    assert system.registry("sampler").plugin_of("langevin-pc") == "langevin"
    assert system.registry("schedule").plugin_of("sigmoid") == "langevin"
    assert system.plugins["langevin"].version == "0.1.0"


def test_sigmoid_betas_ramp_from_start_to_end():
    beta = SigmoidSchedule(timesteps=1000).betas()
    assert beta[0] > 1e-4 and beta[-1] < 0.02 and (beta[1:] > beta[:-1]).all()
    assert abs(beta[499].item() - (1e-4 + 0.02) / 2) < 1e-4


def test_zero_corrector_steps_is_the_ancestral_sampler():
    from gendiff.samplers import Ancestral
    from gendiff.testing import tiny_model

    model = tiny_model(timesteps=20)
    a = LangevinPC(corrector_steps=0).sample(model, (3, 2, 4, 4), torch.Generator().manual_seed(0))
    b = Ancestral().sample(model, (3, 2, 4, 4), torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="snr"):
        LangevinPC(snr=0)
    with pytest.raises(ValueError, match="beta_start"):
        SigmoidSchedule(beta_start=0.1, beta_end=0.01)
