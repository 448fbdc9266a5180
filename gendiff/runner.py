"""``gendiff run``: a recipe from validation to trained model, samples and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import distributed
from .conditioning import class_names
from .distributions import unit_to_levels
from .errors import GendiffError
from .files import write_text
from .runs import generate, write_samples
from .runtime import choose_device, choose_precision
from .training import Trainer, prepare


def default_run_dir(source) -> Path:
    return Path("runs") / Path(str(source)).stem


def run(source, overrides: Sequence[str] = (), out: str | Path | None = None, resume: bool = False,
        dry_run: bool = False, console: Console | None = None, progress: bool = True,
        stop_after: int | None = None, nproc: int = 1, plugins=None) -> dict[str, Any]:
    """Validate, build, train (or resume), sample from the EMA model and evaluate.
    Returns a summary dict (also the dry run's plan). ``plugins``: the plugin system whose
    components and event hooks the run uses (default: the installed plugins)."""
    console = console or Console()
    if isinstance(source, (str, Path)) and Path(source).is_dir() and (Path(source) / "recipe.toml").is_file():
        # a run folder: its own resolved recipe (overrides given at its start need not be repeated)
        out, source = out or Path(source), Path(source) / "recipe.toml"
    setup = prepare(source, overrides, plugins)
    cfg, ev = setup.spec.train, setup.spec.eval
    run_dir = Path(out) if out else default_run_dir(source)
    params = sum(p.numel() for p in setup.model.backbone.parameters())
    device = choose_device(cfg.device)
    plan = {
        "run_dir": str(run_dir), "parameters": params, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "accumulate": cfg.accumulate,
        "device": str(device), "precision": choose_precision(cfg.precision, device),
        "checkpoint_every": cfg.checkpoint_every, "final_samples": ev.samples, "metrics": list(ev.metrics),
        "processes": nproc,
    }
    distributed.check_batch(cfg.batch_size, distributed.Dist(0, nproc), cfg.accumulate)
    if dry_run:
        console.print(setup.recipe_text, markup=False, highlight=False)
        console.print(
            f"[bold]dry run[/bold]: {params:,} parameters; would train {cfg.steps:,} steps of batch {cfg.batch_size}"
            f"{f' in {cfg.accumulate} micro-batches' if cfg.accumulate > 1 else ''} "
            f"on {plan['device']} ({plan['precision']}{f', {nproc} processes' if nproc > 1 else ''}), checkpoint every {cfg.checkpoint_every:,} steps into "
            f"{run_dir}, then draw {ev.samples} samples and evaluate {', '.join(ev.metrics) or 'nothing'}. "
            f"Nothing was written."
        )
        return plan
    if nproc > 1:  # this process starts torchrun, whose processes come back here with nproc = 1
        if not isinstance(source, (str, Path)):
            raise GendiffError("training with several processes needs the recipe as a file, not a table")
        args = ["run", str(source), *(a for item in overrides for a in ("--set", item)), "--out", str(run_dir)]
        args += (["--resume"] if resume else []) + ([] if progress else ["--no-progress"])
        code = distributed.launch(nproc, args)
        if code:
            raise GendiffError(f"the {nproc}-process run failed (torchrun exit code {code}); the messages above "
                               f"say why. Checkpoints already written in {run_dir} are kept.")
        return plan
    job = distributed.setup(device.type)
    trainer = None
    try:
        trainer = Trainer(setup, run_dir, console=console, progress=progress, dist=job)
        summary = trainer.train(resume=resume, stop_after=stop_after)
    except BaseException:
        if trainer is not None:
            trainer.events.close()
        distributed.teardown(together=False)
        raise
    distributed.teardown()
    try:
        return _finish(trainer, summary, setup, run_dir, plan, job, console, progress)
    finally:
        trainer.events.close()  # the loggers' files are complete, whatever happened after training


def _finish(trainer, summary, setup, run_dir: Path, plan: dict[str, Any], job, console: Console,
            progress: bool) -> dict[str, Any]:
    """After training: the curves, the final samples, the evaluations, the report."""
    cfg, ev = setup.spec.train, setup.spec.eval
    if job.main and summary.steps > 0:
        _write_curves(run_dir, console)
    result: dict[str, Any] = {**plan, "trained_steps": summary.steps, "seconds": round(summary.seconds, 2),
                              "images_per_second": round(summary.images_per_second, 2), "processes": job.world}
    if summary.steps < cfg.steps or not job.main:  # interrupted on purpose (stop_after), or not rank 0
        return result
    model = trainer.ema_model().eval()
    labels = model.conditioning.default_labels(ev.samples)  # a conditional model: the classes in turn
    x = generate(model, ev.samples, seed=cfg.seed, console=console, progress=progress, precision=trainer.precision,
                 cond=labels)
    final = run_dir / "samples" / "final"  # PNGs and samples.npz; the grid beside the training grids
    write_samples(x, model.levels, final, run_dir / "samples" / "final.png", labels=labels,
                  names=class_names(model.conditioning.num_classes, model.dataset))
    trainer.events.emit("gendiff_samples_written", run=trainer.run_info, step=summary.steps,
                        path=run_dir / "samples" / "final.png")
    from .evaluation import run_evaluations
    from .evaluation.inputs import eval_context

    context = eval_context(model, setup.spec, run_dir, summary.checkpoint, trainer.precision, console, progress,
                           unit_to_levels(x, model.levels), setup.plugins)
    evaluations = run_evaluations(context, ev.metrics, setup.plugins)
    (run_dir / "eval").mkdir(exist_ok=True)
    for name, value in evaluations.items():
        write_text(run_dir / "eval" / f"{name}.json", json.dumps(value, indent=1))
    result["evaluations"] = evaluations
    from .evaluation import verdicts

    result["verdicts"] = {name: {"passed": passed, "how": how}
                          for name, (passed, how) in verdicts(evaluations, ev.targets, setup.plugins).items()}
    _report(console, result, setup.plugins)
    trainer.events.emit("gendiff_run_end", run=trainer.run_info, result=result)
    failed = {name: value["error"] for name, value in evaluations.items() if "error" in value}
    if failed:
        raise EvaluationFailed(
            f"training finished and was saved in {run_dir}, but {len(failed)} evaluation(s) failed: "
            + "; ".join(f"{name}: {message}" for name, message in failed.items())
        )
    return result


def _write_curves(run_dir: Path, console: Console) -> None:
    """RUN/curves.png, the training curves (``gendiff plot``); a failure to draw is only said."""
    from .curves import plot_curves

    try:
        plot_curves(run_dir)
    except (GendiffError, OSError, ValueError, RuntimeError) as exc:
        console.print(f"note: the training curves could not be drawn: {exc}", markup=False, highlight=False)


class EvaluationFailed(GendiffError):
    """The run trained and saved, but an evaluation the recipe asked for could not be made."""


def _report(console: Console, result: dict[str, Any], system=None) -> None:
    from .evaluation import metric

    table = Table(title=f"gendiff run: {result['run_dir']}")
    table.add_column("what")
    table.add_column("value")
    table.add_row("steps", f"{result['trained_steps']:,}")
    table.add_row("training time", f"{result['seconds']:.1f} s ({result['images_per_second']:.1f} img/s)")
    table.add_row("samples", f"{result['final_samples']} in {result['run_dir']}/samples/final (PNGs, samples.npz; "
                             f"grid: samples/final.png)")
    for name, value in result.get("evaluations", {}).items():
        rows = [(name, f"failed: {value['error']}")] if "error" in value else metric(name, system).summary(value)
        for label, shown in rows:
            table.add_row(label, shown)
        verdict = result.get("verdicts", {}).get(name)
        if verdict is not None:
            word = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "-"}[verdict["passed"]]
            table.add_row(f"{name}: verdict", f"{word} ({escape(verdict['how'])})")
    console.print(table)
