"""``gendiff plot RUN``: a run's training curves as a PNG, without extra tools."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, friendly, app


@app.command()
@friendly
def plot(
    run_path: Path = typer.Argument(..., metavar="RUN", help="A run folder (it has metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The PNG to write (default: RUN/curves.png)."),
) -> None:
    """Plot a run's training curves from metrics.jsonl: loss (with a moving average), gradient
    norm, learning rate and images/s against the step. Works while the run is still training."""
    from ..curves import plot_curves, read_metrics

    path = plot_curves(run_path, out)
    last = read_metrics(run_path)[-1]
    console.print(f"wrote {path}: {last['step']:,} steps, last loss {last.get('loss', float('nan')):.4f}",
                  highlight=False)
