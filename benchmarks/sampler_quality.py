"""Sample quality against network evaluations on digits (issue: fast samplers).

    python benchmarks/sampler_quality.py RUN [--n 500] [--nfe 10 20 50 100 1000]

For the ancestral sampler (respaced to the budget; the full chain at 1000), DDIM (eta = 0) and
DPM-Solver++(2M), draws n samples from the run's EMA model at each budget of network evaluations
and computes FID against the digits training split in the digits-classifier feature space
(torch-fidelity, as `gendiff eval fid`). Prints a markdown table and the wall time per cell.
"""

from __future__ import annotations

import argparse
import time


from gendiff.evaluation.fidelity import DIGITS, fidelity
from gendiff.evaluation.inputs import reference_images
from gendiff.images import to_uint8
from gendiff.samplers import DDIM, Ancestral, DPMSolverPP, Respaced
from gendiff.training import choose_precision, generate, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    args = parser.parse_args()
    model, _ = load_run(args.run)
    precision = choose_precision("auto", model.device)
    reference, key = reference_images("train", model)
    makers = {
        "ancestral": lambda k: Ancestral() if k >= model.timesteps else Respaced(steps=k),
        "ddim": lambda k: DDIM(steps=k),
        "dpm-solver++": lambda k: DPMSolverPP(steps=k),
    }
    rows = {}
    for name, make in makers.items():
        for k in args.nfe:
            start = time.perf_counter()
            x = generate(model, args.n, seed=0, sampler=make(k), progress=False, precision=precision)
            seconds = time.perf_counter() - start
            fid = fidelity(to_uint8(x, model.levels), reference, key, DIGITS, isc=False)["fid"]
            rows[(name, k)] = (fid, seconds)
            print(f"{name} {k}: FID {fid:.3f} ({seconds:.1f} s)", flush=True)
    print("\n| sampler | " + " | ".join(f"{k} evaluations" for k in args.nfe) + " |")
    print("|---|" + "---|" * len(args.nfe))
    for name in makers:
        print(f"| {name} | " + " | ".join(f"{rows[(name, k)][0]:.3f}" for k in args.nfe) + " |")


if __name__ == "__main__":
    main()
