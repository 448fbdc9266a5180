"""What every command shares: the typer app, the consoles, and :func:`friendly` (a
:class:`GendiffError` becomes one paragraph on stderr and exit code 1, never a traceback)."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..conditioning import GuidanceWarning
from ..config import DEVICE_HELP, PRECISIONS
from ..errors import GendiffError

# help texts are plain text: rich markup would eat a recipe table's name such as "[eval]"
app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Diffusion models from replaceable components.")
console = Console()
err_console = Console(stderr=True)


def say_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one plain line on stderr ("warning: ..."), not Python's file:line format."""
    if os.environ.get("RANK", "0") == "0":
        err_console.print(f"[bold yellow]warning:[/bold yellow] {escape(str(message))}", highlight=False)


def friendly(func):
    """Turn a :class:`GendiffError` inside a command into one paragraph on stderr and exit 1;
    warnings are said in one plain line each."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = say_warning
                return func(*args, **kwargs)
        except GendiffError as exc:
            if os.environ.get("RANK", "0") == "0":  # in a torchrun job, rank 0 speaks for all
                err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


recipe_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="The built-in recipes: list, show, copy one to edit; validate any recipe.")
app.add_typer(recipe_app, name="recipes")
app.add_typer(recipe_app, name="recipe", hidden=True)  # the name of gendiff 0.1's `recipe validate`

SET_HELP = "Override a recipe value, TABLE.KEY=VALUE (TOML syntax; repeatable)."

# -- the options every command spells and means the same way ----------------------------------
Device = Annotated[str, typer.Option("--device", help=f"Where the model runs: {DEVICE_HELP}.")]
Precision = Annotated[Optional[str], typer.Option(
    "--precision", help="fp32, bf16 (autocast) or auto (bf16 where the device supports it); default: the "
                        "recipe's train.precision.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the random draws (reproducible).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress",
                                        help="Show progress (a bar on a terminal, plain lines otherwise).")]
Checkpoint = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="A checkpoint folder, or its name in RUN/checkpoints (default: the latest good one).")]
RunArg = Annotated[Path, typer.Argument(metavar="RUN", help="A run folder or a checkpoint folder.")]
Sampler = Annotated[Optional[str], typer.Option("--sampler", help="A registered sampler (default: the recipe's).")]
Steps = Annotated[Optional[int], typer.Option(
    "--steps", min=1, help="Sampler steps, for samplers that take them (ddim, respaced, dpm-solver++: network "
                           "evaluations; heun: 2 steps - 1 evaluations); default: the recipe's.")]
SamplerSet = Annotated[list[str], typer.Option(
    "--set", help="Override a [sampler] value, sampler.KEY=VALUE (TOML syntax; repeatable), e.g. "
                  "--set sampler.eta=0.5.")]


def run_precision(precision: str | None, model, device) -> str:
    """The precision a command runs a loaded model at: ``--precision`` when given, else the
    recipe's ``train.precision``; ``auto`` resolved for ``device``."""
    from ..runtime import choose_precision

    if precision is None:
        precision = model.recipe.get("train", {}).get("precision", "auto")
    if precision not in PRECISIONS:
        raise GendiffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return choose_precision(precision, device)


def checked_precision(precision: str | None) -> None:
    """Refuse a bad ``--precision`` before anything is loaded."""
    if precision is not None and precision not in PRECISIONS:
        raise GendiffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def load_on_split(run_path, split: str, checkpoint, device: str, precision: str | None):
    """What the commands that read a data split share: ``--split`` and ``--precision`` checked
    before anything is loaded, then the run's model on the chosen device. Returns
    (model, checkpoint path, device, precision)."""
    from ..runs import load_run
    from ..runtime import choose_device

    if split not in ("train", "test"):
        raise GendiffError(f"--split must be train or test, got {split!r}")
    checked_precision(precision)
    dev = choose_device(device)
    model, ckpt = load_run(run_path, checkpoint, device=dev)
    return model, ckpt, dev, run_precision(precision, model, dev)


def version_callback(value: bool) -> None:
    if value:
        from ..version import __version__

        console.print(f"gendiff {__version__}", highlight=False)
        raise typer.Exit()


def sampling_labels(model, classes: list[str], n: int, guidance: float | None):
    """The labels (None for an unconditional model), class names and checked guidance weight of
    ``gendiff sample``: n of each class in ``classes`` (default: the classes in turn). A guidance
    weight on a model that never learned the null label is said as a warning, in words."""
    import torch

    from ..conditioning import class_names, parse_classes

    conditioning = model.conditioning
    names = class_names(conditioning.num_classes, getattr(model, "dataset", None))
    if classes:
        labels = torch.tensor(parse_classes(classes, conditioning.num_classes, names)).repeat_interleave(n)
    else:
        labels = conditioning.default_labels(n)
    return labels, names, checked_guidance(model, guidance)


def checked_guidance(model, guidance: float | None) -> float:
    """The guidance weight to use (the recipe's when None), refused when bad; a weight on a model
    that never learned the null label is said as a warning, in words (not a Python warning line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GuidanceWarning)
        w = model.conditioning.check_guidance(guidance)
    for warning in caught:
        err_console.print(f"[bold yellow]warning:[/bold yellow] {escape(str(warning.message))}", highlight=False)
    return w
