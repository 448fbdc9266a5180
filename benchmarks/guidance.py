"""Classifier-free guidance against sample quality (Ho & Salimans 2022, Fig. 1 / Table 1 in
spirit): class agreement and FID of a conditional recipe at several guidance weights.

    python benchmarks/guidance.py digits          [--n 500] [--weights 0 0.5 1 2 4] [--baseline]
    python benchmarks/guidance.py fashion-mnist   [--n 2000]
    python benchmarks/guidance.py plot            # docs/guidance.png from docs/guidance.json

``digits`` trains recipes/quickstart_conditional.toml and, with ``--baseline``, the unconditional
recipes/quickstart.toml for comparison (each skipped when its run folder already holds the
trained run); ``fashion-mnist`` trains recipes/fashion_mnist_cpu_conditional.toml. For each weight w it draws n
samples with the classes in the training split's proportions (seed 0, the recipe's sampler; the
samples `gendiff eval fid RUN --guidance w` uses), and reports

- class agreement: the fraction that the dataset's own classifier (the network whose features
  are gendiff's FID space for the dataset) assigns to the requested class, and the worst class's;
- FID / KID against the reference split in that feature space (digits: the 1,500 training
  digits; Fashion-MNIST: the 10,000 test images), and the sampling time.

Results go to docs/guidance.json (one entry per dataset); ``plot`` draws both panels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gendiff.evaluation.agreement import class_agreement
from gendiff.evaluation.fidelity import choose_features, fidelity
from gendiff.evaluation.inputs import reference_images, run_folder, run_samples
from gendiff.runner import run
from gendiff.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "guidance.json"
SETUPS = {  # dataset: (conditional recipe, unconditional recipe for comparison or None, reference split)
    "digits": ("quickstart_conditional.toml", "quickstart.toml", "train"),
    "fashion-mnist": ("fashion_mnist_cpu_conditional.toml", None, "test"),
}


def trained(recipe: str, out: Path) -> tuple[Path, float | None]:
    """The run folder of a recipe, trained now (with no [eval]) unless it already holds the run."""
    if (out / "checkpoints").is_dir():
        return out, None
    start = time.perf_counter()
    run(ROOT / "recipes" / recipe, ["eval.metrics=[]", "eval.samples=100"], out=out, progress=False)
    return out, time.perf_counter() - start


def measure(dataset_name: str, args) -> dict:
    recipe, plain, ref = SETUPS[dataset_name]
    out = Path(args.out or f"runs/guidance-{dataset_name}")
    path, seconds = trained(recipe, out)
    model, ckpt = load_run(path)
    reference, key = reference_images(ref, model)
    entry = {"recipe": f"recipes/{recipe}", "samples": args.n, "reference": ref, "training_seconds": seconds,
             "weights": []}
    print(f"## {dataset_name}: {recipe}, {args.n} samples against the {ref} split")
    print("| guidance w | class agreement | worst class | FID | KID | sampling time |")
    print("|---|---|---|---|---|---|")
    for w in args.weights:
        start = time.perf_counter()
        images, _, _ = run_samples(path, args.n, 0, 500, progress=False, model=model, checkpoint=ckpt, guidance=w)
        sampling = time.perf_counter() - start
        # the labels the samples were drawn with, as kept beside them (a kept larger draw's first n)
        kept = np.load(run_folder(ckpt) / "eval" / "samples" / f"seed-0-w{w:g}.npz")
        labels = kept["labels"][:args.n]
        agree = class_agreement(images, labels, model.dataset)
        space = choose_features(images, model.dataset.name)
        r = fidelity(images, reference, key, space, isc=False, dataset=model.dataset)
        row = {"guidance": w, "agreement": agree["agreement"], "worst_class": agree["worst_class"],
               "worst_class_agreement": agree["worst_class_agreement"], "fid": r["fid"], "kid": r["kid_mean"],
               "sampling_seconds": sampling}
        entry["weights"].append(row)
        print(f"| {w:g} | {row['agreement']:.3f} | {row['worst_class_agreement']:.3f} ({row['worst_class']}) | "
              f"{row['fid']:.3f} | {row['kid']:.5f} | {sampling:.0f} s |", flush=True)
    if plain is not None and args.baseline:
        base, _ = trained(plain, Path(str(out) + "-unconditional"))
        base_model, base_ckpt = load_run(base)
        images, _, _ = run_samples(base, args.n, 0, 500, progress=False, model=base_model, checkpoint=base_ckpt)
        r = fidelity(images, reference, key, choose_features(images, dataset_name), isc=False, dataset=model.dataset)
        entry["unconditional"] = {"recipe": f"recipes/{plain}", "fid": r["fid"], "kid": r["kid_mean"]}
        print(f"| unconditional ({plain}) | | | {r['fid']:.3f} | {r['kid_mean']:.5f} | |")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[dataset_name] = entry
    RESULTS.write_text(json.dumps(results, indent=1))
    return entry


def plot(_args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(RESULTS.read_text())
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, (name, entry) in zip(axes[0], results.items()):
        rows = entry["weights"]
        w = [r["guidance"] for r in rows]
        ax.plot(w, [r["fid"] for r in rows], "o-", color="tab:blue", label="FID (left axis)")
        if "unconditional" in entry:
            ax.axhline(entry["unconditional"]["fid"], color="tab:blue", ls=":", label="unconditional model's FID")
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel(f"FID vs {entry['reference']} split (gendiff {name} features)", color="tab:blue")
        ax.set_ylim(bottom=0)
        twin = ax.twinx()
        twin.plot(w, [r["agreement"] for r in rows], "s--", color="tab:red", label="class agreement (right axis)")
        twin.set_ylabel("class agreement (classifier says the asked class)", color="tab:red")
        twin.set_ylim(min(0.8, min(r["agreement"] for r in rows) - 0.02), 1.005)
        ax.set_title(f"{name}: {entry['recipe'].split('/')[-1]}, {entry['samples']:,} samples")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "guidance.png", dpi=110)
    print(f"wrote {ROOT / 'docs' / 'guidance.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=[*SETUPS, "plot"])
    parser.add_argument("--n", type=int, default=None, help="samples per weight (digits 500, fashion-mnist 2000)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--baseline", action="store_true", help="also train and measure the unconditional recipe")
    parser.add_argument("--out", default=None, help="the run folder (default runs/guidance-DATASET)")
    args = parser.parse_args()
    if args.what == "plot":
        plot(args)
        return
    args.n = args.n or {"digits": 500, "fashion-mnist": 2000}[args.what]
    measure(args.what, args)


if __name__ == "__main__":
    main()
