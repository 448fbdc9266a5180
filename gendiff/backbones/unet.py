"""The U-Net of the paper's Appendix B (a PixelCNN++-like Wide-ResNet U-Net).

GroupNorm everywhere, a sinusoidal (Transformer) time embedding passed through two dense
layers and added in every residual block, self-attention at chosen resolutions, dropout in the
residual blocks, learned 3x3 stride-2 downsampling and nearest-neighbour + 3x3 conv upsampling.
The CIFAR-10 configuration (``channels=128``, ``channel_mult=(1, 2, 2, 2)``, 2 residual blocks,
attention at 16x16, dropout 0.1) has 35.7M parameters, as in the paper. Output convolutions of
residual branches, attention projections and the final layer start at zero, as in the
official code.

Time convention: ``forward(x, t)`` takes the schedule's network time: the paper's t in {1..T}
(integer tensor (B,)) for a discrete schedule, 1000 t for a continuous one. The embedding is of
``t - time_offset``: 0 by default (for a model trained here the offset is immaterial); 1 is the
official code's and diffusers' convention (they index time 0..T-1), which a network trained there
needs to give the same outputs (``gendiff import diffusers`` sets it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (B,) times into (B, dim) (Vaswani et al., as in Appendix B)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    module.zero_init = True  # kept at zero by init = "official" too (the official init_scale = 0)
    return module


def variance_scaling_(weight: Tensor, fan_out: int | None = None) -> Tensor:
    """TensorFlow's ``variance_scaling(1.0, "fan_avg", "uniform")``, the official code's default
    initialiser: U(-limit, limit) with limit = sqrt(3 / fan_avg), fan_avg = (fan_in + fan_out) / 2,
    both counted with the kernel's receptive field (``fan_out`` overrides the output count, for a
    layer that fuses several of the official layers)."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in = weight.shape[1] * receptive
    fan_out = (fan_out if fan_out is not None else weight.shape[0]) * receptive
    limit = math.sqrt(3.0 / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return weight.uniform_(-limit, limit)


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from ``torch.rand`` in float32: the same distribution
    as ``nn.Dropout`` (keep with probability 1 - p, scale kept values by 1 / (1 - p)), but on a
    CPU ``bernoulli_`` is about 1.5x slower than ``rand`` and dropout's random numbers are a
    visible share of a training step (see docs/benchmarks.md)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResBlock(nn.Module):
    """Wide-ResNet block: GN, SiLU, conv; + dense(time embedding); GN, SiLU, dropout, conv;
    1x1 skip projection when the channel count changes."""

    def __init__(self, cin: int, cout: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.dropout = Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (scaled dot product)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (B, 3C, H, W) -> q, k, v each (B, 1 head, H*W positions, C)
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).permute(1, 0, 3, 2).unsqueeze(2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, H*W, C)
        return x + self.proj(out.squeeze(1).transpose(1, 2).reshape(b, c, h, w))


class UNet(Backbone):
    """Appendix B's U-Net, configurable.

    Args (the recipe's ``[backbone]`` table):
        channels: base channel count (128 for CIFAR-10).
        channel_mult: per-resolution multipliers, highest resolution first ((1, 2, 2, 2)).
        num_res_blocks: residual blocks per resolution on the way down (2; one more on the way up).
        attn_resolutions: resolutions (pixels) with self-attention after each block ((16,)).
        dropout: dropout rate inside residual blocks (0.1).
        norm_groups: GroupNorm groups (32); ``channels`` must be divisible by it.
        time_offset: the embedding is of t - time_offset (0; 1 for the official 0..T-1 indexing).
        init: ``"pytorch"`` (PyTorch's default initialisation) or ``"official"`` (the official
            code's: TensorFlow's variance scaling, fan_avg, uniform, for every convolution and
            dense layer, with q, k and v counted as three layers; zero biases); the layers the
            official code starts at (almost) zero start at zero either way.
        downsample_padding: ``"symmetric"`` (one pixel on every side of the stride-2 convolution) or
            ``"same"`` (TensorFlow's "SAME" for even sizes, as the official code: none before,
            one after, in each spatial dimension).
        fourier_features: exponents n of Fourier features of the input (VDM, Kingma et al. 2021,
            Appendix C): sin(2^n pi x) and cos(2^n pi x) of every input channel are concatenated to
            the input, which helps the network resolve fine detail near t = 0 (VDM uses n = 7, 8 for
            8-bit images; () adds none, the paper's U-Net).
    Set by gendiff: in_channels, out_channels, image_size, and num_classes: K > 0 adds a learned
    embedding of K + 1 labels (the last is the null label of classifier-free guidance) to the time
    embedding, as in Dhariwal & Nichol (2021); 0 (unconditional) adds nothing.
    """

    name = "unet"
    provides = frozenset({"class-labels"})
    #: a small configuration for the conformance suite and quick tests
    example_args = {"channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        norm_groups: int = 32,
        time_offset: int = 0,
        downsample_padding: str = "symmetric",
        init: str = "pytorch",
        num_classes: int = 0,
        fourier_features: Sequence[int] = (),
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        _check_positive_int("channels", channels)
        _check_positive_int("num_res_blocks", num_res_blocks)
        if num_res_blocks > 64:
            raise ValueError(f"num_res_blocks must be at most 64, got {num_res_blocks}")
        _check_positive_int("norm_groups", norm_groups)
        if not channel_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty list of positive integers, got {list(channel_mult)}")
        if channels % norm_groups:
            raise ValueError(f"channels ({channels}) must be divisible by norm_groups ({norm_groups})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        levels = len(channel_mult)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size {image_size} cannot be halved {levels - 1} times "
                f"(channel_mult has {levels} resolutions)"
            )
        resolutions = [image_size // 2**i for i in range(levels)]
        missing = [r for r in attn_resolutions if r not in resolutions]
        if missing:
            raise ValueError(
                f"attn_resolutions {missing} do not occur; this U-Net's resolutions are {resolutions}"
            )
        if isinstance(time_offset, bool) or not isinstance(time_offset, int) or time_offset not in (0, 1):
            raise ValueError(f"time_offset must be 0 or 1, got {time_offset!r}")
        if init not in ("pytorch", "official"):
            raise ValueError(f"init must be \"pytorch\" or \"official\", got {init!r}")
        if downsample_padding not in ("symmetric", "same"):
            raise ValueError(f"downsample_padding must be \"symmetric\" or \"same\", got {downsample_padding!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        fourier_features = tuple(fourier_features)
        if any(isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 16 for n in fourier_features) or \
                len(set(fourier_features)) != len(fourier_features):
            raise ValueError(f"fourier_features must be distinct integer exponents from 0 to 16, got "
                             f"{list(fourier_features)}")
        attn = set(attn_resolutions)
        self.channels, self.num_classes, self.time_offset = channels, num_classes, time_offset
        self.register_buffer("fourier_scales", torch.tensor([2.0**n * math.pi for n in fourier_features]),
                             persistent=False)
        temb_dim = 4 * channels
        self.temb = nn.Sequential(
            nn.Linear(channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim)
        )
        if num_classes:  # K classes and the null label
            self.label_emb = nn.Embedding(num_classes + 1, temb_dim)
        self.conv_in = nn.Conv2d(in_channels * (1 + 2 * len(fourier_features)), channels, 3, padding=1)

        def block(cin, cout):
            return ResBlock(cin, cout, temb_dim, float(dropout), norm_groups)

        # downsampling path; remember every skip's channel count
        self.down = nn.ModuleList()
        skips = [channels]
        ch = channels
        for i, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = nn.ModuleList([block(ch, channels * mult)])
                ch = channels * mult
                if resolutions[i] in attn:
                    layers.append(AttnBlock(ch, norm_groups))
                self.down.append(layers)
                skips.append(ch)
            if i != levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch, downsample_padding)]))
                skips.append(ch)
        self.mid = nn.ModuleList([block(ch, ch), AttnBlock(ch, norm_groups), block(ch, ch)])
        # upsampling path: num_res_blocks + 1 blocks per resolution, each eating one skip
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers = nn.ModuleList([block(ch + skips.pop(), channels * mult)])
                ch = channels * mult
                if resolutions[i] in attn:
                    layers.append(AttnBlock(ch, norm_groups))
                self.up.append(layers)
            if i != 0:
                self.up.append(nn.ModuleList([_Upsample(ch)]))
        self.norm_out = nn.GroupNorm(norm_groups, ch, eps=1e-6)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        if init == "official":
            self.official_init()

    def official_init(self) -> None:
        """The official code's initialisation (see ``init``); zero-initialised layers stay zero."""
        for module in self.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)) or getattr(module, "zero_init", False):
                continue
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.Conv2d) and module.out_channels == 3 * module.in_channels and \
                    any(getattr(block, "qkv", None) is module for block in self.modules()):
                c = module.in_channels
                for i in range(3):  # q, k and v: three layers of C outputs each
                    variance_scaling_(module.weight.data[i * c:(i + 1) * c], fan_out=c)
            else:
                variance_scaling_(module.weight)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """x (B, in_channels, H, W), time t (B,) and, for a conditional U-Net, labels (B,) in
        {0..K} (K: the null label; None means the null label for every example)."""
        temb = self.temb(timestep_embedding(t - self.time_offset if self.time_offset else t, self.channels))
        if self.num_classes:
            if cond is None:
                cond = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            temb = temb + self.label_emb(cond)
        elif cond is not None:
            raise ValueError("this U-Net was built without classes (num_classes = 0); it takes no labels")
        if len(self.fourier_scales):  # (B, C, H, W) -> (B, C (1 + 2 F), H, W)
            angles = (x.unsqueeze(2) * self.fourier_scales.to(x.dtype).view(1, 1, -1, 1, 1)).flatten(1, 2)
            x = torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1)
        hs = [self.conv_in(x)]
        for layers in self.down:
            hs.append(_apply(layers, hs[-1], temb))
        h = hs[-1]
        for layer in self.mid:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = _apply(layers, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


class Downsample(nn.Conv2d):
    """A learned 3x3 stride-2 convolution (its parameters named as a plain ``nn.Conv2d``'s);
    ``padding`` "symmetric" (1 on every side) or "same" (TensorFlow's SAME for even sizes: 0
    before, 1 after)."""

    def __init__(self, ch: int, padding: str = "symmetric"):
        self.same = padding == "same"
        super().__init__(ch, ch, 3, stride=2, padding=0 if self.same else 1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.same else x)


class _Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _apply(layers: nn.ModuleList, h: Tensor, temb: Tensor) -> Tensor:
    for layer in layers:
        h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
    return h


def _check_positive_int(label: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
