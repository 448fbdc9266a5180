"""Fashion-MNIST (or MNIST) in gendiff's own FID feature space: the scale of the numbers, and a
recipe's samples against it (issue: real images).

    python benchmarks/fashion_mnist.py floor [--dataset fashion-mnist] [--size 32]
    python benchmarks/fashion_mnist.py run RECIPE [--out DIR] [--scale 1 2 4] [--n 5000]

``floor``: trains (once; cached) the dataset's classifier feature space and prints its test
accuracy, FID / KID of the real test split against the training split (the floor a perfect model
would reach with as many samples) and of uniform noise against the training split (the ceiling).

``run``: trains RECIPE at each multiple of its ``train.steps`` (a separate run folder each),
timing it end to end, then draws n samples from the EMA model and prints FID / KID against the
test split in the same space, the classifier score, and writes a sample grid per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.evaluation.classifier_features import load_classifier, space_for
from gendiff.evaluation.fidelity import fidelity
from gendiff.evaluation.inputs import levels_to_pixels
from gendiff.plugins import registry


def floor(args) -> None:
    dataset = registry("dataset").get(args.dataset)(image_size=args.size)
    space = space_for(args.dataset, args.size)
    start = time.perf_counter()
    _, path, accuracy = load_classifier(space, dataset)
    print(f"classifier {space.name}: test accuracy {accuracy:.4f} ({path}; {time.perf_counter() - start:.0f} s)")
    train = levels_to_pixels(dataset.load("train"), dataset.levels)
    test = levels_to_pixels(dataset.load("test"), dataset.levels)
    noise = np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8)
    key = f"gendiff-{args.dataset}-{args.size}-train"
    rows = {}
    for label, images in (("real test vs train", test), ("real test (5,000) vs train", test[:5000]),
                          ("uniform noise vs train", noise)):
        rows[label] = fidelity(images, train, key, space.name, isc=False, dataset=dataset)
    print("| compared | images | FID | KID |")
    print("|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['samples']:,} | {r['fid']:.3f} | {r['kid_mean']:.5f} |")


def training_seconds(out: Path) -> float:
    """The training time of a run folder over all its sessions: metrics.jsonl's "time" restarts at
    each (re)start, so the last value of each rising stretch is summed."""
    times = [json.loads(line)["time"] for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    total, last = 0.0, 0.0
    for t in times:
        if t < last:
            total += last
        last = t
    return total + last


def run_recipe(args) -> None:
    from gendiff.checkpoint import list_checkpoints
    from gendiff.images import grid, save_png, to_uint8
    from gendiff.runner import run
    from gendiff.runs import generate, load_run
    from gendiff.recipe import load_recipe

    raw, _ = load_recipe(args.recipe)
    steps = raw.get("train", {}).get("steps", 800_000)
    print("| steps | this call (s) | training, all sessions (s) | FID vs test | KID vs test | classifier score |")
    print("|---|---|---|---|---|---|")
    for k in args.scale:
        out = Path(args.out) / f"x{k:g}"
        target = int(steps * k)
        start = time.perf_counter()
        done = max((s for s, _ in list_checkpoints(out)), default=0)
        if done < target:  # train, or go on training a folder that a killed session left (bit for bit)
            run(args.recipe, [f"train.steps={target}"], out=out, progress=False, resume=done > 0)
        seconds = time.perf_counter() - start
        trained = training_seconds(out)  # every session's training time, from metrics.jsonl
        model, _ = load_run(out)
        x = generate(model, args.n, seed=0, progress=False)
        pictures = to_uint8(x, model.levels)
        save_png(grid(pictures[:100], nrow=10), out / "grid-100.png", scale=2)
        dataset = model.dataset
        test = levels_to_pixels(dataset.load("test"), dataset.levels)
        space = space_for(dataset.name, dataset.shape[1])
        r = fidelity(pictures, test, f"gendiff-{dataset.name}-{dataset.shape[1]}-test", space.name, dataset=dataset)
        (out / "eval").mkdir(exist_ok=True)
        (out / "eval" / "fid-test-benchmark.json").write_text(json.dumps({**r, "seconds": seconds,
                                                                          "training_seconds": trained}, indent=1))
        print(f"| {target:,} | {seconds:.0f} | {trained:.0f} | {r['fid']:.3f} | {r['kid_mean']:.5f} | "
              f"{r.get('inception_score_mean', float('nan')):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("floor")
    f.add_argument("--dataset", default="fashion-mnist")
    f.add_argument("--size", type=int, default=32)
    r = sub.add_parser("run")
    r.add_argument("recipe")
    r.add_argument("--out", default="runs/fashion-mnist-benchmark")
    r.add_argument("--scale", type=float, nargs="+", default=[1, 2, 4])
    r.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    floor(args) if args.what == "floor" else run_recipe(args)


if __name__ == "__main__":
    main()
