"""Training and sampling throughput of the CIFAR-10 U-Net (35.7M parameters): gendiff against
diffusers' UNet2DModel in the google/ddpm-cifar10-32 configuration, in one process, runs
alternating, fp32 and bf16 autocast. Needs the `bench` extra: pip install -e ".[bench]".

    python benchmarks/throughput.py [--batch 16] [--steps 3] [--rounds 2]
    python benchmarks/throughput.py --memory gendiff|diffusers [--batch 128]   # peak RSS of one step
    python benchmarks/throughput.py --device cuda --batch 128 --compile           # on a GPU

A training step is forward, eps-MSE loss, backward and an Adam step (PyTorch's fused Adam for
both, so the comparison is of the networks and the loss); a sampling step is one forward pass
under torch.no_grad.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import gendiff
from gendiff.training import make_adam


def gendiff_model():
    return gendiff.build("recipes/ddpm_cifar10.toml")


def diffusers_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        dropout=0.1, norm_eps=1e-6, norm_num_groups=32, freq_shift=1, flip_sin_to_cos=False,
        downsample_padding=0, attention_head_dim=None,
    )


class DiffusersStep:
    """Algorithm 1 around diffusers' network, written the usual way."""

    def __init__(self):
        self.net = diffusers_unet()
        b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.abar = torch.cumprod(1 - b, 0).float()

    def loss(self, x0):
        t = torch.randint(0, 1000, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return torch.nn.functional.mse_loss(self.net(x_t, t).sample, eps)

    def forward(self, x, t):
        return self.net(x, t - 1).sample


def contenders(dev):
    g = gendiff_model().to(dev)
    d = DiffusersStep()
    d.net.to(dev)
    d.abar = d.abar.to(dev)
    return {
        "gendiff": (g.backbone, g.training_loss, lambda x, t: g.backbone(x, t)),
        "diffusers": (d.net, d.loss, d.forward),
    }


def timed(fn, steps):
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory", choices=["gendiff", "diffusers"])
    parser.add_argument("--compile", action="store_true", help="also time gendiff with torch.compile")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    nets = contenders(dev)
    if args.compile:
        g = gendiff_model().to(dev)
        compiled = torch.compile(g.backbone)
        g.backbone = compiled
        nets["gendiff+compile"] = (compiled, g.training_loss, lambda x, t: compiled(x, t))
    if args.memory:
        net, loss_fn, _ = nets[args.memory]
        opt = make_adam(net.parameters(), 2e-4)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x = torch.rand(args.batch, 3, 32, 32) * 2 - 1
        loss_fn(x).backward()
        opt.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"{args.memory}: peak RSS {peak / 2**20:.2f} GiB after one training step at batch {args.batch} "
              f"(before the step {before / 2**20:.2f} GiB)")
        return
    results = {}
    x = torch.rand(args.batch, 3, 32, 32, device=dev) * 2 - 1
    t = torch.randint(1, 1001, (args.batch,), device=dev)
    opts = {name: make_adam(net.parameters(), 2e-4) for name, (net, _, _) in nets.items()}
    for _ in range(args.rounds):  # alternate so drift on a shared machine hits both alike
        for precision in ("fp32", "bf16"):
            for name, (net, loss_fn, fwd) in nets.items():
                net.train()

                def train_step():
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        loss = loss_fn(x)
                    opts[name].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[name].step()

                def sample_step():
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        fwd(x, t)

                results.setdefault(("train", name, precision), []).append(args.batch / timed(train_step, args.steps))
                net.eval()
                results.setdefault(("sample", name, precision), []).append(args.batch / timed(sample_step, args.steps))
    print(f"images/s at batch {args.batch} (best of {args.rounds} alternating rounds of {args.steps} steps)")
    for kind in ("train", "sample"):
        for precision in ("fp32", "bf16"):
            g = max(results[(kind, "gendiff", precision)])
            d = max(results[(kind, "diffusers", precision)])
            print(f"{kind:6s} {precision}: gendiff {g:7.2f}  diffusers {d:7.2f}  ratio {g / d:.2f}")
    for key in sorted(k for k in results if k[1] == "gendiff+compile"):
        print(f"{key[0]:6s} {key[2]}: gendiff+compile {max(results[key]):7.2f}  "
              f"ratio to diffusers {max(results[key]) / max(results[(key[0], 'diffusers', key[2])]):.2f}")
    base = max(results[("train", "diffusers", "fp32")])
    default = max(results[("train", "gendiff", "bf16")])
    print(f"gendiff's default precision here (bf16) vs diffusers fp32: {default / base:.2f}x")


if __name__ == "__main__":
    main()
