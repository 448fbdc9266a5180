"""Training curves from a run's ``metrics.jsonl`` (one JSON object per logged step: ``step``,
``loss`` (the mean over the log interval), ``lr``, ``grad_norm``, ``img_per_s``, ``time``):
``gendiff plot RUN`` and the ``curves.png`` that ``gendiff run`` writes when training ends."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import GendiffError

#: the panels of curves.png: (key in metrics.jsonl, axis label, log scale)
PANELS = (("loss", "training loss (interval mean)", True), ("grad_norm", "gradient norm (before clipping)", True),
          ("lr", "learning rate", False), ("img_per_s", "images / s", False))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The logged lines of a run, in step order (a last line cut short by a crash is skipped).
    A folder without ``metrics.jsonl`` or with no line in it is a :class:`GendiffError`."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        what = "does not exist" if not Path(run_dir).exists() else "has no metrics.jsonl (is it a run folder?)"
        raise GendiffError(f"{run_dir} {what}; gendiff plot reads the metrics.jsonl that gendiff run writes.")
    from .files import json_lines

    rows = [row for row in json_lines(path)[0] if isinstance(row.get("step"), int)]  # damaged lines skipped
    if not rows:
        raise GendiffError(f"{path} has no logged step yet; nothing to plot.")
    return sorted(rows, key=lambda r: r["step"])


def smooth(values: list[float], window: int) -> list[float]:
    """A trailing moving average over ``window`` points (the first points average what there is)."""
    out, total, kept = [], 0.0, []
    for v in values:
        kept.append(v)
        total += v
        if len(kept) > window:
            total -= kept.pop(0)
        out.append(total / len(kept))
    return out


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's training curves (``RUN/curves.png`` unless ``out``): loss with a moving
    average, gradient norm, learning rate and throughput against the step. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "curves.png"
    panels = [p for p in PANELS if any(isinstance(r.get(p[0]), (int, float)) for r in rows)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (key, label, log) in zip(axes[:, 0], panels):
        points = [(r["step"], float(r[key])) for r in rows
                  if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        steps, values = [s for s, _ in points], [v for _, v in points]
        ax.plot(steps, values, lw=0.8, color="tab:blue", alpha=0.5 if key == "loss" else 1.0)
        if key == "loss" and len(values) >= 10:
            ax.plot(steps, smooth(values, max(2, len(values) // 20)), lw=1.5, color="tab:blue", label="moving average")
            ax.legend(loc="upper right", fontsize=8)
        if log and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"{Path(run_dir).name}: {rows[-1]['step']:,} steps", fontsize=10)
    fig.tight_layout()
    from .files import write_with

    try:
        write_with(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))  # atomic: a whole figure or the old one
    finally:
        plt.close(fig)
    return out
