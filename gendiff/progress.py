"""Progress for every long command: rich's live bar on a terminal, plain lines elsewhere.

A cluster job's log is a file, where a live bar writes nothing until the end; there each
:class:`Progress` prints one plain, flushed line per interval instead:

- ``every=k``: a line whenever the count reaches a multiple of k (training: ``[train] log_every``);
- otherwise: a line at a tenth of the total at most every 5 seconds, and at least one a minute.

Lines read ``what 350/16000 (2%)  loss 0.0495  176.6 img/s  elapsed 4m13s  ETA 3h05m``; the last
count is always printed. ``enabled = False`` shows nothing (``--no-progress``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console

#: how a field is shown: name -> format of its value (the others: "name value")
FIELD_FORMATS = {"loss": "loss {:.4f}", "ips": "{:.1f} img/s"}
#: the longest silence of a plain display with no fixed interval, in seconds
PLAIN_SILENCE = 60.0
#: the shortest gap between its lines at tenths of the total, in seconds (a quick task says little)
PLAIN_GAP = 5.0


def duration(seconds: float) -> str:
    """``4m13s``, ``3h05m``, ``12s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """A counted task (``what``, ``total`` units) shown on ``console``; a context manager.

    ``fields`` (e.g. ``loss``, ``ips``) are shown beside the count; :meth:`update` changes them.
    """

    def __init__(self, what: str, total: float, console: Console | None = None, enabled: bool = True,
                 every: int | None = None, completed: float = 0, **fields: Any):
        self.what, self.total, self.every = what, total, every
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.completed, self.fields = completed, dict(fields)
        self.start = time.perf_counter()
        self.start_count = completed
        self._last_line_at, self._last_tenth = self.start, int(10 * completed / total) if total else 0
        self._bar = None
        self._last_count = None

    def __enter__(self) -> "Progress":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn(FIELD_FORMATS.get(name, name + " {}").replace("{", f"{{task.fields[{name}]", 1))
                        for name in self.fields]
            columns.append(TimeRemainingColumn())
            self._bar = Bar(*columns, console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, completed=self.completed, **self.fields)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def advance(self, amount: float = 1) -> None:
        self.update(self.completed + amount)

    def update(self, completed: float, **fields: Any) -> None:
        """Set the count (and any fields); a plain display prints a line when one is due."""
        self.completed = completed
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, **fields)
        elif self.enabled and self._due():
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()

    def _due(self) -> bool:
        now, done = time.perf_counter(), self.completed >= self.total
        if self.completed == self._last_count:  # said already
            return False
        if self.every:
            due = done or int(self.completed) % self.every == 0
        else:
            tenth = int(10 * self.completed / self.total) if self.total else 10
            quiet = now - self._last_line_at
            due = done or (tenth > self._last_tenth and quiet >= PLAIN_GAP) or quiet >= PLAIN_SILENCE
            if due:
                self._last_tenth = tenth
        if due:
            self._last_line_at, self._last_count = now, self.completed
        return due

    def line(self) -> str:
        """The plain line for the current count."""
        elapsed = time.perf_counter() - self.start
        count = f"{self.completed:,.0f}/{self.total:,.0f}"
        share = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.what} {count}{share}"]
        parts += [FIELD_FORMATS.get(name, name + " {}").format(value) for name, value in self.fields.items()]
        parts.append(f"elapsed {duration(elapsed)}")
        done_here = self.completed - self.start_count
        if self.completed < self.total and done_here > 0:
            parts.append(f"ETA {duration(elapsed / done_here * (self.total - self.completed))}")
        return "  ".join(parts)


def reverse_steps(progress: Progress | None) -> Callable[[int, int], None] | None:
    """A sampler's ``progress(step, total)`` callback that advances ``progress`` by one per reverse step."""
    if progress is None:
        return None
    return lambda step, total: progress.advance(1)
