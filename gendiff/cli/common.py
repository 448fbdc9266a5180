"""What every command shares: the typer app, the consoles, and :func:`friendly` (a
:class:`GendiffError` becomes one paragraph on stderr and exit code 1, never a traceback)."""

from __future__ import annotations

import functools
import os

import typer
from rich.console import Console
from rich.markup import escape

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
