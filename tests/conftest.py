import pytest
import torch

from gendiff.plugins import reset_plugin_system


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Every test sees a plugin system built from its own environment."""
    reset_plugin_system()
    yield
    reset_plugin_system()


@pytest.fixture
def base_recipe():
    """A small but complete recipe (tiny U-Net on 1x8x8 data, K = 17)."""
    return {
        "schedule": {"name": "linear", "timesteps": 100},
        "parameterization": {"name": "eps"},
        "variance": {"name": "fixed-large"},
        "weighting": {"name": "simple"},
        "sampler": {"name": "ancestral"},
        "backbone": {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "attn_resolutions": [4], "dropout": 0.0},
        "data": {"shape": [1, 8, 8], "levels": 17},
    }


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
