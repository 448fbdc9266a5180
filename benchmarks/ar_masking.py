"""The table of docs/ar-masking.md: five digits models, their test bits/dim and sampling cost.

    python benchmarks/ar_masking.py [--out runs/ar-table]

Trains (a) the Gaussian DDPM on the true bound, (b) the Gaussian DDPM with L_simple (the
quickstart), (c) AR masking in raster order, (d) order-agnostic masking and (e) masking with
T = D/4, each with `gendiff run`, then evaluates `gendiff eval nll RUN --n 297` (the whole
digits test split) and prints a markdown table. About 25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tomllib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    ("a", "Gaussian DDPM, true bound (eps, fixed-large, vlb)", "quickstart.toml", ["weighting.name=vlb"]),
    ("b", "Gaussian DDPM, L_simple (the quickstart)", "quickstart.toml", []),
    ("c", "AR masking, raster order, T = D = 64", "ar_masking_digits.toml", []),
    ("d", "order-agnostic masking, T = D = 64", "ar_masking_digits.toml", ["schedule.order=agnostic"]),
    ("e", "masking, raster order, T = D/4 = 16", "ar_masking_digits.toml", ["schedule.timesteps=16"]),
]


def gendiff(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gendiff", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ar-table")
    args = parser.parse_args()
    lines = ["| | model | command | test bits/dim | network evaluations per sample |", "|---|---|---|---|---|"]
    for key, label, recipe, sets in ROWS:
        run = Path(args.out) / key
        overrides = [a for s in sets for a in ("--set", s)]
        gendiff("run", str(ROOT / "recipes" / recipe), *overrides, "--out", str(run), "--no-progress")
        gendiff("eval", "nll", str(run), "--n", "297", "--no-progress")
        bpd = json.loads((run / "eval" / "nll-test.json").read_text())["bits_per_dim"]["total"]
        steps = tomllib.loads((run / "recipe.toml").read_text())["schedule"]
        evaluations = steps.get("timesteps") or 64
        command = " ".join(["gendiff run recipes/" + recipe, *overrides])
        lines.append(f"| ({key}) | {label} | `{command}` | {bpd:.4f} | {evaluations} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
