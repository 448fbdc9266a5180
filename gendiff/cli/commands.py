"""The commands that train and use runs: ``run``, ``sample``, ``interpolate`` and ``plugins``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from ..conditioning import GuidanceWarning
from ..errors import GendiffError
from ..config import DEVICE_HELP
from .common import (SET_HELP, Checkpoint, Device, Precision, Progress, RunArg, Sampler, SamplerSet, Seed, Steps, app,
                     checked_precision, console, err_console, friendly, load_on_split, run_precision, sampling_labels)


@app.command()
@friendly
def run(
    recipe: str = typer.Argument(..., metavar="RECIPE", help="A recipe: a TOML file, a built-in recipe's name "
                                 "(gendiff recipes list), e.g. quickstart, or a run folder (its own recipe; "
                                 "with --resume, --out defaults to it)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="The run folder (default: runs/<recipe name>)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the run (train.seed): initialisation, data "
                                       "order, noise."),
    device: Optional[str] = typer.Option(None, "--device", help=f"Where to train (train.device): {DEVICE_HELP}."),
    precision: Precision = None,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest good checkpoint "
                                "(none yet: start from step 0), with a recipe that means the same."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the resolved recipe and the plan; write nothing."),
    progress: Progress = True,
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Train with this many processes on this "
                                       "machine (data parallel; starts torchrun). Multi-node: call torchrun "
                                       "yourself, see docs/reliability.md."),
) -> None:
    """Train a recipe, then sample and report its [eval] evaluations. --seed, --device and
    --precision are the recipe's train.seed, train.device and train.precision (as --set would set them)."""
    from ..runner import run as run_recipe

    checked_precision(precision)
    overrides = list(set_) + [f"train.{key}={value!r}" if isinstance(value, str) else f"train.{key}={value}"
                              for key, value in (("seed", seed), ("device", device), ("precision", precision))
                              if value is not None]
    if nproc_per_node != 1:
        from ..distributed import check_launch

        check_launch(nproc_per_node)
    run_recipe(recipe, overrides, out=out, resume=resume, dry_run=dry_run, console=console, progress=progress,
               nproc=nproc_per_node)


@app.command()
@friendly
def sample(
    run_path: RunArg,
    n: int = typer.Option(64, "--n", min=1, help="How many samples (of each --class)."),
    out: Path = typer.Option(..., "--out", help="Folder for the samples: one PNG each and samples.npz, nothing "
                             "else (a folder torch-fidelity and clean-fid read as is). The figures go to "
                             "--figures."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Folder for grid.png, progressive.png and "
                                           "shared-completions.png (default: OUT-figures beside OUT)."),
    checkpoint: Checkpoint = None,
    sampler: Sampler = None,
    steps: Steps = None,
    set_: SamplerSet = [],
    seed: Seed = 0,
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights (default) or the raw ones."),
    device: Device = "auto",
    precision: Precision = None,
    progress: Progress = True,
    progressive: bool = typer.Option(False, "--progressive", help="Also write progressive.png: x0_hat along the reverse chain (Fig. 6)."),
    snapshots: int = typer.Option(10, "--snapshots", min=2, help="Columns of the --progressive grid."),
    share_from: list[int] = typer.Option([], "--share-from", help="Also write shared-completions.png: completions sharing one frozen x_t at this t (Fig. 7; repeatable)."),
    completions: int = typer.Option(8, "--completions", min=1, help="Completions per --share-from time."),
    classes: list[str] = typer.Option([], "--class", help="A conditional model's class, by number or name (e.g. 3 "
                                      "or sneaker; repeatable; 'all': every class). --n samples of each; the grid "
                                      "has one labelled row per class. Default: the classes in turn."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance weight w >= 0: "
                                             "(1 + w) eps(x, c) - w eps(x, null); 0 is the plain conditional model "
                                             "(default: the recipe's)."),
) -> None:
    """Draw samples from a trained run with the recipe's sampler (or --sampler; --steps and --set
    sampler.KEY=VALUE change its settings): one PNG per sample and samples.npz (uint8 N x H x W x C,
    with "labels" for a conditional model) in --out; grid.png, and with --progressive and
    --share-from the pictures of Figs. 6 and 7 (labelled with their t), in --figures."""
    from ..runs import choose_sampler, figures_folder, generate, load_run, write_samples
    from ..runtime import choose_device

    checked_precision(precision)
    if sampler is not None:  # an unknown name is refused before the run is read
        from ..plugins import registry

        registry("sampler").get(sampler)
    dev = choose_device(device)
    model, ckpt = load_run(run_path, checkpoint, ema=ema, device=dev)
    chosen = choose_sampler(model, sampler, steps, set_)
    from ..evaluation.analyses import check_time

    for t in share_from:
        check_time(model, t, "--share-from")
    labels, names, w = sampling_labels(model, classes, n, guidance)
    total = n if labels is None else len(labels)
    figures = Path(figures) if figures is not None else figures_folder(out)
    dtype = run_precision(precision, model, dev)
    from ..files import output_folders
    from ..runs import check_sample_count

    check_sample_count(model, total)
    with output_folders((out, "--out"), (figures, "--figures")):  # checked before minutes of sampling
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GuidanceWarning)  # sampling_labels said it in words
            x = generate(model, total, seed=seed, batch_size=batch_size, sampler=chosen, console=err_console,
                         progress=progress, precision=dtype, cond=labels, guidance=w)
        write_samples(x, model.levels, out, figures / "grid.png", labels=labels, names=names)
        k = 0 if labels is None else len(set(labels.tolist()))
        what = f" of {k} class{'es' if k > 1 else ''} (guidance w = {w:g}; grid.png: a row per class)" if k else ""
        console.print(f"wrote {total} samples{what} from {ckpt} to {out} (one PNG each and samples.npz); "
                      f"grid.png in {figures}")
        if progressive or share_from:
            _analysis_figures(model, n, seed, progressive, snapshots, list(share_from), completions, figures,
                              progress, dtype)


def _analysis_figures(model, n, seed, progressive, snapshots, share_from, completions, figures, progress, dtype):
    """progressive.png (Fig. 6) and shared-completions.png (Fig. 7), labelled with their times."""
    from ..evaluation.analyses import progressive as run_progressive, shared_completions
    from ..images import save_labelled_rows, to_uint8
    from ..progress import Progress as Bar, reverse_steps
    from ..runtime import autocast

    scale = max(1, 64 // model.data_shape[1])
    if progressive:
        with Bar("progressive", model.timesteps, err_console, progress) as bar, autocast(model.device, dtype):
            frames, times = run_progressive(model, min(n, 16), snapshots, seed, progress=reverse_steps(bar))
        rows = [to_uint8(row, model.levels) for row in frames]
        save_labelled_rows(rows, None, figures / "progressive.png", scale,
                           columns=[f"t={t}" for t in times] + ["sample"])
        console.print(f"progressive.png: rows are samples; columns x0_hat at t = {', '.join(map(str, times))}, "
                      f"then the sample")
    if share_from:
        with Bar("completions", model.timesteps + sum(share_from), err_console, progress) as bar, \
                autocast(model.device, dtype):
            rows = shared_completions(model, share_from, completions, seed, progress=reverse_steps(bar))
        save_labelled_rows([to_uint8(row, model.levels) for row in rows], [f"t={t}" for t in share_from],
                           figures / "shared-completions.png", scale)
        console.print(f"shared-completions.png: row i holds {completions} completions of one x_t frozen at t = "
                      f"{', '.join(map(str, share_from))}")


@app.command()
@friendly
def interpolate(
    run_path: RunArg,
    t: int = typer.Option(500, "--t", help="Encode to this time (1..T); larger t gives coarser, more varied mixes."),
    lambdas: int = typer.Option(9, "--lambdas", min=2, help="Values of lambda from 0 to 1 (columns between the two images)."),
    pairs: int = typer.Option(4, "--pairs", min=1, help="Image pairs (rows)."),
    split: str = typer.Option("test", "--split", help="Where the images come from: train or test."),
    seed: Seed = 0,
    out: Path = typer.Option(Path("."), "--out", help="Folder for the PNG grid."),
    checkpoint: Checkpoint = None,
    device: Device = "auto",
    precision: Precision = None,
    progress: Progress = True,
) -> None:
    """Interpolate in x_t (Sec. 4.4, Fig. 8): rows are pairs; columns the first image, its
    reconstruction (lambda = 0) ... the second's reconstruction (lambda = 1), the second image;
    each column is labelled with its lambda."""
    from ..distributions import levels_to_unit
    from ..evaluation.analyses import check_time, interpolate as run_interpolate
    from ..images import save_labelled_rows, to_uint8
    from ..progress import Progress as Bar, reverse_steps
    from ..runtime import autocast

    model, ckpt, dev, dtype = load_on_split(run_path, split, checkpoint, device, precision)
    check_time(model, t, "--t")
    from ..files import output_folders

    with output_folders((out, "--out")):
        data = model.dataset.load(split)
        if 2 * pairs > len(data):
            raise GendiffError(f"--pairs {pairs} needs {2 * pairs} images; the {split} split has {len(data)}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(data), generator=g)[: 2 * pairs]
        x0 = levels_to_unit(data[idx].float(), model.levels)
        a, b = x0[:pairs], x0[pairs:]
        with Bar("interpolating", lambdas * t, err_console, progress) as bar, autocast(dev, dtype):
            mixes = run_interpolate(model, a, b, t, lambdas, seed, progress=reverse_steps(bar))
        rows = torch.cat([a[:, None], mixes, b[:, None]], dim=1)
        path = Path(out) / f"interpolation-t{t}.png"
        columns = ["x0"] + [f"{lam:.2g}" for lam in torch.linspace(0, 1, lambdas).tolist()] + ["x0'"]
        save_labelled_rows([to_uint8(row, model.levels) for row in rows], None, path,
                           max(1, 64 // model.data_shape[1]), columns=columns)
    console.print(f"wrote {path}: {pairs} pairs, lambda in {lambdas} steps from 0 to 1 (the column labels), "
                  f"decoded from t = {t}")


@app.command()
@friendly
def plugins() -> None:
    """List every plugin, its version, its components per family, and any that failed to load."""
    import warnings

    from ..plugins import PluginLoadWarning, plugin_system

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
