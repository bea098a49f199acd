"""Progress output: plain lines off a terminal, a live rich line with a bar on one."""

from __future__ import annotations

import io

from rich.console import Console

from common.progress import ConsoleProgress


def test_plain_lines_when_not_a_terminal() -> None:
    buf = io.StringIO()
    p = ConsoleProgress(console=Console(file=buf, force_terminal=False))
    p("collective", 1, 3)  # first line is printed (nothing printed for 5 s before)
    p("collective", 2, 3)  # throttled
    p("collective", 3, 3)  # final: always printed
    assert buf.getvalue().splitlines() == ["collective: 1/3", "collective: 3/3"]


def test_live_bar_on_a_terminal_and_final_line_kept() -> None:
    buf = io.StringIO()
    p = ConsoleProgress(console=Console(file=buf, force_terminal=True, width=80))
    p("round 1/2", 1, 4)
    p.update("round 1/2: 4 ok", final=True)
    out = buf.getvalue()
    assert "\x1b[" in out and "━" in out  # a redrawn rich bar
    assert out.rstrip().endswith("round 1/2: 4 ok")  # kept as plain text, no highlighting


def test_quiet_prints_nothing() -> None:
    buf = io.StringIO()
    p = ConsoleProgress(quiet=True, console=Console(file=buf, force_terminal=True))
    p("x", 1, 1)
    p.update("y", final=True)
    assert buf.getvalue() == ""
