"""What every command shares: the typer app, the consoles, and :func:`friendly` (a
:class:`GendiffError` becomes one paragraph on stderr and exit code 1, never a traceback)."""

from __future__ import annotations

import functools
import os
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from ..conditioning import GuidanceWarning
from ..errors import GendiffError

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
