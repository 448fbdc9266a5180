"""The run folder as the trainer writes it: the resolved recipe, ``metrics.jsonl`` and the
checkpoints. Only rank 0 writes; :meth:`Dist.on_main` carries the outcome of every write to all
ranks, so a failed write stops every process with the same message.

Layout: ``recipe.toml``, ``metrics.jsonl`` (one JSON object per logged step),
``checkpoints/step-N/`` (see :mod:`gendiff.checkpoint`), ``samples/``, ``eval/``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..checkpoint import (
    CheckpointError, Checkpoint, list_checkpoints, load_latest, prune_checkpoints, remove_debris, save_checkpoint,
)
from ..distributed import Dist
from ..errors import TrainingError
from ..files import json_lines


#: ``[train]`` keys a resumed run may change: where and how fast it runs, how long, what it writes
#: and its learning rate; every other key of the recipe gives the weights their meaning
RESUMABLE_TRAIN_KEYS = {"steps", "device", "precision", "compile", "checkpoint_every", "keep_checkpoints",
                        "sample_every", "sample_grid", "log_every", "loggers", "lr", "grad_clip"}
#: tables a resumed run may change freely: the evaluations, and gendiff's provenance record
RESUMABLE_TABLES = {"eval", "gendiff"}
#: ``[data]`` keys a resumed run may change: where the files are and how they are read
RESUMABLE_DATA_KEYS = {"root", "workers"}


def recipe_differences(old: dict, new: dict) -> list[str]:
    """The keys (``table.key``: old -> new) in which ``new`` differs from a run's recipe ``old``
    where a resumed run may not differ (see :data:`RESUMABLE_TRAIN_KEYS`)."""
    out = []
    for table in sorted(set(old) | set(new)):
        if table in RESUMABLE_TABLES:
            continue
        a, b = old.get(table, {}), new.get(table, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{table}: {a!r} -> {b!r}")
            continue
        for key in sorted(set(a) | set(b)):
            if (table == "train" and key in RESUMABLE_TRAIN_KEYS) or (table == "data" and key in RESUMABLE_DATA_KEYS):
                continue
            if a.get(key, "(absent)") != b.get(key, "(absent)"):
                out.append(f"{table}.{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}")
    return out


def with_defaults(recipe: dict) -> dict:
    """A resolved recipe with the defaults of today's components and tables filled in, so that a
    run written before a key existed compares equal when the key has its default."""
    from ..component import constructor_defaults
    from ..config import to_table
    from ..errors import GendiffError
    from ..plugins import plugin_system
    from ..recipe import COMPONENT_TABLES, CONFIGS, DATA_OPTIONS, backbone_context

    out = {table: dict(value) if isinstance(value, dict) else value for table, value in recipe.items()}
    system = plugin_system()
    for table in (*COMPONENT_TABLES, "data"):
        values = out.get(table)
        if not isinstance(values, dict) or not isinstance(values.get("name"), str):
            continue
        try:
            cls = system.registry("dataset" if table == "data" else table).get(values["name"])
        except GendiffError:
            continue
        context = backbone_context(cls) if table == "backbone" else ()
        extra = DATA_OPTIONS if table == "data" else {}
        out[table] = {**constructor_defaults(cls, context), **extra, **values}
    for table, cls in CONFIGS.items():
        out[table] = {**to_table(cls()), **(out.get(table) if isinstance(out.get(table), dict) else {})}
    return out


class RunFolder:
    """One run's folder, written by rank 0 of ``dist``. While a process trains into it, the
    folder holds ``.lock`` (the owner's PID and host): a second process is refused, and the lock of
    a process that died on this machine is taken over."""

    def __init__(self, path: Path, dist: Dist, recipe_text: str):
        self.path, self.dist, self.recipe_text = Path(path), dist, recipe_text
        self._metrics = None
        self._locked = False

    # -- starting --------------------------------------------------------------------------------
    def prepare(self, resume: bool) -> bool:
        """Check, lock and prepare the folder (rank 0; every rank raises the same error). Returns
        whether there is a checkpoint to resume from: ``resume`` on a folder without one (missing,
        or killed before its first checkpoint) starts from step 0, as a re-submitted job expects."""
        return bool(self.dist.share(self.dist.on_main(lambda: self._prepare_here(resume), TrainingError)))

    def _prepare_here(self, resume: bool) -> bool:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise TrainingError(f"cannot write to the run folder {self.path}: {exc.strerror or exc}.") from None
        self._lock()  # first: a second writer is refused before it looks at anything
        try:
            for name in ("metrics.jsonl", "recipe.toml"):
                if (self.path / name).exists() and not (self.path / name).is_file():
                    raise TrainingError(f"{self.path / name} is not a file (a folder?): gendiff keeps the run's "
                                        f"{name} there. Move it away and run again; nothing was changed.")
            existing = list_checkpoints(self.path)
            if existing and not resume:
                raise TrainingError(
                    f"{self.path} already holds a run (checkpoints up to step {existing[-1][0]}). Continue it with "
                    f"--resume, or choose another folder with --out; nothing was changed."
                )
            if resume:
                self._check_recipe()
            remove_debris(self.path)  # what a killed process left half-written
            resumable = bool(resume and load_latest(self.path, warn=False) is not None)
            if not resumable:  # a folder without checkpoints: whatever an aborted start left is replaced
                (self.path / "metrics.jsonl").unlink(missing_ok=True)
                (self.path / "recipe.toml").write_text(self.recipe_text)
        except BaseException:
            self.release()
            raise
        return resumable

    def _check_recipe(self) -> None:
        """A resumed run must mean what the run meant: its recipe.toml is the reference."""
        from ..recipe import tomllib

        path = self.path / "recipe.toml"
        if not path.is_file():
            return
        try:
            old = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
            return  # a damaged copy: the checkpoint's own recipe is checked when its weights load
        diff = recipe_differences(with_defaults(old), with_defaults(tomllib.loads(self.recipe_text)))
        if diff:
            raise TrainingError(
                f"the recipe differs from the one {self.path} was trained with ({path}) in {len(diff)} key(s) that "
                f"give the weights their meaning: {'; '.join(diff)}. Resuming would train the old weights under a "
                f"new meaning. Resume with the run's own recipe (gendiff run {self.path} --resume, --set only for "
                f"train.steps, lr, device and the like), or start a new run in another --out; nothing was changed.")

    def _lock(self) -> None:
        import socket
        import time

        lock = self.path / ".lock"
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(lock.read_text())
                except (OSError, ValueError):
                    owner = {}
                if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    self._locked = True
                    return
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    lock.unlink(missing_ok=True)  # its owner died on this machine: take it over
                    continue
                raise TrainingError(
                    f"{self.path} is being written by another gendiff process (PID {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, since {owner.get('started', '?')}); two runs in one folder would "
                    f"mix their checkpoints. Wait for it, or use another --out. If that process is gone (it ran "
                    f"on another machine), delete {lock}. Nothing was changed.") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._locked = True
            return
        raise TrainingError(f"could not take the lock {lock}; nothing was changed.")

    def release(self) -> None:
        """Give the folder back (rank 0; a no-op when this process holds no lock)."""
        if self._locked:
            (self.path / ".lock").unlink(missing_ok=True)
            self._locked = False

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
        rows, damaged = json_lines(path)
        if damaged:
            warnings.warn(f"{path}: {damaged} damaged line(s) (not UTF-8 JSON objects) dropped", stacklevel=2)
        keep = [json.dumps(row) for row in rows if isinstance(row.get("step"), int) and row["step"] <= step]
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

    def non_finite(self, what: str, value, step: int, before_update: bool = True) -> TrainingError:
        """The error for a non-finite loss or gradient at ``step`` (1-based), or for weights found
        non-finite when checkpoint ``step`` was due (``before_update = False``), saying what was kept."""
        good = list_checkpoints(self.path)
        kept = f"the last good checkpoint, step {good[-1][0]}, is untouched" if good else "no checkpoint was written"
        stopped = ("training stopped before updating the weights" if before_update else
                   "that checkpoint was not written (a checkpoint never holds NaN or inf)")
        return TrainingError(
            f"the {what} became {value} at step {step}; {stopped} "
            f"and {kept}. Lower train.lr, enable train.grad_clip, or check the data."
        )


    def invalid_parameters(self, problems: list[str], step: int) -> TrainingError:
        """The error for components whose parameters their own check refuses after the optimizer
        step of ``step`` (1-based), e.g. a learned schedule that is no longer monotone."""
        good = list_checkpoints(self.path)
        kept = f"the last good checkpoint, step {good[-1][0]}, is untouched" if good else "no checkpoint was written"
        return TrainingError(
            f"after the update of step {step}: {'; '.join(problems)}. Training stopped; these parameters were not "
            f"checkpointed and {kept}. Lower the component's learning rate ([FAMILY] lr) or train.lr, or enable "
            f"train.grad_clip, then resume."
        )


def _alive(pid) -> bool:
    """Is process ``pid`` running on this machine?"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
