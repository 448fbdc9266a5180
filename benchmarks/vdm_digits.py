"""Variational Diffusion Models on the 8x8 digits: the ablation table, the variance ratio and the
sample quality of docs/benchmarks.md (issue 24).

    python benchmarks/vdm_digits.py [--out runs/vdm-table] [--rows a b c d f] [--quality]

Rows, each trained with `gendiff run` from recipes/vdm_digits.toml with one ingredient changed
(the U-Net is the quickstart's in every row), then evaluated with
`gendiff eval nll RUN --n 297 --draws 16` on the whole digits test split (297 images):

  (a) fixed linear gamma, discrete time: vdm-fixed, the T = 1000 loss (vdm-discrete, low-discrepancy grid times)
  (b) fixed linear gamma, continuous time: vdm-fixed, the continuous-time loss (vdm)
  (c) + learned endpoints: vdm-learned-endpoints
  (d) + learned interior: vdm-learned, interior trained to minimise the loss estimate's variance
  (e) + Fourier features: the recipe as shipped (2,500 steps) -- row (f)'s 2,500-step checkpoint
  (f) the recipe trained 2x and 4x as long (5,000 and 10,000 steps; constant lr after warmup,
      so its 2,500-step checkpoint is row (e)'s run: training is deterministic)
  (g) the recipe with dropout 0.2 in the U-Net, 2,500 and 5,000 steps (1,500 training digits:
      (f)'s training loss falls far below its test bound)
  (h) (g) with EMA decay 0.999 (the recipe's 0.995 averages ~200 steps), 2,500 and 5,000 steps
  (i) (h) with dropout 0.3, 2,500 and 5,000 steps

Then (always, on row (f)'s 2,500-step model, the recipe's): the variance of the single-draw
estimate of the diffusion loss per test image under the learned schedule against a fixed linear
gamma with the same endpoints, *same network* (the linear schedule's SNR at each t is mapped to
the network's own time by inverting the learned gamma, so both estimate the same integral, VDM
eq. 17 rewritten over the SNR, Sec. 5.1); and with --quality: FID of 500 samples (ancestral,
1,000 steps, for both) in the digits-classifier feature space for the recipe's model and for the
quickstart trained beside it, with the classifier figures of the VDM samples.

Prints markdown tables and writes OUT/results.json. Rows f a b c d with --quality took 90 minutes
on 2 CPU cores (2026-12-02); row g, 23; rows h and i side by side (OMP_NUM_THREADS=1 each), 35.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "vdm_digits.toml"
NO_EVAL = {"metrics": [], "samples": 25}


def fixed(recipe: dict) -> None:
    recipe["schedule"] = {k: recipe["schedule"][k] for k in ("name", "timesteps", "gamma_min", "gamma_max")}
    recipe["schedule"]["name"] = "vdm-fixed"


def no_fourier(recipe: dict) -> None:
    recipe["backbone"].pop("fourier_features", None)


def row_a(r: dict) -> None:
    fixed(r), no_fourier(r)
    r["weighting"] = {"name": "vdm-discrete"}
    r["time_sampler"] = {"name": "low-discrepancy", "grid": True}


def row_b(r: dict) -> None:
    fixed(r), no_fourier(r)


def row_c(r: dict) -> None:
    fixed(r), no_fourier(r)
    r["schedule"].update(name="vdm-learned-endpoints", lr=RECIPE_DATA["schedule"]["lr"])


def row_d(r: dict) -> None:
    no_fourier(r)


def row_f(r: dict) -> None:
    r["train"].update(steps=10_000, checkpoint_every=2_500, keep_checkpoints=0, sample_every=2_500)
    r["eval"]["metrics"] = ["classifier"]


def row_g(r: dict) -> None:
    r["backbone"]["dropout"] = 0.2
    r["train"].update(steps=5_000, checkpoint_every=2_500, keep_checkpoints=0, sample_every=2_500)
    r["eval"]["metrics"] = ["classifier"]


def row_h(r: dict) -> None:
    row_g(r)
    r["train"]["ema_decay"] = 0.999


def row_i(r: dict) -> None:
    row_h(r)
    r["backbone"]["dropout"] = 0.3


RECIPE_DATA = tomllib.loads(RECIPE.read_text())
ROWS = {
    "a": ("fixed linear gamma, discrete time (T = 1000)", row_a, [2500]),
    "b": ("fixed linear gamma, continuous time", row_b, [2500]),
    "c": ("+ learned endpoints (vdm-learned-endpoints)", row_c, [2500]),
    "d": ("+ learned interior (vdm-learned, minimum-variance interior)", row_d, [2500]),
    "f": ("+ Fourier features (the recipe)", row_f, [2500, 5000, 10000]),
    "g": ("+ dropout 0.2 (1,500 training digits: (f) overfits)", row_g, [2500, 5000]),
    "h": ("(g) + EMA decay 0.999", row_h, [2500, 5000]),
    "i": ("(h) with dropout 0.3", row_i, [2500, 5000]),
}


def gendiff(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gendiff", *args], check=True)


def write_recipe(path: Path, recipe: dict) -> None:
    from gendiff.recipe import dumps

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(recipe))


def train_row(out: Path, key: str) -> Path:
    recipe = copy.deepcopy(RECIPE_DATA)
    ROWS[key][1](recipe)
    if len(ROWS[key][2]) == 1:  # one-checkpoint rows skip the end-of-run samples; the longer ones keep them
        recipe["eval"].update(NO_EVAL)
        recipe["train"]["sample_every"] = 0
    run = out / key
    if not (run / "recipe.toml").exists() or not any((run / "checkpoints").glob(f"step-{recipe['train']['steps']}")):
        write_recipe(out / f"{key}.toml", recipe)
        gendiff("run", str(out / f"{key}.toml"), "--out", str(run), "--no-progress")
    return run


def bound(run: Path, step: int) -> dict:
    gendiff("eval", "nll", str(run), "--n", "297", "--draws", "16", "--checkpoint", str(run / "checkpoints" / f"step-{step}"),
            "--no-progress")
    report = json.loads((run / "eval" / "nll-test.json").read_text())
    c = report["continuous_bits_per_dim"]
    return {"t_step_bound": report["bits_per_dim"]["total"], "continuous": c["total"], "stderr": c["stderr"]}


# -- the variance of the estimate: the learned schedule against a linear gamma, same network -----------
def _invert(schedule, gamma: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """t with schedule.gamma(t) = gamma, by bisection on [0, 1] (gamma is increasing)."""
    lo, hi = torch.zeros_like(gamma), torch.ones_like(gamma)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = schedule.gamma(mid) < gamma
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


@torch.no_grad()
def diffusion_draws(model, x0: torch.Tensor, draws: int, linear: bool, seed: int = 0) -> torch.Tensor:
    """(B, draws) single-draw estimates of the diffusion loss (bits/dim), t ~ U(0, 1) independently.

    Learned: 1/2 gamma'(t) ||eps - eps_hat(z_t, t)||^2 (VDM eq. 17). Linear: the SNR of the linear
    gamma_lin(u) = gamma(0) + (gamma(1) - gamma(0)) u with the same endpoints, reached by the network
    at its own time t = gamma^-1(gamma_lin(u)): 1/2 gamma_lin'(u) ||eps - eps_hat(z, t)||^2, an unbiased
    estimate of the same integral over the SNR (VDM Sec. 5.1) with a different sampling density."""
    from gendiff.bound import sum_flat

    schedule, scale = model.schedule, 1.0 / (model.dims * math.log(2.0))
    g = torch.Generator().manual_seed(seed)
    ends = schedule.gamma(torch.tensor([0.0, 1.0]))
    out = torch.empty(len(x0), draws)
    for j in range(draws):
        u = torch.rand(len(x0), generator=g)
        if linear:
            slope = ends[1] - ends[0]
            t, weight = _invert(schedule, ends[0] + slope * u), slope.expand(len(x0))
        else:
            t = u
            weight = -schedule.log_snr_and_derivative(t)[1]
        noise = torch.randn(x0.shape, generator=g)
        z = schedule.q_sample(x0, t, noise)
        eps_hat = model.predict(z, t).eps
        out[:, j] = 0.5 * weight * sum_flat((noise - eps_hat) ** 2) * scale
    return out


def variance_ratio(run: Path, step: int, draws: int = 64) -> dict:
    from gendiff.distributions import levels_to_unit
    from gendiff.training import load_run

    model, _ = load_run(run, run / "checkpoints" / f"step-{step}")
    x0 = levels_to_unit(model.dataset.load("test")[:297].float(), model.levels)  # levels 0..K-1 -> [-1, 1]
    result = {}
    for name, linear in (("learned", False), ("linear", True)):
        d = diffusion_draws(model, x0, draws, linear)
        result[name] = {"mean": d.mean().item(), "variance": d.var(dim=1).mean().item(),
                        "stderr_of_mean": (d.mean(dim=1).var() / len(x0)).sqrt().item()}
    result["ratio_linear_over_learned"] = result["linear"]["variance"] / result["learned"]["variance"]
    return result


def quality(out: Path, vdm_run: Path) -> dict:
    from gendiff.evaluation.fidelity import DIGITS, fidelity
    from gendiff.evaluation.inputs import reference_images
    from gendiff.images import to_uint8
    from gendiff.samplers import Ancestral
    from gendiff.training import generate, load_run

    quick = out / "quickstart"
    if not any((quick / "checkpoints").glob("step-2500")):
        gendiff("run", str(ROOT / "recipes" / "quickstart.toml"), "--out", str(quick), "--no-progress")
    figures = {}
    for name, run, ckpt in (("vdm", vdm_run, vdm_run / "checkpoints" / "step-2500"),
                            ("quickstart", quick, quick / "checkpoints" / "step-2500")):
        model, _ = load_run(run, ckpt)
        reference, key = reference_images("train", model)
        x = generate(model, 500, seed=0, sampler=Ancestral(), progress=False, precision=torch.float32)
        figures[name] = {"fid_ancestral_1000": fidelity(to_uint8(x, model.levels), reference, key, DIGITS, isc=False)["fid"]}
    gendiff("eval", "classifier", str(vdm_run), "--checkpoint", str(vdm_run / "checkpoints" / "step-2500"), "--no-progress")
    report = json.loads((vdm_run / "eval" / "classifier.json").read_text())
    figures["vdm"].update({k: report[k] for k in ("samples", "mean_top_class_probability", "classes_present", "copies")})
    figures["fid_ratio_vdm_over_quickstart"] = figures["vdm"]["fid_ancestral_1000"] / figures["quickstart"]["fid_ancestral_1000"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/vdm-table")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--quality", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for key in args.rows:
        run = train_row(out, key)
        for step in ROWS[key][2]:
            results[f"{key}@{step}"] = bound(run, step)
            results_file.write_text(json.dumps(results, indent=1))
            print(key, step, results[f"{key}@{step}"], flush=True)
    if "f" in args.rows or (out / "f").exists():
        results["variance"] = variance_ratio(out / "f", 2500)
        results_file.write_text(json.dumps(results, indent=1))
        print(json.dumps(results["variance"], indent=1), flush=True)
        if args.quality:
            results["quality"] = quality(out, out / "f")
            results_file.write_text(json.dumps(results, indent=1))
            print(json.dumps(results["quality"], indent=1), flush=True)
    lines = ["| | model | steps | T-step bound (T = 1000) | continuous-time bound (16 t per image) |", "|---|---|---|---|---|"]
    for key, (label, _, steps) in ROWS.items():
        for step in steps:
            r = results.get(f"{key}@{step}")
            if r:
                tag = "e" if (key, step) == ("f", 2500) else key
                lines.append(f"| ({tag}) | {label if tag != 'f' else 'the recipe, longer'} | {step:,} | "
                             f"{r['t_step_bound']:.3f} | {r['continuous']:.3f} +- {r['stderr']:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
