"""Make server text safe to show: capped in length, free of invisible characters, URLs without credentials.

Pure functions, importing nothing of ours, so the error tree, the models and the views can all use them.
The full text always stays on `Task.raw`; only what is shown (screen, traits, exception messages, saved
notebooks) goes through here.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MAX_SHOWN_CHARS", "clean_text", "strip_credentials"]

#: The most characters of one server string shown anywhere (a real failure reason is a sentence or two).
MAX_SHOWN_CHARS = 2000

_ELLIPSIS = "…"
# Format characters (Cf: bidi overrides and isolates, zero-width joiners and spaces, BOM) and controls
# (Cc) hide or reorder text; line breaks and tabs are kept as a plain space.
_SPACES = {"\n": " ", "\r": " ", "\t": " "}


def clean_text(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` without control or invisible format characters, cut to ``limit`` characters with "…".

    Parameters
    ----------
    text : str
        Any string from the server.
    limit : int
        The most characters returned, the ellipsis included.

    Returns
    -------
    str
        The cleaned text; it is not HTML-escaped (escape it where it becomes HTML).
    """
    # Only look at a bounded prefix: a 10 MB reason must not cost 10 MB of work per display.
    head = text[: limit * 2 + 64]
    kept = "".join(
        _SPACES.get(ch, ch) for ch in head if ch in _SPACES or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    if len(kept) <= limit and len(head) == len(text):
        return kept
    return kept[: max(limit - 1, 0)] + _ELLIPSIS


def strip_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part; anything unparsable comes back unchanged."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal keeps its brackets
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
