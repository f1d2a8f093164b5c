"""Saving a downloaded video: a safe file name, a check of its first bytes, an exclusive final rename.

Pure functions and plain file operations, no HTTP: `KlingClient.download` streams the body and calls these
(docs/gateway.md, "Downloading videos").
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re

from ._text import clean_text

__all__ = ["MAX_NAME_CHARS", "SNIFF_BYTES", "file_name", "not_a_video", "publish", "video_kind"]

#: The longest file name derived from the server: with the ``.<name>.<token>.part`` sibling written first,
#: it stays under the 255-byte limit of common file systems (names are ASCII here).
MAX_NAME_CHARS = 200
#: Enough of a body to tell a video from anything else.
SNIFF_BYTES = 8

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSION = ".mp4"
_DIGEST_CHARS = 16


def file_name(stem: str) -> str:
    """A harmless, bounded file name for ``stem`` (a task id or a URL's last segment), ending in .mp4.

    Server text becomes one path component of safe ASCII characters; a name too long for the file system
    keeps a prefix plus a hash of the whole stem, so the same stem always gives the same name.
    """
    name = _UNSAFE.sub("_", stem).lstrip(".") or "video"
    if not name.lower().endswith(_EXTENSION):
        name += _EXTENSION
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    prefix = name[: MAX_NAME_CHARS - _DIGEST_CHARS - len(_EXTENSION) - 1]
    return f"{prefix}-{digest}{_EXTENSION}"


def video_kind(head: bytes) -> str | None:
    """What ``head`` starts like: "MP4/MOV" (ISO BMFF, ``ftyp`` at offset 4), "WebM/Matroska", or None."""
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/Matroska"
    return None


def not_a_video(head: bytes, content_type: str) -> str:
    """What a body starting with ``head`` is instead of a video, for an error message."""
    text = head.lstrip()
    kind = f" (Content-Type {clean_text(content_type, 80)})" if content_type else ""
    if not text:
        return f"an empty body{kind}"
    excerpt = f": {clean_text(text[:300].decode('utf-8', 'replace'), 120)}"
    if text.startswith(b"<") or "html" in content_type.lower():
        return f"an HTML page{kind}{excerpt}"
    if text.startswith((b"{", b"[")) or "json" in content_type.lower():
        return f"a JSON answer{kind}{excerpt}"
    return f"data that does not start like an MP4/MOV or WebM video{kind}"


def publish(partial: pathlib.Path, target: pathlib.Path, *, overwrite: bool) -> None:
    """Give the finished ``partial`` file the name ``target``.

    Without ``overwrite`` the name is taken exclusively, at this very moment: a file that appeared there
    while the video downloaded is left alone and `FileExistsError` is raised.
    """
    if overwrite:
        os.replace(partial, target)
        return
    try:
        _link(partial, target)
    except FileExistsError:
        raise FileExistsError(
            f"{target} appeared while the video was downloading and was left alone; "
            "pass overwrite=True to replace it"
        ) from None


def _link(partial: pathlib.Path, target: pathlib.Path) -> None:
    try:
        os.link(partial, target)  # fails if the target exists: creation and content in one atomic step
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network shares): claim the name exclusively, then fill it.
        with open(target, "xb"):
            pass
        os.replace(partial, target)
    else:
        partial.unlink()
