"""Progress of long work on stderr: a live bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns; written to a file, a pipe or a CI log that becomes one line of
thousands of characters. So :class:`Progress` draws the bar only when its stream is a terminal, and otherwise
prints one ordinary line each time the work passes a quarter (25%, 50%, 75%, 100%).
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress"]

_QUARTERS = 4  # lines printed over the whole work when the stream is not a terminal


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class Progress:
    """Progress over ``total`` units of work (steps, iterations or seconds), shown on ``stream`` (stderr).

    ``description`` names the current work ("ort batch 8 warm-up") and ``status`` adds a trailing note ("loss
    0.13"); both may change as the work goes. ``decimals``: how counts are printed (0 for steps, 1 for seconds).
    ``live``: force the terminal bar (True) or the plain lines (False); by default the stream decides.
    ``enabled=False`` shows nothing (the counts are still kept), so callers need no second code path. ``prefix``
    goes before every description (``"[demo] "``: whose work this is, when a caller runs another's).
    """

    def __init__(self, total: float, *, description: str = "", unit: str = "it", decimals: int = 0,
                 stream: Optional[TextIO] = None, live: Optional[bool] = None, leave: bool = True,
                 enabled: bool = True, prefix: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = float(total)
        self.unit = unit
        self.decimals = decimals
        self.prefix = prefix
        self.description = prefix + description
        self.status = ""
        self.done = 0.0
        self._started = time.perf_counter()
        self._quarters_shown = 0
        self._closed = not enabled  # a disabled display prints nothing, ever
        self._bar = None
        if enabled and _is_terminal(self.stream) if live is None else live:
            from tqdm import tqdm

            counts = f"{{n:.{decimals}f}}/{{total:.{decimals}f}} {{unit}}"
            self._bar = tqdm(total=total, unit=unit, file=self.stream, leave=leave, dynamic_ncols=True,
                             desc=self.description,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| " + counts
                                        + " [{elapsed}<{remaining}]{postfix}")

    def set_description(self, text: str) -> None:
        self.description = self.prefix + text
        if self._bar is not None:
            self._bar.set_description_str(self.description)

    def set_status(self, text: str) -> None:
        self.status = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update(self, amount: float = 1.0) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
            return
        if self._closed:
            return
        reached = _QUARTERS if self.total <= 0 else min(_QUARTERS, int(_QUARTERS * self.done / self.total + 1e-9))
        if reached > self._quarters_shown:
            self._quarters_shown = reached
            self._print_line()

    def close(self) -> None:
        """Ends the display; in line mode, prints the last state unless a line already showed it."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.done > 0 and self._quarters_shown < _QUARTERS:
            self._print_line()

    def _print_line(self) -> None:
        share = 100.0 if self.total <= 0 else 100.0 * min(self.done, self.total) / self.total
        counts = f"{self.done:.{self.decimals}f}/{self.total:.{self.decimals}f} {self.unit}"
        elapsed = time.perf_counter() - self._started
        line = f"{self.description}: {share:3.0f}% ({counts}, {elapsed:.1f} s)"
        print(line + (f" {self.status}" if self.status else ""), file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
