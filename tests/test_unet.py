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


def test_dropout_keeps_with_probability_one_minus_p_and_preserves_the_mean():
    from gendiff.backbones.unet import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.ones(1_000_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    # binomial(1e6, 0.9): standard deviation 300 examples, so 5 sigma is 1.5e-3 of the count
    assert abs(kept.float().mean().item() - 0.9) < 1.5e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    assert abs(y.mean().item() - 1.0) < 2e-3
    y.sum().backward()  # the gradient flows only through the kept entries, scaled alike
    assert torch.equal(x.grad, y.detach())
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_under_bf16_autocast_keeps_the_input_dtype():
    from gendiff.backbones.unet import Dropout

    x = torch.randn(64, 8, dtype=torch.bfloat16)
    assert Dropout(0.5).train()(x).dtype == torch.bfloat16
