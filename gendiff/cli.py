"""The ``gendiff`` command line (typer + rich). Bad input ends in one paragraph and exit code 1."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from .errors import GendiffError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Diffusion models from replaceable components.")
console = Console()
err_console = Console(stderr=True)


@app.command()
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
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(1)
