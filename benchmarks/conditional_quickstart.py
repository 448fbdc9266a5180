"""Class agreement of a class-conditional quickstart model against the guidance weight.

    python benchmarks/conditional_quickstart.py [--out runs/conditional-quickstart] [--n 500]
                                                [--weights 0 0.5 1 2 4]

Trains the quickstart recipe with ``[conditioning] labels = true, label_dropout = 0.1`` (about the
quickstart's time on a CPU; skipped if the run folder already holds the trained run), then draws n
samples with the classes 0..9 in turn at each guidance weight w (the recipe's sampler, seed 0) and
reports the fraction that the digits classifier (scikit-learn's SVC trained on the real training
digits, as ``[eval] metrics = ["classifier"]``) assigns to the requested class, with the
classifier's own scores and the sampling time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.distributions import unit_to_levels
from gendiff.evaluation.digits import DigitsClassifier
from gendiff.runner import run
from gendiff.runs import load_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/conditional-quickstart")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    args = parser.parse_args()
    out = Path(args.out)
    if not (out / "checkpoints").is_dir():
        start = time.perf_counter()
        run(ROOT / "recipes" / "quickstart.toml", ["conditioning.labels=true", "conditioning.label_dropout=0.1",
                                                   "eval.metrics=[]", "eval.samples=16"], out=out, progress=False)
        print(f"trained and sampled in {time.perf_counter() - start:.0f} s")
    model, _ = load_run(out)
    classifier = DigitsClassifier(model.dataset)
    labels = torch.arange(args.n) % 10
    print("| guidance w | class agreement | mean top-class probability | classes | copies | sampling time |")
    print("|---|---|---|---|---|---|")
    for w in args.weights:
        start = time.perf_counter()
        x = model.sample(args.n, generator=torch.Generator().manual_seed(0), cond=labels, guidance=w)
        seconds = time.perf_counter() - start
        levels = unit_to_levels(x, model.levels)
        flat = levels.reshape(args.n, -1).numpy().astype(np.float64) / (model.levels - 1)
        agreement = float((classifier.clf.predict(flat) == labels.numpy()).mean())
        report = classifier.report(levels)
        print(f"| {w:g} | {agreement:.3f} | {report['mean_top_class_probability']:.3f} | "
              f"{report['classes_present']} | {report['copies']} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
