"""``gendiff import diffusers`` and ``gendiff export diffusers`` (:mod:`gendiff.interop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import Checkpoint, app, console, friendly

import_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Bring a model from another format into a gendiff run folder.")
export_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Write a gendiff run's model in another format.")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


@import_app.command("diffusers")
@friendly
def import_diffusers(
    path: Path = typer.Argument(..., metavar="PATH", help="A diffusers DDPM pipeline folder (model_index.json, "
                                "unet/, scheduler/) or a UNet2DModel folder with its scheduler_config.json."),
    out: Path = typer.Option(..., "--out", help="The run folder to write (new, or empty)."),
    data: Optional[str] = typer.Option(None, "--data", help="The registered dataset the model was trained on (e.g. "
                                       "cifar10), for eval nll, interpolate and FID against its splits."),
) -> None:
    """Import a diffusers UNet2DModel + DDPMScheduler as a gendiff run (recipe and a verified
    checkpoint) that every gendiff command accepts. The network keeps diffusers' time indexing
    (unet time_offset = 1). A configuration gendiff cannot represent is refused by name, and
    nothing is written."""
    from ..interop import import_diffusers as run_import

    run = run_import(path, out, data)
    console.print(f"imported {path} into {run} (checkpoints/step-0; recipe.toml). Try: gendiff eval nll {run}"
                  f"{'' if data else ' (needs --data at import for real test images)'}", highlight=False)


@export_app.command("diffusers")
@friendly
def export_diffusers(
    run_path: Path = typer.Argument(..., metavar="RUN", help="A run folder or a checkpoint folder."),
    out: Path = typer.Option(..., "--out", help="The folder to write (new, or empty)."),
    checkpoint: Checkpoint = None,
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA weights (default) or the raw ones."),
) -> None:
    """Export a run's model as a diffusers DDPM pipeline folder:
    diffusers.DDPMPipeline.from_pretrained(OUT) loads and samples from it."""
    from ..interop import export_diffusers as run_export

    folder = run_export(run_path, out, ema=ema, checkpoint=checkpoint)
    console.print(f"wrote {folder}: DDPMPipeline.from_pretrained({str(folder)!r}) loads it", highlight=False)
