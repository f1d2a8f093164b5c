"""`_text`: what server text looks like once it is shown."""

from __future__ import annotations

import pytest

from kling_widgets._text import MAX_SHOWN_CHARS, clean_text, strip_credentials


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain reason", "plain reason"),
        ("safe\u202eevil", "safeevil"),  # right-to-left override
        ("a\u200bb\u200dc\ufeff", "abc"),  # zero-width space and joiner, BOM
        ("bell\x07 and nul\x00", "bell and nul"),
        ("two\nlines\tand tab", "two lines and tab"),
        ("内容审核失败", "内容审核失败"),
    ],
)
def test_clean_text_removes_invisible_characters(raw: str, shown: str) -> None:
    assert clean_text(raw) == shown


def test_clean_text_caps_long_text_with_an_ellipsis() -> None:
    shown = clean_text("x" * 10_000_000)
    assert len(shown) == MAX_SHOWN_CHARS
    assert shown.endswith("…")
    assert clean_text("y" * 20, limit=10) == "y" * 9 + "…"
    assert clean_text("z" * 10, limit=10) == "z" * 10


def test_clean_text_caps_after_removing_invisible_characters() -> None:
    # Mostly invisible characters are not a way past the cap, nor do they make short text look long.
    assert clean_text("\u200b" * 5000 + "ok", limit=10) == "…"
    assert clean_text("ok" + "\u200b" * 5, limit=10) == "ok"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pass@cdn.example/v.mp4?Expires=1", "https://cdn.example/v.mp4?Expires=1"),
        ("https://user@cdn.example:8443/v.mp4", "https://cdn.example:8443/v.mp4"),
        ("http://u:p@[::1]:9/x", "http://[::1]:9/x"),
        ("https://cdn.example/v.mp4", "https://cdn.example/v.mp4"),
        ("http://[broken/x", "http://[broken/x"),
    ],
)
def test_strip_credentials(url: str, shown: str) -> None:
    assert strip_credentials(url) == shown
