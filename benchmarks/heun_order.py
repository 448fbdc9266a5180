"""The Karras-grid Heun sampler's error against the exact answer on Gaussian data (issue: contracts).

    python benchmarks/heun_order.py [--steps 4 8 16 32 64 128] [--schedules vp-cosine linear ...]

Data with every coordinate ~ N(0.3, 0.5^2) have a Bayes-optimal denoiser in closed form, and the
probability-flow ODE maps x_T to a known point: in Karras's variables x~ = x / alpha,
x~(sigma) - m = (x~(sigma_max) - m) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2). For each schedule
(continuous and discrete) and number of steps N, the sampler (2N - 1 network evaluations) starts
from 256 fixed draws of x_T and the table gives the largest error against that answer and the ratio
to the error with half the steps (4 for a second-order method). Runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_heun import exact_answer, gaussian_data_model  # noqa: E402  (the test's model and answer)

from gendiff.samplers import Heun  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--schedules", nargs="+", default=["vp-cosine", "vp-linear", "linear", "cosine"])
    args = parser.parse_args()
    print("| schedule | time | steps N | network evaluations | max error | ratio to N/2 |")
    print("|---|---|---|---|---|---|")
    for name in args.schedules:
        model = gaussian_data_model(name)
        previous = None
        for steps in args.steps:
            sampler = Heun(steps=steps)
            _, sigmas = sampler.levels(model.schedule)
            x = model.sample(256, generator=torch.Generator().manual_seed(0), sampler=sampler).double()
            x_T = model.prior_sample((256, 1, 2, 2), generator=torch.Generator().manual_seed(0))
            error = (x - exact_answer(x_T, sigmas)).abs().max().item()
            ratio = "" if previous is None else f"{previous / error:.2f}"
            kind = "continuous" if model.schedule.continuous else "discrete"
            evaluations = 2 * (len(sigmas) - 1) - 1
            print(f"| {name} | {kind} | {steps} | {evaluations} | {error:.3e} | {ratio} |")
            previous = error


if __name__ == "__main__":
    main()
