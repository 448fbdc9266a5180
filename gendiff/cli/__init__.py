"""The ``gendiff`` command line (typer + rich). Bad input ends in one paragraph and exit code 1.

- :mod:`.common`: the app, the consoles, :func:`friendly`;
- :mod:`.commands`: ``run``, ``sample``, ``interpolate``, ``plugins``;
- :mod:`.recipes`: ``recipes list|show|copy|validate``;
- :mod:`.evaluate`: ``eval fid|nll|rd`` and ``eval NAME`` for every registered metric;
- :mod:`.plot`: ``plot`` (a run's training curves);
- :mod:`.interop`: ``import diffusers`` and ``export diffusers``.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from ..errors import GendiffError
from typing import Optional

import typer

from . import commands, evaluate, interop, plot, recipes  # noqa: F401  (they register their commands on the app)
from .common import app, console, err_console, friendly, version_callback


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=version_callback, is_eager=True,
                                           help="Print gendiff's version and exit."),
) -> None:
    """gendiff: the DDPM paper, exact, from components anyone can replace."""


def main() -> None:
    """Console entry point: usage errors are typer's; a :class:`GendiffError` becomes one
    paragraph on stderr and exit code 1, never a traceback."""
    try:
        app()
    except GendiffError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(1)


__all__ = ["app", "console", "err_console", "friendly", "main"]
