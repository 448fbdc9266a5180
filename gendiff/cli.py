"""The ``gendiff`` command line (typer + rich). Bad input ends in one paragraph and exit code 1."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from typer.core import TyperGroup
from rich.markup import escape
from rich.table import Table

from .errors import GendiffError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Diffusion models from replaceable components.")
console = Console()
err_console = Console(stderr=True)


def friendly(func):
    """Turn a :class:`GendiffError` inside a command into one paragraph on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except GendiffError as exc:
            if os.environ.get("RANK", "0") == "0":  # in a torchrun job, rank 0 speaks for all
                err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


recipe_app = typer.Typer(no_args_is_help=True, help="Work with recipes.")
app.add_typer(recipe_app, name="recipe")

SET_HELP = "Override a recipe value, TABLE.KEY=VALUE (TOML syntax; repeatable)."


@app.command()
@friendly
def run(
    recipe: Path = typer.Argument(..., help="The recipe TOML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="The run folder (default: runs/<recipe name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest good checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the resolved recipe and the plan; write nothing."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Train with this many processes on this "
                                       "machine (data parallel; starts torchrun). Multi-node: call torchrun "
                                       "yourself, see docs/reliability.md."),
) -> None:
    """Train a recipe, then sample and report its [eval] evaluations."""
    from .runner import run as run_recipe

    if nproc_per_node != 1:
        from .distributed import check_launch

        check_launch(nproc_per_node)
    run_recipe(recipe, set_, out=out, resume=resume, dry_run=dry_run, console=console, progress=progress,
               nproc=nproc_per_node)


@app.command()
@friendly
def sample(
    run_path: Path = typer.Argument(..., metavar="RUN", help="A run folder or a checkpoint folder."),
    n: int = typer.Option(64, "--n", min=1, help="How many samples."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs and samples.npz."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint folder (default: the latest good one)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="A registered sampler (default: the recipe's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps for samplers that take them: ddim, respaced, dpm-solver++ (network evaluations), heun (2 steps - 1 evaluations)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights (default) or the raw ones."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast) or auto (bf16 where supported)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    progressive: bool = typer.Option(False, "--progressive", help="Also write progressive.png: x0_hat along the reverse chain (Fig. 6)."),
    snapshots: int = typer.Option(10, "--snapshots", min=2, help="Columns of the --progressive grid."),
    share_from: list[int] = typer.Option([], "--share-from", help="Also write shared-completions.png: completions sharing one frozen x_t at this t (Fig. 7; repeatable)."),
    completions: int = typer.Option(8, "--completions", min=1, help="Completions per --share-from time."),
) -> None:
    """Draw samples from a trained run: one PNG per sample, a grid, and samples.npz (uint8 N x H x W x C);
    with --progressive and --share-from, the pictures of Figs. 6 and 7."""
    from .component import construct
    from .plugins import plugin_system
    from .config import PRECISIONS
    from .errors import GendiffError
    from .runs import generate, load_run, write_samples
    from .runtime import choose_device, choose_precision

    if precision not in PRECISIONS:
        raise GendiffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = choose_device(device)
    if steps is not None and sampler is None:
        raise GendiffError("--steps goes with --sampler (e.g. --sampler ddim --steps 50)")
    args = {} if steps is None else {"steps": steps}
    chosen = None if sampler is None else construct(plugin_system().registry("sampler").get(sampler), "sampler", args)
    model, ckpt = load_run(run_path, checkpoint, ema=ema, device=dev)
    if chosen is not None:
        from .builder import check_compatibility

        check_compatibility({"sampler": chosen, "schedule": model.schedule, "parameterization": model.parameterization,
                             "variance": model.variance})
    from .evaluation.analyses import check_time

    for t in share_from:
        check_time(model, t, "--share-from")
    x = generate(model, n, seed=seed, batch_size=batch_size, sampler=chosen, console=err_console, progress=progress,
                 precision=choose_precision(precision, dev))
    write_samples(x, model.levels, out)
    console.print(f"wrote {n} samples from {ckpt} to {out} (samples.npz, grid.png and one PNG each)")
    if progressive or share_from:
        from .evaluation.analyses import progressive as run_progressive, shared_completions
        from .images import grid, save_png, to_uint8

        scale = max(1, 64 // model.data_shape[1])
        if progressive:
            frames, times = run_progressive(model, min(n, 16), snapshots, seed)
            pictures = to_uint8(frames.flatten(0, 1), model.levels)
            save_png(grid(pictures, nrow=frames.shape[1]), out / "progressive.png", scale=scale)
            console.print(f"progressive.png: rows are samples; columns x0_hat at t = {', '.join(map(str, times))}, then the sample")
        if share_from:
            rows = shared_completions(model, list(share_from), completions, seed)
            pictures = to_uint8(rows.flatten(0, 1), model.levels)
            save_png(grid(pictures, nrow=completions), out / "shared-completions.png", scale=scale)
            console.print(f"shared-completions.png: row i holds {completions} completions of one x_t frozen at t = "
                          f"{', '.join(map(str, share_from))}")


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

    from .plugins import PluginLoadWarning, plugin_system

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # `gendiff plugins` shows failures
        return plugin_system().registry("metric").names()


def _metric_command(name: str):
    """A click command that evaluates the metric ``name`` on a run and writes RUN/eval/NAME.json."""
    import click

    from .evaluation.metrics import Metric
    from .plugins import registry

    cls = registry("metric").get(name)
    doc = (cls.__doc__ or Metric.__doc__).strip().split("\n\n")[0]

    @click.command(name=name, help=f"{doc} Writes RUN/eval/{name}.json.")
    @click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
    @click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                  help="A checkpoint folder (default: the latest good one).")
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
    @click.option("--progress/--no-progress", default=True, help="Show progress bars.")
    @friendly
    def command(run_path, checkpoint, device, progress):
        _evaluate_metric(name, run_path, checkpoint, device, progress)

    return command


def _evaluate_metric(name, run_path, checkpoint, device, progress) -> None:
    import json

    from .evaluation import check_metrics, metric
    from .evaluation.inputs import eval_context
    from .recipe import parse_recipe
    from .runs import load_run
    from .runtime import choose_device, choose_precision

    dev = choose_device(device)
    model, ckpt = load_run(run_path, checkpoint, device=dev)
    spec = parse_recipe(model.recipe)
    spec.eval.metrics = [name]
    check_metrics(spec, model)
    run_dir = ckpt.parent.parent
    precision = choose_precision(spec.train.precision, dev)
    result = metric(name).evaluate(eval_context(model, spec, run_dir, ckpt, precision, err_console, progress))
    result["checkpoint"] = str(ckpt)
    out = run_dir / "eval" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = Table(title=f"{name} of {ckpt} ({out})")
    table.add_column("what")
    table.add_column("value")
    for label, value in metric(name).summary(result):
        table.add_row(label, value)
    console.print(table)


eval_app = typer.Typer(cls=EvalGroup, no_args_is_help=True,
                       help="Evaluate samples and trained runs: fid, nll, rd, and every registered metric by name.")
app.add_typer(eval_app, name="eval")


@eval_app.command("fid")
@friendly
def eval_fid(
    target: Path = typer.Argument(..., metavar="SAMPLES_OR_RUN", help="A run, a checkpoint, a samples.npz or a folder of images."),
    ref: Optional[str] = typer.Option(None, "--ref", help="train or test (the run's data, default train), DATASET:SPLIT, or a path."),
    n: Optional[int] = typer.Option(None, "--n", min=2, help="Samples to use (default: a run's eval.fid_samples, or all given)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="torch-fidelity's Inception-v3 weights file, for machines without internet."),
    features: Optional[str] = typer.Option(None, "--features", help="gendiff-digits or inception-v3-compat (default: by image shape)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a run's samples."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch when generating."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """FID and KID (and the Inception Score) of samples against a reference, with torch-fidelity."""
    import json

    from .evaluation.fidelity import choose_features, fidelity
    from .evaluation.inputs import is_run, load_images, reference_images, run_folder, run_samples

    model = ckpt = None
    if is_run(target):
        from .runs import load_run

        model, ckpt = load_run(target)
        ref = ref or "train"
        reference, key = reference_images(ref, model)  # fail on a bad reference before sampling
        from .runtime import choose_precision

        precision = choose_precision(model.recipe.get("train", {}).get("precision", "fp32"), model.device)
        samples, model, ckpt = run_samples(target, n, seed, batch_size, err_console, progress, precision,
                                           model=model, checkpoint=ckpt)
    else:
        if ref is None:
            raise GendiffError("--ref is needed for a set of samples: train/test of a run's data need a run; "
                               "give DATASET:SPLIT (e.g. digits:train) or a folder of images")
        samples = load_images(target)
        if n is not None:
            if n > len(samples):
                raise GendiffError(f"--n {n} is more than the {len(samples)} samples in {target}")
            samples = samples[:n]
        reference, key = reference_images(ref)
    space = features or choose_features(samples)
    result = fidelity(samples, reference, key, space, inception_weights)
    result["reference"] = ref
    if ckpt is not None:
        result["checkpoint"] = str(ckpt)
        out = run_folder(ckpt) / "eval" / f"fid-{ref.replace('/', '_').replace(':', '-')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
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
BoundRun = Annotated[Path, typer.Argument(metavar="RUN", help="A run or checkpoint folder.")]
BoundSplit = Annotated[str, typer.Option("--split", help="train or test.")]
BoundN = Annotated[Optional[int], typer.Option("--n", min=1, help="Images to evaluate (default: the recipe's eval.nll_examples).")]
BoundBatch = Annotated[int, typer.Option("--batch-size", min=1)]
BoundSeed = Annotated[int, typer.Option("--seed", help="Seed of the draws x_t ~ q(x_t | x0).")]
BoundProgress = Annotated[bool, typer.Option("--progress/--no-progress")]


@eval_app.command("nll")
@friendly
def eval_nll(
    run_path: BoundRun,
    split: BoundSplit = "test",
    n: BoundN = None,
    batch_size: BoundBatch = 256,
    seed: BoundSeed = 0,
    progress: BoundProgress = True,
    clip_x0: bool = typer.Option(False, "--clip-x0", help="The official evaluation's convention: clip x0_hat to "
                                 "[-1, 1] before forming each reverse mean (calc_bpd_loop, clip_denoised=True)."),
) -> None:
    """Bits/dim (the bound of eq. 5) with its breakdown L_T, L_1..L_{T-1}, L_0 and every term L_{t-1};
    JSON in RUN/eval/ (nll-SPLIT.json, or nll-SPLIT-clipped.json with --clip-x0)."""
    import json

    from .evaluation.likelihood import nll_report
    from .evaluation.inputs import run_folder

    bp, ckpt = _bound_pass(run_path, split, n, batch_size, seed, progress, clip_x0)
    report = nll_report(bp, split)
    report["checkpoint"] = str(ckpt)
    out = run_folder(ckpt) / "eval" / f"nll-{split}{'-clipped' if clip_x0 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    bpd = report["bits_per_dim"]
    convention = "x0_hat clipped, the official convention" if clip_x0 else "exact: x0_hat as predicted"
    table = Table(title=f"bits/dim on {report['examples']} {split} images, {convention} ({out})")
    table.add_column("term")
    table.add_column("bits/dim", justify="right")
    table.add_row("L_T (prior)", f"{bpd['prior_L_T']:.3e}")
    table.add_row("L_1 + ... + L_{T-1}", f"{bpd['sum_L_1_to_L_T_minus_1']:.5f}")
    table.add_row("L_0 (decoder)", f"{bpd['decoder_L_0']:.5f}")
    table.add_row("total (NLL bound)", f"{bpd['total']:.5f}")
    console.print(table)


@eval_app.command("rd")
@friendly
def eval_rd(
    run_path: BoundRun,
    split: BoundSplit = "test",
    n: BoundN = None,
    batch_size: BoundBatch = 256,
    seed: BoundSeed = 0,
    progress: BoundProgress = True,
) -> None:
    """The rate-distortion curve of progressive lossy compression (Sec. 4.3, Fig. 5): rd.csv and rd.png in RUN/eval/."""
    from .evaluation.inputs import run_folder
    from .evaluation.likelihood import write_rate_distortion

    bp, ckpt = _bound_pass(run_path, split, n, batch_size, seed, progress)
    csv_path, png_path = write_rate_distortion(bp, run_folder(ckpt) / "eval" / f"rd-{split}")
    rate = bp.rate()
    T = len(bp.terms)
    table = Table(title=f"rate-distortion on {bp.examples} {split} images ({csv_path}, {png_path.name})")
    for col in ("t", "reverse steps", "rate (bits/dim)", "distortion (RMSE, 0..255)"):
        table.add_column(col, justify="right")
    for t in sorted({T, (3 * T) // 4, T // 2, T // 4, 1, 0}, reverse=True):
        table.add_row(str(t), str(T - t + 1), f"{rate[t]:.5f}", f"{bp.distortion[t - 1] if t else 0.0:.3f}")
    console.print(table)


def _bound_pass(run_path, split, n, batch_size, seed, progress, clip_x0: bool = False):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .evaluation.likelihood import bound_pass, split_labels
    from .runs import load_run

    if split not in ("train", "test"):
        raise GendiffError(f"--split must be train or test, got {split!r}")
    model, ckpt = load_run(run_path)
    n = n or model.recipe.get("eval", {}).get("nll_examples", 256)
    data = model.dataset.load(split)
    if n > len(data):
        raise GendiffError(f"--n {n} is more than the {len(data)} images of the {split} split")
    data = data[:n]
    with Progress(TextColumn("bound"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=not progress) as bar:
        task = bar.add_task("bound", total=n * model.timesteps)
        bp = bound_pass(model, data, batch_size, seed, progress=lambda k: bar.update(task, advance=k),
                        labels=split_labels(model, model.dataset, split, n), clip_x0=clip_x0)
    return bp, ckpt


@app.command()
@friendly
def interpolate(
    run_path: Path = typer.Argument(..., metavar="RUN", help="A run or checkpoint folder."),
    t: int = typer.Option(500, "--t", help="Encode to this time (1..T); larger t gives coarser, more varied mixes."),
    steps: int = typer.Option(9, "--steps", min=2, help="Values of lambda from 0 to 1."),
    pairs: int = typer.Option(4, "--pairs", min=1, help="Image pairs (rows)."),
    split: str = typer.Option("test", "--split", help="Where the images come from: train or test."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the PNG grid."),
) -> None:
    """Interpolate in x_t (Sec. 4.4, Fig. 8): rows are pairs; columns the first image, its
    reconstruction ... the second's reconstruction, the second image."""
    from .distributions import levels_to_unit
    from .evaluation.analyses import check_time, interpolate as run_interpolate
    from .images import grid, save_png, to_uint8
    from .runs import load_run

    if split not in ("train", "test"):
        raise GendiffError(f"--split must be train or test, got {split!r}")
    model, ckpt = load_run(run_path)
    check_time(model, t, "--t")
    data = model.dataset.load(split)
    if 2 * pairs > len(data):
        raise GendiffError(f"--pairs {pairs} needs {2 * pairs} images; the {split} split has {len(data)}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[: 2 * pairs]
    x0 = levels_to_unit(data[idx].float(), model.levels)
    a, b = x0[:pairs], x0[pairs:]
    mixes = run_interpolate(model, a, b, t, steps, seed)
    rows = torch.cat([a[:, None], mixes, b[:, None]], dim=1)
    path = Path(out) / f"interpolation-t{t}.png"
    save_png(grid(to_uint8(rows.flatten(0, 1), model.levels), nrow=steps + 2), path, scale=max(1, 64 // model.data_shape[1]))
    console.print(f"wrote {path}: {pairs} pairs, lambda in {steps} steps from 0 to 1, decoded from t = {t}")


@recipe_app.command("validate")
@friendly
def recipe_validate(
    recipe: Path = typer.Argument(..., help="The recipe TOML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Check a recipe completely (names, arguments, types, compatibility) and build its model."""
    from .training import prepare

    setup = prepare(recipe, set_)
    params = sum(p.numel() for p in setup.model.backbone.parameters())
    names = ", ".join(f"{t} '{getattr(setup.model, t).name}'" for t in setup.spec.components)
    console.print(f"{recipe}: valid. {names}; data '{setup.spec.data.name}'; {params:,} parameters.")


@app.command()
@friendly
def plugins() -> None:
    """List every plugin, its version, its components per family, and any that failed to load."""
    import warnings

    from .plugins import PluginLoadWarning, plugin_system

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # failures are shown in the table
        system = plugin_system()
    table = Table(title="gendiff plugins")
    table.add_column("plugin")
    table.add_column("version")
    table.add_column("components")
    for info in system.plugins.values():
        if info.error:
            comps = f"[red]failed: {info.error}[/red]"
        else:
            comps = "\n".join(f"{fam}: {', '.join(names)}" for fam, names in info.components.items()) or "-"
        table.add_row(info.name, info.version or "-", comps)
    console.print(table)


@app.callback()
def _root() -> None:
    """gendiff: the DDPM paper, exact, from components anyone can replace."""


def main() -> None:
    """Console entry point: usage errors are typer's; a :class:`GendiffError` becomes one
    paragraph on stderr and exit code 1, never a traceback."""
    try:
        app()
    except GendiffError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(1)
