"""Terminal output for the CLI: server text made harmless, and one progress line kept up to date."""

from __future__ import annotations

from typing import TextIO

__all__ = ["ProgressLine", "printable"]


def printable(text: str) -> str:
    """``text`` with control characters escaped, so server-provided text cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ProgressLine:
    """One status line: rewritten in place on a terminal, a new line per change otherwise (logs, CI).

    Parameters
    ----------
    stream : text stream
        Where to write (the CLI uses stderr).
    ticking : bool
        The text ends in a clock (its last ``" · "`` part): off a terminal, a tick alone writes no line.
    """

    def __init__(self, stream: TextIO, *, ticking: bool = False) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._ticking = ticking
        self._last = ""

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tty and self._last:
            self._stream.write("\n")  # leave the last state visible, end the line
            self._stream.flush()

    def show(self, text: str) -> None:
        """Show ``text`` as the current state."""
        if text == self._last:
            return
        if self._tty:
            self._stream.write("\r" + text.ljust(len(self._last)))
        elif self._key(text) != self._key(self._last):
            self._stream.write(text + "\n")
        self._stream.flush()
        self._last = text

    def _key(self, text: str) -> str:
        return text.rsplit(" · ", 1)[0] if self._ticking else text
