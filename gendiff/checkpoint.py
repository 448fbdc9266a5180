"""Checkpoints: one folder per step, written atomically, verified when read.

Layout of ``RUN/checkpoints/step-N/``:

- ``model.safetensors``, ``ema.safetensors``: the weights of every trainable component and their
  EMA (:func:`component_state`): the backbone's under their own names, any other family's
  parameters and buffers under ``FAMILY/NAME`` (e.g. ``schedule/l2_w`` of a learned schedule);
- ``state.pt``: optimizer state, step, RNG states and data position, loadable with
  ``torch.load(weights_only=True)`` (no pickled code);
- ``recipe.toml``: the resolved recipe, so a checkpoint alone can sample or resume;
- ``manifest.json``: the SHA-256 of every file above, written last.

A checkpoint is written into a hidden temporary folder, every file and the folder are fsynced,
and only then is it renamed to ``step-N`` (an atomic rename); a crash leaves either the complete
checkpoint or none. Reading checks every file against the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import GendiffError

FILES = ("model.safetensors", "ema.safetensors", "state.pt", "recipe.toml")
STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(GendiffError):
    """A checkpoint is missing, incomplete, corrupt or cannot be written."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    state: dict[str, Any]
    recipe_text: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
    state: dict[str, Any], recipe_text: str,
) -> Path:
    """Write ``RUN/checkpoints/step-{step}`` atomically; return its path."""
    from safetensors.torch import save

    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        # serialised in memory, written by Python: a full disk is the operating system's own words
        # ("No space left on device"), not a serialiser's internal message
        (tmp / "model.safetensors").write_bytes(save({k: v.detach().cpu().contiguous() for k, v in model.items()}))
        (tmp / "ema.safetensors").write_bytes(save({k: v.detach().cpu().contiguous() for k, v in ema.items()}))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        (tmp / "state.pt").write_bytes(buffer.getbuffer())
        (tmp / "recipe.toml").write_text(recipe_text)
        manifest = {name: _sha256(tmp / name) for name in FILES}
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "sha256": manifest}, indent=1))
        for name in FILES + ("manifest.json",):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        if final.exists():  # the same step written again (e.g. after a resume): swap atomically
            old = root / f".step-{step}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM during the write: no half-written folder left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, or a writer's own error type (safetensors)
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CheckpointError(
            f"could not write the checkpoint for step {step} under {root}: {reason}. "
            f"Earlier checkpoints are untouched; free space or fix permissions and resume with --resume."
        ) from None
    return final


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoint folders (those with a manifest), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = STEP_DIR.match(child.name)
        if m and (child / "manifest.json").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def verify(path: Path) -> int:
    """Check a checkpoint folder against its manifest; return its step or raise CheckpointError."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise CheckpointError(f"{path} is not a finished checkpoint (no manifest.json)")
    try:
        manifest = json.loads(manifest_file.read_text())
        sums, step = manifest["sha256"], int(manifest["step"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{manifest_file} is damaged") from None
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if _sha256(file) != sums.get(name):
            raise CheckpointError(f"checkpoint {path}: {name} does not match its recorded checksum (corrupt)")
    m = STEP_DIR.match(path.name)
    if m and int(m.group(1)) != step:
        raise CheckpointError(f"checkpoint {path} holds step {step}, not the step its name says ({m.group(1)}): it "
                              f"was copied or renamed from elsewhere")
    return step


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify one checkpoint folder."""
    from safetensors.torch import load_file

    path = Path(path)
    step = verify(path)
    try:
        model = load_file(str(path / "model.safetensors"), device=str(map_location))
        ema = load_file(str(path / "ema.safetensors"), device=str(map_location))
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise CheckpointError(
            f"checkpoint {path} cannot be read: its state.pt holds objects other than tensors, numbers and "
            f"strings, which the safe loader refuses ({refused[0] if refused else 'not a plain state'}); it was "
            f"not written by gendiff or was altered, and nothing in it was run"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first}") from None
    return Checkpoint(path, step, model, ema, state, (path / "recipe.toml").read_text())


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str, what: str = "weights") -> None:
    """Load ``state`` into ``module``, or raise :class:`CheckpointError` naming every tensor that
    does not fit: shapes that differ (checkpoint vs model), tensors the checkpoint lacks and
    tensors the model does not have (at most five of each, then a count)."""
    own = module.state_dict()
    shapes = [f"{k} (checkpoint {_shape(state[k])}, model {_shape(own[k])})"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = [f"{len(items)} {label}: {_first(items)}" for items, label in (
        (shapes, "tensor(s) of another shape"), (missing, "tensor(s) missing from the checkpoint"),
        (unexpected, "tensor(s) the model does not have")) if items]
    if problems:
        raise CheckpointError(
            f"the {what} in {source} do not fit this recipe's model: " + "; ".join(problems)
            + ". The recipe's network differs from the one that wrote the checkpoint (a changed backbone, "
            "parameterization, variance or conditioning, or a learned component such as a schedule added, removed "
            "or changed); use the recipe stored with the checkpoint, or start a new run."
        )
    module.load_state_dict(state)


#: how the tensors of a non-backbone component are named in a weights file: FAMILY/NAME
FAMILY_SEPARATOR = "/"


def component_state(modules) -> dict[str, torch.Tensor]:
    """One flat state of several components (``{family: nn.Module}``): the backbone's tensors
    under their own names (as before trainable components existed, and as interop maps them),
    every other family's under ``FAMILY/NAME``."""
    out = {}
    for family, module in modules.items():
        for key, value in module.state_dict().items():
            out[key if family == "backbone" else f"{family}{FAMILY_SEPARATOR}{key}"] = value
    return out


def load_components(modules, state: dict[str, torch.Tensor], source: Path | str, what: str = "weights") -> None:
    """Load a :func:`component_state` into the components ``{family: nn.Module}``, or raise
    :class:`CheckpointError` naming every tensor that does not fit (as :func:`load_weights`; a
    learned schedule's tensors missing from a checkpoint are named like any other)."""

    class _Together(torch.nn.Module):  # the components as one module whose state has the file's names
        def state_dict(self, *args, **kwargs):
            return component_state(modules)

        def load_state_dict(self, flat, strict=True):
            for family, module in modules.items():
                if family == "backbone":
                    part = {k: v for k, v in flat.items() if FAMILY_SEPARATOR not in k or k in module.state_dict()}
                else:
                    prefix = family + FAMILY_SEPARATOR
                    part = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
                module.load_state_dict(part)

    load_weights(_Together(), state, source, what)


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, tensor.shape)) + ")"


def _first(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported and skipped."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            verify(path)
            return path
        except CheckpointError as exc:
            warnings.warn(f"skipping a damaged checkpoint: {exc}", stacklevel=2)
    return None


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu", warn: bool = True) -> Checkpoint | None:
    """Load the newest checkpoint that verifies and reads; every damaged newer one (altered,
    truncated, unreadable, or refused by the safe loaders) is reported and skipped."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as exc:
            if warn:
                warnings.warn(f"skipping a damaged checkpoint: {exc}", stacklevel=2)
    return None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (0 keeps all). Each is first renamed to a
    hidden name (atomic), so an interruption never leaves a half-deleted ``step-N``."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        doomed = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_debris(run_dir: Path) -> list[str]:
    """Remove what interrupted writes and deletions left behind (hidden ``.step-*`` folders
    of a process that no longer writes here); return their names. Call before resuming."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    removed = []
    for child in root.iterdir():
        if child.name.startswith(".step-") and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return sorted(removed)
