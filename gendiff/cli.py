"""The ``gendiff`` command line (typer + rich). Bad input ends in one paragraph and exit code 1."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
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
) -> None:
    """Train a recipe, then sample and report its [eval] evaluations."""
    from .runner import run as run_recipe

    run_recipe(recipe, set_, out=out, resume=resume, dry_run=dry_run, console=console, progress=progress)


@app.command()
@friendly
def sample(
    run_path: Path = typer.Argument(..., metavar="RUN", help="A run folder or a checkpoint folder."),
    n: int = typer.Option(64, "--n", min=1, help="How many samples."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs and samples.npz."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint folder (default: the latest good one)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="A registered sampler (default: the recipe's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights (default) or the raw ones."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast) or auto (bf16 where supported)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Draw samples from a trained run: one PNG per sample, a grid, and samples.npz (uint8 N x H x W x C)."""
    from .component import construct
    from .plugins import plugin_system
    from .config import PRECISIONS
    from .errors import GendiffError
    from .training import choose_device, choose_precision, generate, load_run, write_samples

    if precision not in PRECISIONS:
        raise GendiffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = choose_device(device)
    chosen = None if sampler is None else construct(plugin_system().registry("sampler").get(sampler), "sampler", {})
    model, ckpt = load_run(run_path, checkpoint, ema=ema, device=dev)
    if chosen is not None:
        from .builder import check_compatibility

        check_compatibility({"sampler": chosen, "schedule": model.schedule, "parameterization": model.parameterization,
                             "variance": model.variance})
    x = generate(model, n, seed=seed, batch_size=batch_size, sampler=chosen, console=err_console, progress=progress,
                 precision=choose_precision(precision, dev))
    write_samples(x, model.levels, out)
    console.print(f"wrote {n} samples from {ckpt} to {out} (samples.npz, grid.png and one PNG each)")


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
