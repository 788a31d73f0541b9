"""Progress reports that suit where stderr goes: a tqdm bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns, which a terminal turns into one moving line
but a log file (``derain run photos/ 2> log``, a batch job's output) keeps as one long line of
``\\r``-separated redraws. :func:`progress_bar` therefore gives a tqdm bar only when the stream
is a terminal; otherwise a :class:`LineProgress` that writes a whole line (no ``\\r``) at most
every ``every`` seconds and once at the end, e.g. ``eval: 40/100 img, 3.1 img/s``.

Every site that reports progress goes through this module (a low layer: the standard library
and tqdm only), so the choice is made in one place.

>>> import io
>>> log = io.StringIO()
>>> with progress_bar(total=3, desc="eval", unit="img", file=log) as bar:
...     bar.update(3)
>>> "\\r" in log.getvalue(), log.getvalue().startswith("eval: 3/3 img, ")
(False, True)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, Self, TextIO, TypeVar

__all__ = ["EVERY_S", "LineProgress", "NoProgress", "Progress", "TerminalProgress", "echo", "is_terminal", "progress_bar", "track"]

EVERY_S = 10.0
"""Default seconds between two plain progress lines (a log gains a few lines a minute, not hundreds)."""

T = TypeVar("T")


class Progress(Protocol):
    """What the sites use of a progress report, whichever kind :func:`progress_bar` returned."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...
    def write(self, line: str) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None: ...


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal (False for files, pipes, closed or odd streams)."""
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty):
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


class _Base:
    """Context-manager plumbing shared by the progress kinds: leaving the block closes the report."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class NoProgress(_Base):
    """No report at all (a site's ``disable``: e.g. a single image); messages are still written."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file

    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def set_postfix(self, **values: Any) -> None:
        """Nothing to show."""

    def write(self, line: str) -> None:
        """Write a message line to the stream (a disabled bar does not silence errors)."""
        stream = self._file if self._file is not None else sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        """Nothing to close."""


class TerminalProgress(_Base):
    """A tqdm bar on a terminal; :meth:`write` prints above the bar instead of through it."""

    def __init__(self, file: TextIO, **tqdm_args: Any) -> None:
        from tqdm import tqdm

        self._file = file
        self._tqdm = tqdm
        self.bar = tqdm(file=file, disable=False, dynamic_ncols=True, **tqdm_args)

    def update(self, n: int = 1) -> None:
        """Advance the bar by ``n``."""
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Show ``key=value`` after the bar."""
        self.bar.set_postfix(**values)

    def write(self, line: str) -> None:
        """Print a line on the bar's stream, the bar redrawn below it."""
        self._tqdm.write(line, file=self._file)

    def close(self) -> None:
        """End the bar (kept or cleared as ``leave`` says)."""
        self.bar.close()


class LineProgress(_Base):
    """Plain progress lines for a stream that is not a terminal: ``desc: n/total unit, rate unit/s``.

    A line is written on an update at least ``every`` seconds after the previous one (or the
    start), and once more on :meth:`close` (the final count and mean rate). Lines end with
    ``\\n`` only, so a log holds one readable line per report.
    """

    def __init__(self, file: TextIO, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 every: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._file = file
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self._initial = initial
        self.every = every
        self._clock = clock
        self._start = self._last = clock()
        self._postfix: dict[str, Any] = {}
        self._closed = False

    def line(self) -> str:
        """The current report: ``eval: 40/100 img, 3.1 img/s`` (the rate is the mean since the start)."""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        elapsed = self._clock() - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        text = f"{count} {self.unit}, {rate:.1f} {self.unit}/s"
        if self._postfix:
            text += ", " + ", ".join(f"{k}={v}" for k, v in self._postfix.items())
        return f"{self.desc}: {text}" if self.desc else text

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; write a line if ``every`` seconds have passed since the last one."""
        self.n += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self.write(self.line())

    def set_postfix(self, **values: Any) -> None:
        """Values appended to the next lines (``loss=0.0123``)."""
        self._postfix = dict(values)

    def write(self, line: str) -> None:
        """Write a message line to the stream."""
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Write the final line (once)."""
        if self._closed:
            return
        self._closed = True
        self.write(self.line())


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it", file: TextIO | None = None,
                 disable: bool = False, initial: int = 0, leave: bool = True, every: float = EVERY_S) -> Progress:
    """A progress report on ``file`` (default: stderr at call time) that suits the stream.

    ``disable`` gives no report (the site's choice, e.g. one image only). Otherwise a terminal
    gets a tqdm bar (``leave=False`` clears it at the end) and anything else gets plain lines at
    most every ``every`` seconds plus a final one (:class:`LineProgress`).
    """
    stream = file if file is not None else sys.stderr
    if disable:
        return NoProgress(stream)
    if is_terminal(stream):
        return TerminalProgress(stream, total=total, desc=desc or None, unit=unit, initial=initial, leave=leave)
    return LineProgress(stream, total=total, desc=desc, unit=unit, initial=initial, every=every)


def track(items: Iterable[T], total: int | None = None, **options: Any) -> Iterator[T]:
    """Yield ``items``, counting each on a :func:`progress_bar` (``options`` as there) closed at the end.

    ``total`` defaults to ``len(items)`` where the items have a length.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, **options) as bar:
        for item in items:
            yield item
            bar.update(1)


def echo(line: str, file: TextIO | None = None) -> None:
    """Print a line (default stdout) without breaking a tqdm bar shown on the terminal at the time."""
    from tqdm import tqdm

    tqdm.write(line, file=file)
