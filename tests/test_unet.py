"""The Appendix B U-Net."""

import pytest
import torch

from gendiff.backbones.unet import UNet, timestep_embedding


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_cifar10_configuration_has_35_7m_parameters():
    net = UNet(in_channels=3, out_channels=3, image_size=32)  # the defaults are the CIFAR-10 config
    assert abs(count(net) - 35.7e6) <= 0.1e6
    assert len([m for m in net.modules() if type(m).__name__ == "AttnBlock"]) == 2 + 3 + 1  # 16x16 down, up, middle


def test_learned_variance_output_adds_only_the_last_layer():
    small = UNet(3, 3, 32)
    double = UNet(3, 6, 32)
    assert count(double) - count(small) == 128 * 3 * 9 + 3  # one more 3x3 conv output per channel


def test_forward_shapes_and_zero_initial_output():
    net = UNet(4, 6, 16, channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
    out = net(torch.randn(2, 4, 16, 16), torch.tensor([1, 1000]))
    assert out.shape == (2, 6, 16, 16)
    assert torch.count_nonzero(out) == 0  # the official code zero-initialises the output conv


def test_timestep_embedding_is_sinusoidal():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 3)
    assert torch.allclose(emb[1, :4], torch.sin(3 * freqs)) and torch.allclose(emb[1, 4:], torch.cos(3 * freqs))


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 30}, "divisible by norm_groups"),
    ({"channel_mult": []}, "channel_mult"),
    ({"channel_mult": [1, 0]}, "channel_mult"),
    ({"attn_resolutions": [7]}, "do not occur"),
    ({"dropout": 1.5}, "dropout"),
    ({"num_res_blocks": 0}, "num_res_blocks"),
])
def test_bad_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(3, 3, 32, **kwargs)


def test_image_size_must_survive_the_downsampling():
    with pytest.raises(ValueError, match="cannot be halved"):
        UNet(1, 1, 12, channel_mult=(1, 2, 2, 2), attn_resolutions=())
