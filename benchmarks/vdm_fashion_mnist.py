"""Fashion-MNIST bits/dim: the VDM CPU recipe beside the DDPM CPU recipe, same steps (issue 24).

    python benchmarks/vdm_fashion_mnist.py [--out runs/vdm-fashion] [--steps 4000] [--n 256] [--recipes ddpm vdm]

Trains recipes/fashion_mnist_cpu.toml (DDPM: eps, L_simple, fixed-large, linear betas) and
recipes/vdm_fashion_mnist_cpu.toml (VDM: learned schedule, the continuous-time bound, Fourier
features) for the same number of steps (the recipes' 4,000 by default), one after the other and
alone, skipping their end-of-run FID; then `gendiff eval nll RUN --n N` on the first N test images
of each: the T-step bound (T = 1000) of both and, for VDM, the continuous-time bound with its
standard error. Prints a markdown table and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ddpm": "fashion_mnist_cpu.toml", "vdm": "vdm_fashion_mnist_cpu.toml"}


def gendiff(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gendiff", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/vdm-fashion")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                        help="which to run (two invocations with OMP_NUM_THREADS=1 and different --out run side by side)")
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    for key in args.recipes:
        recipe = RECIPES[key]
        run = out / key
        sets = [f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}", "train.sample_every=0",
                "eval.metrics=[]", "eval.samples=16"]
        start = time.perf_counter()
        if not any((run / "checkpoints").glob(f"step-{args.steps}")):
            gendiff("run", str(ROOT / "recipes" / recipe), "--out", str(run), "--no-progress",
                    *[a for s in sets for a in ("--set", s)])
        seconds = time.perf_counter() - start
        gendiff("eval", "nll", str(run), "--n", str(args.n), "--no-progress")
        report = json.loads((run / "eval" / "nll-test.json").read_text())
        results[key] = {"t_step_bound": report["bits_per_dim"]["total"], "seconds": round(seconds),
                        "command": f"gendiff run recipes/{recipe} " + " ".join(f"--set {s}" for s in sets[:1])}
        if "continuous_bits_per_dim" in report:
            c = report["continuous_bits_per_dim"]
            results[key].update(continuous=c["total"], stderr=c["stderr"])
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(key, results[key], flush=True)
    print(f"| recipe | steps | T-step bound, bits/dim ({args.n} test images) | continuous-time bound | run wall time |")
    print("|---|---|---|---|---|")
    for key, r in results.items():
        cont = f"{r['continuous']:.3f} +- {r['stderr']:.3f}" if "continuous" in r else "-"
        print(f"| `{RECIPES[key]}` | {args.steps:,} | {r['t_step_bound']:.3f} | {cont} | {r['seconds']} s |")


if __name__ == "__main__":
    main()
