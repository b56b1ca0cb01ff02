"""``wsi_streamer.progress``: the one progress helper of long commands (issue 23). Off a
terminal it prints a plain line per interval and one at the end (never ``\\r`` redraws), on a
terminal a tqdm bar. ``patches preview`` and ``patches bench`` report through it
(tests/unit/patches/test_preview_cli.py)."""

from __future__ import annotations

import io

import pytest

from wsi_streamer.progress import PROGRESS_ENV, Progress, every_s_from


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_one_line_per_interval_and_one_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("bench", total=30, unit="patch", stream=out, every_s=10, clock=clock) as p:
        for _ in range(30):
            clock.now += 1  # one patch a second: a line at 10, 20 and 30 s, then the last
            p.update()
    lines = out.getvalue().splitlines()
    assert lines == ["bench: 10/30 patches, 1.0/s", "bench: 20/30 patches, 1.0/s",
                     "bench: 30/30 patches, 1.0/s", "bench: 30/30 patches, 1.0/s in 30.0 s"]
    assert "\r" not in out.getvalue()


def test_unknown_total_and_a_failure_print_no_closing_line() -> None:
    out, clock = io.StringIO(), Clock()
    with pytest.raises(RuntimeError), Progress("warm", unit="tile", stream=out, every_s=0,
                                               clock=clock) as p:
        clock.now += 2
        p.update(4)
        raise RuntimeError("storage went away")
    assert out.getvalue() == "warm: 4 tiles, 2.0/s\n"  # the error line says the rest


def test_a_terminal_gets_a_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    with Progress("bench", total=5, unit="patch", stream=out, every_s=0) as p:
        p.update(5)
    assert "\r" in out.getvalue() and "5/5" in out.getvalue()  # tqdm's redraws


def test_the_interval_variable() -> None:
    assert every_s_from({}) == 10.0
    assert every_s_from({PROGRESS_ENV: "0.5"}) == 0.5
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ValueError, match=PROGRESS_ENV):
            every_s_from({PROGRESS_ENV: bad})
