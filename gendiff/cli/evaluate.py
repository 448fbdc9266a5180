"""``gendiff eval``: ``fid``, ``nll`` and ``rd`` with their options, and one command per registered
metric (``gendiff eval NAME RUN``), a plugin's included, looked up when asked for."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from ..conditioning import GuidanceWarning
from ..errors import GendiffError
from ..files import write_text
from .common import (Checkpoint, Device, Precision, Progress, RunArg, Seed, app, checked_guidance, checked_precision,
                     console, err_console, friendly, load_on_split, run_precision)


class EvalGroup(TyperGroup):
    """``gendiff eval``: the commands below, and one per registered metric (``gendiff eval NAME RUN``),
    a plugin's included, looked up when asked for."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_metric_names()))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in _metric_names():
            command = _metric_command(name)
        return command


def _metric_names() -> list[str]:
    import warnings

    from ..plugins import PluginLoadWarning, plugin_system

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # `gendiff plugins` shows failures
        return plugin_system().registry("metric").names()


def _metric_command(name: str):
    """The command ``gendiff eval NAME RUN`` of the registered metric ``name`` (built by typer,
    like every other command): it writes RUN/eval/NAME.json."""
    from ..evaluation.metrics import Metric
    from ..plugins import registry

    cls = registry("metric").get(name)
    doc = (cls.__doc__ or Metric.__doc__).strip().split("\n\n")[0]
    single = typer.Typer(rich_markup_mode=None)

    @single.command(name=name, help=f"{doc} Writes RUN/eval/{name}.json.")
    @friendly
    def command(
        run_path: RunArg,
        checkpoint: Checkpoint = None,
        device: Device = "auto",
        precision: Precision = None,
        progress: Progress = True,
    ) -> None:
        _evaluate_metric(name, run_path, checkpoint, device, precision, progress)

    return typer.main.get_command(single)


def _evaluate_metric(name, run_path, checkpoint, device, precision, progress) -> None:
    import json

    from ..evaluation import metric
    from ..evaluation.inputs import eval_context
    from ..recipe import parse_recipe
    from ..runs import load_run
    from ..runtime import choose_device

    checked_precision(precision)
    dev = choose_device(device)
    model, ckpt = load_run(run_path, checkpoint, device=dev)
    chosen = metric(name)
    try:
        chosen.check(model, model.dataset)
    except ValueError as exc:
        raise GendiffError(f"gendiff eval {name}: {exc}") from None
    spec = parse_recipe(model.recipe)
    run_dir = ckpt.parent.parent
    result = chosen.evaluate(eval_context(model, spec, run_dir, ckpt, run_precision(precision, model, dev), err_console,
                                          progress))
    result["checkpoint"] = str(ckpt)
    out = run_dir / "eval" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=1))
    table = Table(title=f"{name} of {ckpt} ({out})")
    table.add_column("what")
    table.add_column("value")
    for label, value in chosen.summary(result):
        table.add_row(label, value)
    console.print(table)


eval_app = typer.Typer(cls=EvalGroup, no_args_is_help=True, rich_markup_mode=None,
                       help="Evaluate samples and trained runs: fid, nll, rd, and every registered metric by name.")
app.add_typer(eval_app, name="eval")


@eval_app.command("fid")
@friendly
def eval_fid(
    target: Path = typer.Argument(..., metavar="SAMPLES_OR_RUN", help="A run, a checkpoint, a samples.npz or a folder of images."),
    ref: Optional[str] = typer.Option(None, "--ref", help="train or test (the run's data, default train), DATASET:SPLIT, or a path."),
    n: Optional[int] = typer.Option(None, "--n", min=2, help="Samples to use (default: a run's eval.fid_samples, or all given)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="torch-fidelity's Inception-v3 weights file, for machines without internet."),
    features: Optional[str] = typer.Option(None, "--features", help="gendiff-digits, gendiff-mnist-28|32, gendiff-fashion-mnist-28|32 or inception-v3-compat (default: the dataset's own classifier where gendiff has one, else by image shape)."),
    seed: Seed = 0,
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch when generating."),
    checkpoint: Checkpoint = None,
    device: Device = "auto",
    precision: Precision = None,
    progress: Progress = True,
    guidance: Optional[float] = typer.Option(None, "--guidance", help="A conditional run's classifier-free guidance "
                                             "weight w >= 0 (default: the recipe's); its classes are drawn in the "
                                             "training split's proportions."),
) -> None:
    """FID and KID (and the Inception Score) of samples against a reference, with torch-fidelity.
    A conditional run's samples have their classes in the training split's proportions."""
    import json

    from ..evaluation.fidelity import choose_features, fidelity, require_fidelity
    from ..evaluation.inputs import is_run, load_images, reference_images, run_folder, run_samples

    require_fidelity()  # before anything is sampled

    model = ckpt = dataset = None
    checked_precision(precision)
    if is_run(target):
        from ..runs import load_run
        from ..runtime import choose_device

        dev = choose_device(device)
        model, ckpt = load_run(target, checkpoint, device=dev)
        ref = ref or "train"
        reference, key = reference_images(ref, model)  # fail on a bad reference before sampling
        dtype = run_precision(precision, model, dev)
        guidance = checked_guidance(model, guidance)  # before sampling
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GuidanceWarning)
            samples, model, ckpt = run_samples(target, n, seed, batch_size, err_console, progress, dtype,
                                               model=model, checkpoint=ckpt, guidance=guidance)
        dataset = model.dataset
    else:
        for option, value in (("--guidance", guidance), ("--checkpoint", checkpoint)):
            if value is not None:
                raise GendiffError(f"{option} is for a run's own samples; a set of samples was drawn already")
        if ref is None:
            raise GendiffError("--ref is needed for a set of samples: train/test of a run's data need a run; "
                               "give DATASET:SPLIT (e.g. digits:train) or a folder of images")
        samples = load_images(target)
        if n is not None:
            if n > len(samples):
                raise GendiffError(f"--n {n} is more than the {len(samples)} samples in {target}")
            samples = samples[:n]
        reference, key = reference_images(ref)
    named = getattr(dataset, "name", None) or (ref.partition(":")[0] if ":" in ref else None)
    space = features or choose_features(samples, named)
    if dataset is None:  # a set of samples: the dataset whose classifier space it is, if any
        from ..evaluation.inputs import space_dataset

        dataset = space_dataset(space)
    result = fidelity(samples, reference, key, space, inception_weights, dataset=dataset,
                      device=None if model is None else model.device, progress=progress)
    result["reference"] = ref
    if ckpt is not None:
        result["checkpoint"] = str(ckpt)
        name = f"fid-{ref.replace('/', '_').replace(':', '-')}"
        if model.conditioning.active:
            result["guidance"] = guidance
            name += f"-w{guidance:g}"
        out = run_folder(ckpt) / "eval" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, json.dumps(result, indent=1))
    table = Table(title=f"FID / KID of {target} against {ref} ({space} features)")
    table.add_column("metric")
    table.add_column("value")
    table.add_row("FID", f"{result['fid']:.4f}")
    table.add_row("KID", f"{result['kid_mean']:.6f} +- {result['kid_std']:.6f}")
    if "inception_score_mean" in result:
        label = "classifier score (IS in digits-classifier space)" if space != "inception-v3-compat" else "Inception Score"
        table.add_row(label, f"{result['inception_score_mean']:.3f} +- {result['inception_score_std']:.3f}")
    table.add_row("samples / reference images", f"{result['samples']} / {result['reference_images']}")
    console.print(table)


# the arguments of the commands built on one pass of the bound (eval nll, eval rd)
BoundSplit = Annotated[str, typer.Option("--split", help="train or test.")]
BoundN = Annotated[Optional[int], typer.Option("--n", min=1, help="Images to evaluate (default: the recipe's eval.nll_examples).")]
BoundBatch = Annotated[int, typer.Option("--batch-size", min=1)]
BoundSeed = Annotated[int, typer.Option("--seed", help="Seed of the draws x_t ~ q(x_t | x0).")]
BoundPrecision = Annotated[str, typer.Option(
    "--precision", help="fp32 (default: the bound is exact in float32), bf16 (autocast) or auto.")]


@eval_app.command("nll")
@friendly
def eval_nll(
    run_path: RunArg,
    split: BoundSplit = "test",
    n: BoundN = None,
    batch_size: BoundBatch = 256,
    seed: BoundSeed = 0,
    checkpoint: Checkpoint = None,
    device: Device = "auto",
    precision: BoundPrecision = "fp32",
    progress: Progress = True,
    clip_x0: bool = typer.Option(False, "--clip-x0", help="The official evaluation's convention: clip x0_hat to "
                                 "[-1, 1] before forming each reverse mean (calc_bpd_loop, clip_denoised=True)."),
    draws: int = typer.Option(16, "--draws", min=1, help="Times t per image for the continuous-time bound (VDM "
                              "schedules only)."),
) -> None:
    """Bits/dim (the bound of eq. 5) with its breakdown L_T, L_1..L_{T-1}, L_0 and every term L_{t-1};
    for a VDM schedule also the continuous-time bound (VDM eq. 17) with its standard error;
    JSON in RUN/eval/ (nll-SPLIT.json, or nll-SPLIT-clipped.json with --clip-x0)."""
    import json

    from ..evaluation.likelihood import continuous_pass, nll_report
    from ..evaluation.inputs import run_folder

    bp, ckpt, model, data, labels = _bound_pass(run_path, split, n, batch_size, seed, progress, checkpoint, device,
                                                precision, clip_x0)
    report = nll_report(bp, split)
    if model.schedule.continuous and model.schedule.noisy_start:  # VDM: also the bound as T -> infinity
        report["continuous_bits_per_dim"] = continuous_pass(model, data, draws=draws, batch_size=batch_size,
                                                            seed=seed, labels=labels)
    report["checkpoint"] = str(ckpt)
    out = run_folder(ckpt) / "eval" / f"nll-{split}{'-clipped' if clip_x0 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(report, indent=1))
    bpd = report["bits_per_dim"]
    convention = "x0_hat clipped, the official convention" if clip_x0 else "exact: x0_hat as predicted"
    table = Table(title=f"bits/dim on {report['examples']} {split} images, {convention} ({out})")
    table.add_column("term")
    table.add_column("bits/dim", justify="right")
    table.add_row("L_T (prior)", f"{bpd['prior_L_T']:.3e}")
    if "reconstruction_L_0" in bpd:
        table.add_row("the T KL terms", f"{bpd['sum_of_the_T_KL_terms']:.5f}")
        table.add_row("L_0 (reconstruction from z_0)", f"{bpd['reconstruction_L_0']:.5f}")
    else:
        table.add_row("L_1 + ... + L_{T-1}", f"{bpd['sum_L_1_to_L_T_minus_1']:.5f}")
        table.add_row("L_0 (decoder)", f"{bpd['decoder_L_0']:.5f}")
    table.add_row(f"total (the {len(bp.terms)}-step bound)", f"{bpd['total']:.5f}")
    if "continuous_bits_per_dim" in report:
        c = report["continuous_bits_per_dim"]
        table.add_row(f"continuous-time bound ({c['draws_per_example']} t per image)",
                      f"{c['total']:.5f} +- {c['stderr']:.5f}")
    console.print(table)


@eval_app.command("rd")
@friendly
def eval_rd(
    run_path: RunArg,
    split: BoundSplit = "test",
    n: BoundN = None,
    batch_size: BoundBatch = 256,
    seed: BoundSeed = 0,
    checkpoint: Checkpoint = None,
    device: Device = "auto",
    precision: BoundPrecision = "fp32",
    progress: Progress = True,
) -> None:
    """The rate-distortion curve of progressive lossy compression (Sec. 4.3, Fig. 5): rd.csv and rd.png in RUN/eval/."""
    from ..evaluation.inputs import run_folder
    from ..evaluation.likelihood import write_rate_distortion

    bp, ckpt = _bound_pass(run_path, split, n, batch_size, seed, progress, checkpoint, device, precision)[:2]
    csv_path, png_path = write_rate_distortion(bp, run_folder(ckpt) / "eval" / f"rd-{split}")
    rate = bp.rate()
    T = len(bp.terms)
    table = Table(title=f"rate-distortion on {bp.examples} {split} images ({csv_path}, {png_path.name})")
    for col in ("t", "reverse steps", "rate (bits/dim)", "distortion (RMSE, 0..255)"):
        table.add_column(col, justify="right")
    for t in sorted({T, (3 * T) // 4, T // 2, T // 4, 1, 0}, reverse=True):
        table.add_row(str(t), str(T - t + 1), f"{rate[t]:.5f}", f"{bp.distortion[t - 1] if t else 0.0:.3f}")
    console.print(table)


def _bound_pass(run_path, split, n, batch_size, seed, progress, checkpoint, device, precision, clip_x0: bool = False):
    from ..evaluation.likelihood import bound_pass, split_labels
    from ..progress import Progress as Bar
    from ..runtime import autocast

    model, ckpt, dev, dtype = load_on_split(run_path, split, checkpoint, device, precision)
    n = n or model.recipe.get("eval", {}).get("nll_examples", 256)
    data = model.dataset.load(split)
    if n > len(data):
        raise GendiffError(f"--n {n} is more than the {len(data)} images of the {split} split")
    data = data[:n]
    labels = split_labels(model, model.dataset, split, n)
    with Bar("bound (image-steps)", n * model.timesteps, err_console, progress) as bar, autocast(dev, dtype):
        bp = bound_pass(model, data, batch_size, seed, progress=bar.advance, labels=labels, clip_x0=clip_x0)
    return bp, ckpt, model, data, labels
