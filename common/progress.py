"""Progress for long work: a live line with a bar on a terminal (rich), plain lines otherwise.

Used by the server's round loop, the collective training and every study, through one
calling convention: ``progress(label, done, total)`` for counted work and
``progress.update(text, final=False)`` for free text. ``final=True`` leaves the line on
screen (on a terminal) or always prints it (otherwise). Nothing here imports Flower.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ConsoleProgress", "ProgressFn"]

#: the callback studies and trainers take: ``progress(label, done, total)``
ProgressFn = Callable[[str, int, int], None]

_PLAIN_EVERY_S = 5.0  # a non-terminal gets a line at most this often (plus every final one)
_LIVE_EVERY_S = 0.1  # a terminal is redrawn at most this often


class ConsoleProgress:
    """Live progress on stdout.

    Parameters
    ----------
    quiet : bool, default False
        Print nothing.
    console : rich.console.Console or None, default None
        Where to draw (a new stdout console when None).
    """

    def __init__(self, quiet: bool = False, console: Any = None) -> None:
        self.quiet = quiet
        self._console = console
        self._live: Any = None
        self._last = -_PLAIN_EVERY_S  # the first line is shown at once

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=sys.stdout, highlight=False)
        return self._console

    @property
    def tty(self) -> bool:
        return bool(self.console.is_terminal)

    def update(self, text: str, final: bool = False, renderable: Any = None) -> None:
        """Show ``text`` (or a rich ``renderable`` on a terminal); ``final`` keeps it."""
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty:
            if final or now - self._last > _PLAIN_EVERY_S:
                self.console.file.write(text + "\n")
                self.console.file.flush()
                self._last = now
            return
        if final:
            self._stop_live()
            self.console.print(text, markup=False, highlight=False)
            return
        if now - self._last < _LIVE_EVERY_S:
            return
        self._last = now
        from rich.text import Text

        body = renderable if renderable is not None else Text(text)
        if self._live is None:
            from rich.live import Live

            self._live = Live(body, console=self.console, transient=True, auto_refresh=False)
            self._live.start()
        self._live.update(body, refresh=True)

    def __call__(self, label: str, done: int, total: int) -> None:
        text = f"{label}: {done}/{total}"
        renderable = None
        if not self.quiet and self.tty:
            from rich.progress_bar import ProgressBar
            from rich.table import Table

            renderable = Table.grid(padding=(0, 1))
            renderable.add_row(label, ProgressBar(total=max(total, 1), completed=done, width=30), f"{done}/{total}")
        self.update(text, final=done >= total, renderable=renderable)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def close(self) -> None:
        """Remove a live line still on screen."""
        self._stop_live()
