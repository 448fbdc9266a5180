"""The run folder as the trainer writes it: the resolved recipe, ``metrics.jsonl`` and the
checkpoints. Only rank 0 writes; :meth:`Dist.on_main` carries the outcome of every write to all
ranks, so a failed write stops every process with the same message.

Layout: ``recipe.toml``, ``metrics.jsonl`` (one JSON object per logged step),
``checkpoints/step-N/`` (see :mod:`gendiff.checkpoint`), ``samples/``, ``eval/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint import (
    CheckpointError, Checkpoint, list_checkpoints, load_latest, prune_checkpoints, remove_debris, save_checkpoint,
)
from ..distributed import Dist
from ..errors import TrainingError


class RunFolder:
    """One run's folder, written by rank 0 of ``dist``."""

    def __init__(self, path: Path, dist: Dist, recipe_text: str):
        self.path, self.dist, self.recipe_text = Path(path), dist, recipe_text
        self._metrics = None

    # -- starting --------------------------------------------------------------------------------
    def prepare(self, resume: bool) -> None:
        """Check and prepare the folder (rank 0; every rank raises the same error)."""
        self.dist.on_main(lambda: self._prepare_here(resume), TrainingError)

    def _prepare_here(self, resume: bool) -> None:
        existing = list_checkpoints(self.path)
        if existing and not resume:
            raise TrainingError(
                f"{self.path} already holds a run (checkpoints up to step {existing[-1][0]}). Continue it with "
                f"--resume, or choose another folder with --out; nothing was changed."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise TrainingError(f"cannot write to the run folder {self.path}: {exc.strerror or exc}.") from None
        remove_debris(self.path)  # what a killed process left half-written
        if not resume:  # a folder without checkpoints: whatever an aborted start left is replaced
            (self.path / "metrics.jsonl").unlink(missing_ok=True)
            (self.path / "recipe.toml").write_text(self.recipe_text)

    def latest(self) -> Checkpoint:
        """The newest checkpoint that verifies and reads (damaged newer ones are reported and skipped)."""
        ckpt = load_latest(self.path, warn=self.dist.main)
        if ckpt is None:
            raise TrainingError(f"nothing to resume in {self.path}: it has no usable checkpoint.")
        return ckpt

    # -- metrics.jsonl ---------------------------------------------------------------------------
    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be redone),
        and a last line cut short by a crash."""
        path = self.path / "metrics.jsonl"
        if not path.is_file() or not self.dist.main:
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def open_metrics(self) -> None:
        self._metrics = open(self.path / "metrics.jsonl", "a") if self.dist.main else open(os.devnull, "w")

    def log(self, figures: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it (a crash loses at most this line)."""
        self._metrics.write(json.dumps(figures) + "\n")
        self._metrics.flush()

    def close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, step: int, model: dict, ema: dict, state: dict, keep: int) -> Path:
        """Write checkpoint ``step`` atomically and prune to the ``keep`` newest (rank 0)."""
        def write() -> Path:
            path = save_checkpoint(self.path, step, model, ema, state, self.recipe_text)
            prune_checkpoints(self.path, keep)
            return path

        return self.dist.on_main(write, CheckpointError) or self.path / "checkpoints" / f"step-{step}"

    def non_finite(self, what: str, value: float, step: int) -> TrainingError:
        """The error for a non-finite loss or gradient at ``step`` (1-based), saying what was kept."""
        good = list_checkpoints(self.path)
        kept = f"the last good checkpoint, step {good[-1][0]}, is untouched" if good else "no checkpoint was written"
        return TrainingError(
            f"the {what} became {value} at step {step}; training stopped before updating the weights "
            f"and {kept}. Lower train.lr, enable train.grad_clip, or check the data."
        )
