"""Progress bars that suit where stderr goes: every bar edgecompress draws is made by `bar()`.

On a terminal (or in a notebook) they are tqdm's own bars, redrawn in place. When stderr is a
file or a pipe (CI and build-system logs) a redrawn bar is a stream of carriage-return updates
(hundreds for digits-cnn, thousands for EfficientNet-size data) that ends in `\\r<spaces>\\r`, so
the next thing printed (the summary table) shares its line. There a bar is written as plain
lines instead: one when it finishes, and one at most every `HEARTBEAT_S` seconds while it runs,
so a long job still shows signs of life. Every line ends with a newline.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import std

# A CI log wants a sign of life, not a trace: one line a minute at most per running bar.
HEARTBEAT_S = 60.0


def bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """`tqdm(iterable, **kwargs)` on a terminal; on a file or pipe, a bar written as plain lines.

    kwargs are tqdm's (desc, unit, total, leave, disable, ...), with their meaning: `disable=True`
    (--no-progress) silences the bar either way."""
    stream = kwargs.get("file") or sys.stderr
    if _is_tty(stream) or _notebook():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LineBar(iterable, **kwargs)


def _is_tty(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _notebook() -> bool:
    """Jupyter's stderr is no TTY, but tqdm.auto draws a widget there, not carriage returns."""
    from tqdm import autonotebook

    return autonotebook.tqdm is not std.tqdm


class _Sink:
    """Where tqdm's own drawing goes in a LineBar: nowhere (its \\r redraws and the clearing)."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


class LineBar(std.tqdm):  # tqdm ships no annotations: mypy sees a subclass of Any
    """A tqdm whose counting, rate limiting and iteration are tqdm's, but whose output is plain
    lines on the real stream: `display` (called on tqdm's refresh) writes at most one line per
    HEARTBEAT_S, `close` writes the final one. tqdm's own output goes to a sink."""

    def __init__(self, iterable: Iterable[Any] | None = None, **kwargs: Any) -> None:
        self._stream = kwargs.get("file") or sys.stderr
        self._last_line: float | None = None  # (tqdm's first refresh is in its __init__)
        kwargs["file"] = _Sink()
        # tqdm refreshes (formats a bar for the sink) at most this often: no point doing it more
        kwargs.setdefault("mininterval", HEARTBEAT_S)
        super().__init__(iterable, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # nothing once closing (tqdm's close refreshes: a "so far" line followed "stopped after"),
        # nor for a bar at its total (its final line comes with close, a "so far" just before it)
        if getattr(self, "_closing", False) or (self.total is not None and self.n >= self.total):
            return True
        now = self._time()  # tqdm's clock, which its start_t and elapsed time are on
        # tqdm's first refresh comes before it sets start_t: nothing to say yet
        since = self._last_line if self._last_line is not None else getattr(self, "start_t", now)
        if now - since >= HEARTBEAT_S:
            self._last_line = now
            self._say(f"{self._count()}, {_duration(self._elapsed())} so far")
        return True

    def close(self) -> None:
        if getattr(self, "_closing", False):
            return
        self._closing = True
        if not getattr(self, "disable", True):  # tqdm's guard: once, and never for a disabled bar
            total = self.total
            done = total is None or self.n >= total
            # a bar left early (an error, a loop broken off) says so rather than look finished
            verb = "in" if done else "stopped after"
            self._say(f"{self._count()} {verb} {_duration(self._elapsed())}")
        super().close()

    def _count(self) -> str:
        n = _number(self.n)
        count = f"{n} {self.unit}" if self.total is None else f"{n}/{_number(self.total)} {self.unit}"
        postfix = f" ({self.postfix})" if self.postfix else ""  # e.g. distill's epoch and loss
        return f"{self.desc or 'progress'}: {count}{postfix}"

    def _elapsed(self) -> float:
        return self._time() - self.start_t if hasattr(self, "start_t") else 0.0

    def _say(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (ValueError, OSError):  # stderr closed (interpreter exit, a closed pipe): nothing to tell
            pass


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
