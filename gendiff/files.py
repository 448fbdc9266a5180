"""Writing outputs so that a failure (a full disk, a read-only folder) is one clear message and
never a half-written file where a good one was: each file is written beside its target and
renamed into place (atomic on POSIX), and a folder is checked before work that would fill it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import GendiffError


class OutputError(GendiffError):
    """An output could not be written; what was there before is intact."""


def writable_folder(path: str | os.PathLike, option: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it, before any work
    that would fill it (``option`` names where the path came from, e.g. ``--out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder; nothing was written.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {option} {path}: {exc.strerror or exc}; nothing was written.") from None
    return path


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"could not write {path}: {exc.strerror or exc}. What was there before is intact; free "
                          f"space or fix permissions and run the command again.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``path`` holds ``text`` afterwards, or what it held before (see the module docstring)."""
    return _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """A compressed ``.npz`` written atomically (``np.savez_compressed``)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return _atomic(Path(path), save)


def write_png(path: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """A picture written atomically by ``save(tmp_path)``."""
    return _atomic(Path(path), save)
