"""Writing outputs so that a failure (a full disk, a read-only folder) is one clear message and
never a half-written file where a good one was: each file is written beside its target and
renamed into place (atomic on POSIX), and a folder is checked before work that would fill it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

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


@contextmanager
def output_folders(*folders: tuple[str | os.PathLike, str]) -> Iterator[None]:
    """Check (and create) each ``(path, option)`` output folder with :func:`writable_folder`
    before the work inside the block; when the work fails, the folders created here are removed
    again if they are still empty (a failed command leaves no empty folder behind)."""
    created = []
    try:
        for path, option in folders:
            if not Path(path).exists():
                created.append(Path(path))
            writable_folder(path, option)
        yield
    except BaseException:
        for path in reversed(created):
            try:
                path.rmdir()  # only an empty folder goes
            except OSError:
                pass
        raise


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


def write_with(path: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """Any file (a picture, a figure, weights) written atomically by ``save(tmp_path)``."""
    return _atomic(Path(path), save)


def json_lines(path: str | os.PathLike) -> tuple[list[dict], int]:
    """The JSON objects of a JSON-lines file (e.g. ``metrics.jsonl``) and the number of damaged
    lines skipped (invalid UTF-8 or JSON, not an object). A last line without its newline (a write
    cut short by a crash) is skipped without being counted as damage."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    cut_short = lines.pop()  # b"" when the file ends with a newline
    rows, damaged = [], 0
    for line in lines + [cut_short]:
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line is not cut_short:
            damaged += 1
    return rows, damaged


def replace_files(folder: str | os.PathLike, write: Callable[[Path], None], owned: Callable[[str], bool]) -> Path:
    """Replace a set of files in ``folder`` as a whole: ``write(tmp)`` writes the new set into a
    hidden temporary folder inside ``folder``; only when all of it is written are the old files
    whose names ``owned`` accepts removed and the new ones renamed into place (renames need no
    space). A failure while writing (a full disk) is one clear error and leaves the old set as it
    was, with no temporary folder and no mix of old and new files."""
    import shutil

    folder = Path(folder)
    tmp = folder / f".writing-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"could not write the files of {folder}: {exc.strerror or exc}. What was there before is "
                          f"intact; free space or fix permissions and run the command again.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    new = sorted(tmp.iterdir(), key=lambda p: (p.suffix == ".npz", p.name))  # the .npz record last
    for old in folder.iterdir():
        if old.is_file() and owned(old.name):
            old.unlink()
    for path in new:
        os.replace(path, folder / path.name)
    tmp.rmdir()
    return folder
