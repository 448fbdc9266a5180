"""How much of a sampling run is spent outside the network: each sampler's loop against the same
number of bare network calls, alternating, best of several rounds, bf16 autocast on the CPU.

    python benchmarks/sampling_overhead.py [--rounds 3]

The loop's own work (schedule lookups, the update arithmetic, noise) should be a few percent of
a step at most: the schedule tables are cached per device and dtype, and nothing leaves the device.
"""

from __future__ import annotations

import argparse
import time

import torch

import gendiff
from gendiff.component import construct
from gendiff.plugins import plugin_system

CASES = (("recipes/quickstart.toml", 500, 50), ("recipes/ddpm_cifar10.toml", 16, 5))


def best(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    for recipe, batch, steps in CASES:
        model = gendiff.build(recipe).eval()
        shape = (batch, *model.data_shape)
        x, t = torch.randn(shape), torch.full((batch,), model.timesteps // 2)
        for name in ("ancestral", "ddim", "dpm-solver++"):
            sampler = construct(plugin_system().registry("sampler").get(name), "sampler",
                                {} if name == "ancestral" else {"steps": steps})
            if name == "ancestral":  # Algorithm 2's loop over its last `steps` steps
                def sample():
                    sampler.run(model, torch.randn(shape), steps)
            else:
                def sample():
                    model.sample(batch, sampler=sampler)

            def bare():
                for _ in range(steps):
                    model.backbone(x, t)

            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                bare()  # warm-up
                loop, net = [], []
                for _ in range(args.rounds):  # alternate so drift hits both alike
                    loop.append(best(sample, 1))
                    net.append(best(bare, 1))
            a, b = min(loop), min(net)
            print(f"{recipe.split('/')[-1]:20s} {name:13s} batch {batch:4d}, {steps} evaluations: sampler {a:6.3f} s, "
                  f"network alone {b:6.3f} s, outside the network {100 * (a - b) / a:+5.1f}%", flush=True)


if __name__ == "__main__":
    main()
