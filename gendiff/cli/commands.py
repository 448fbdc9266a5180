"""The commands that train and use runs: ``run``, ``sample``, ``interpolate``,
``recipe validate`` and ``plugins``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from ..conditioning import GuidanceWarning
from ..errors import GendiffError
from .common import SET_HELP, app, console, err_console, friendly, recipe_app, sampling_labels


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
    from ..runner import run as run_recipe

    if nproc_per_node != 1:
        from ..distributed import check_launch

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
    classes: list[str] = typer.Option([], "--class", help="A conditional model's class, by number or name (e.g. 3 "
                                      "or sneaker; repeatable; 'all': every class). --n samples of each; the grid "
                                      "has one labelled row per class. Default: the classes in turn."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance weight w >= 0: "
                                             "(1 + w) eps(x, c) - w eps(x, null); 0 is the plain conditional model "
                                             "(default: the recipe's)."),
) -> None:
    """Draw samples from a trained run: one PNG per sample, a grid, and samples.npz (uint8 N x H x W x C,
    with "labels" for a conditional model); with --progressive and --share-from, the pictures of Figs. 6 and 7."""
    from ..component import construct
    from ..plugins import plugin_system
    from ..config import PRECISIONS
    from ..runs import generate, load_run, write_samples
    from ..runtime import choose_device, choose_precision

    if precision not in PRECISIONS:
        raise GendiffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = choose_device(device)
    if steps is not None and sampler is None:
        raise GendiffError("--steps goes with --sampler (e.g. --sampler ddim --steps 50)")
    args = {} if steps is None else {"steps": steps}
    chosen = None if sampler is None else construct(plugin_system().registry("sampler").get(sampler), "sampler", args)
    model, ckpt = load_run(run_path, checkpoint, ema=ema, device=dev)
    if chosen is not None:
        from ..builder import check_compatibility

        check_compatibility({"sampler": chosen, "schedule": model.schedule, "parameterization": model.parameterization,
                             "variance": model.variance})
    from ..evaluation.analyses import check_time

    for t in share_from:
        check_time(model, t, "--share-from")
    labels, names, w = sampling_labels(model, classes, n, guidance)
    total = n if labels is None else len(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuidanceWarning)  # sampling_labels said it in words
        x = generate(model, total, seed=seed, batch_size=batch_size, sampler=chosen, console=err_console,
                     progress=progress, precision=choose_precision(precision, dev), cond=labels, guidance=w)
    write_samples(x, model.levels, out, labels=labels, names=names)
    k = 0 if labels is None else len(set(labels.tolist()))
    what = f" of {k} class{'es' if k > 1 else ''} (guidance w = {w:g}; grid.png: a row per class)" if k else ""
    console.print(f"wrote {total} samples{what} from {ckpt} to {out} (samples.npz, grid.png and one PNG each)")
    if progressive or share_from:
        from ..evaluation.analyses import progressive as run_progressive, shared_completions
        from ..images import grid, save_png, to_uint8

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
    from ..distributions import levels_to_unit
    from ..evaluation.analyses import check_time, interpolate as run_interpolate
    from ..images import grid, save_png, to_uint8
    from ..runs import load_run

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
    from ..training import prepare

    setup = prepare(recipe, set_)
    params = sum(p.numel() for p in setup.model.backbone.parameters())
    names = ", ".join(f"{t} '{getattr(setup.model, t).name}'" for t in setup.spec.components)
    console.print(f"{recipe}: valid. {names}; data '{setup.spec.data.name}'; {params:,} parameters.")


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
