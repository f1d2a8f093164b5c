"""What a task's card shows, as pure values and HTML: no widgets, no threads, no clock of its own.

`describe` turns one engine `Update` into a `View` (the status line, the bar, the playable videos, images
and sounds: see docs/architecture.md, "What a watch shows, state by state", and docs/routes.md, "Results
that are not videos"); the builders turn a `View` into the HTML of
the live card and the static ``text/html`` / ``text/plain`` fallback. Every server string is capped and
cleaned with `clean_text` and ``html.escape``d where it becomes HTML; every shown URL loses its
credentials (`strip_credentials`: browsers refuse such links for players anyway) and is embedded only
when it is http(s). The widgets (`_widget.py`, `_gallery.py`) only apply what these functions return.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

from ._errors import KlingError, RateLimitError, TaskTimeoutError, TransportError
from ._models import Audio, Image, Media, Task, TaskStatus, Video
from ._poller import Update, WatchState
from ._text import clean_text, strip_credentials

__all__ = [
    "MAX_PLAYERS",
    "View",
    "caption_html",
    "clock",
    "describe",
    "embeddable",
    "error_card_html",
    "estimate_progress",
    "initial_view",
    "kept_line",
    "label_text",
    "live_html",
    "results_html",
    "seconds_since",
    "static_html",
    "static_text",
    "waiting_card_html",
]

# The gateway's progress for Kling is fixed steps (0/10/20/30/100; docs/gateway.md, "Progress steps"): it
# shows 30 for the whole generation. While IN_PROGRESS the bar follows an elapsed-time curve instead, from
# 30 toward 95 with a 3-minute time constant (Kling takes about 1–5 minutes), so it moves, slows down, and
# never claims 100.
_ESTIMATE_FLOOR = 30
_ESTIMATE_CEILING = 95
_ESTIMATE_TIME_CONSTANT = 180.0
_TYPICAL_SECONDS = 180.0  # "about N min left" counts down toward this...
_LONG_SECONDS = 300.0  # ...and past this the line says "taking longer than usual"
# Clock readings from the gateway further away than this are treated as skew and ignored.
_PLAUSIBLE_SECONDS = 86_400.0
# The running clock moves in steps of this many seconds: polls come every 1–5 s at irregular gaps, so a
# per-second clock would only jump irregularly, and every changed character is a message to the browser.
_CLOCK_STEP = 5

#: Players shown for one task; further videos are counted ("and 996 more"), never rendered.
MAX_PLAYERS = 4
_VIDEO_WIDTH = "480"
_CAPTION_CHARS = 90
_TITLE_CHARS = 300
_KEPT_CHARS = 300  # a kept file's path, or why keeping failed
# Widget HTML inherits plain text colour in JupyterLab; colour the links like links (theme-aware).
_LINK_STYLE = "color:var(--jp-content-link-color,#1976d2)"
_BAR_COLOURS = {
    "info": "var(--jp-brand-color1,#2196f3)",
    "success": "var(--jp-success-color1,#4caf50)",
    "warning": "var(--jp-warn-color1,#ff9800)",
    "danger": "var(--jp-error-color1,#f44336)",
}
# What a result of each kind is called in the card, and the `Task` attribute that holds them all.
_ATTRIBUTES = {"video": "videos", "image": "images", "sound": "audios"}
_MediaT = TypeVar("_MediaT", bound=Media)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def estimate_progress(seconds_generating: float) -> int:
    """Estimate the bar value (30–95) for a task that has been generating for ``seconds_generating`` seconds.

    Monotonic non-decreasing in its argument and always below 100: only SUCCESS shows 100.
    """
    t = seconds_generating if seconds_generating > 0 else 0.0  # also maps NaN to 0
    share = 1.0 - math.exp(-t / _ESTIMATE_TIME_CONSTANT)
    return _ESTIMATE_FLOOR + int((_ESTIMATE_CEILING - _ESTIMATE_FLOOR) * share)


def clock(seconds: float, step: int = 1) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration in seconds, rounded down to ``step`` seconds."""
    whole = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(whole - whole % step, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def label_text(task_id: str) -> str:
    """``Kling · 8422…6785`` (plain text) for a long id, the cleaned id itself when it is short."""
    shown = clean_text(task_id, 64)
    return f"Kling · {shown if len(shown) <= 13 else f'{shown[:4]}…{shown[-4:]}'}"


def seconds_since(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from a gateway timestamp to ``now``; None when unknown or implausible (clock skew)."""
    if moment is None:
        return None
    seconds = (now - moment).total_seconds()
    return seconds if 0 <= seconds < _PLAUSIBLE_SECONDS else None


def _time_left(seconds_generating: float) -> str:
    """A rough, honest remaining-time phrase for the status line."""
    if seconds_generating >= _LONG_SECONDS:
        return "taking longer than usual"
    left = max(_TYPICAL_SECONDS - max(seconds_generating, 0.0), 60.0)
    return f"about {math.ceil(left / 60)} min left"


def embeddable(url: str) -> bool:
    """True for an absolute http(s) URL with no whitespace or control characters (browsers strip those)."""
    if not url or any(ch <= " " or ch == "\x7f" for ch in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _scheme(url: str) -> str:
    """What a refused link starts with, for the message (escaped later like every server string)."""
    head, colon, _ = url.partition(":")
    return f"{clean_text(head, 24)}:" if colon else "a link without a scheme"


def _sentence(text: str) -> str:
    """Lower-case a leading capital so a message reads on after "Stopped: " ("The API…" → "the API…")."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _message(error: KlingError | None) -> str:
    """An error's message as it may be shown: capped, without invisible characters."""
    return clean_text(str(error)) if error is not None else "polling stopped"


def _retry_line(error: KlingError | None, retry_in: float | None) -> str:
    """The status line while the poller backs off after a transient error."""
    status = error.status_code if error is not None else None
    if isinstance(error, RateLimitError):
        cause = "Gateway busy (429)"
    elif status is not None and status >= 500:
        cause = f"Gateway error ({status})"
    elif status is not None:  # an answer that was not the JSON it should be (empty, truncated)
        cause = "Unreadable answer from the gateway"
    elif isinstance(error, TransportError):
        cause = "Network trouble"
    else:
        cause = "Temporary trouble"
    seconds = round(retry_in) if retry_in is not None and math.isfinite(retry_in) else 0
    return f"{cause} — retrying in {seconds} s" if seconds >= 1 else f"{cause} — retrying…"


@dataclass(frozen=True)
class View:
    """Everything a card shows, as plain values: made by `describe`, drawn by the builders below.

    Attributes
    ----------
    line : str
        The status line, plain (cleaned) text; escaped where it becomes HTML.
    progress : int
        The bar, 0–100.
    bar_style : str
        ``"info"``, ``"success"``, ``"warning"`` or ``"danger"``.
    error : str
        Why watching ended without a video (cleaned), else "".
    videos, images, audios : tuple of Video, tuple of Image, tuple of Audio
        At most `MAX_PLAYERS` playable results in all, videos first: http(s) links, credentials removed.
    more : tuple of (str, int)
        How many playable results of each kind (``"video"``, ``"image"``, ``"sound"``) are beyond those.
    blocked : tuple of (str, str)
        The kind and the (cleaned) scheme of the links that were refused, each pair once, at most
        `MAX_PLAYERS` schemes of each kind.
    final : bool
        True once watching has ended.
    kept : str
        Where the videos were kept, or why they were not (plain text, cleaned); "" before that.
    """

    line: str
    progress: int = 0
    bar_style: str = "info"
    error: str = ""
    videos: tuple[Video, ...] = ()
    images: tuple[Image, ...] = ()
    audios: tuple[Audio, ...] = ()
    more: tuple[tuple[str, int], ...] = ()
    blocked: tuple[tuple[str, str], ...] = ()
    final: bool = False
    kept: str = ""


def initial_view(task: Task | None) -> View:
    """What shows before the first poll answers."""
    if task is not None and task.status.is_queued:
        return View(line=f"Queued · {clock(0)}", progress=min(task.progress, 99))
    return View(line="Checking the task…")


def _success(task: Task, took: float) -> View:
    """The final view of a task that succeeded: its playable results, capped in all, and the refused links."""
    blocked: dict[tuple[str, str], None] = {}
    videos = _playable(task.videos, "video", blocked)
    images = _playable(task.images, "image", blocked)
    audios = _playable_audios(task.audios, blocked)
    shown_videos = videos[:MAX_PLAYERS]
    shown_images = images[: MAX_PLAYERS - len(shown_videos)]
    shown_audios = audios[: MAX_PLAYERS - len(shown_videos) - len(shown_images)]
    counts = (
        ("video", len(task.videos), len(videos), len(shown_videos)),
        ("image", len(task.images), len(images), len(shown_images)),
        ("sound", len(task.audios), len(audios), len(shown_audios)),
    )
    line = f"Done in {clock(took)}"
    if not (task.videos or task.images or task.audios):
        line += f", but without {_expected_result(task.endpoint)} link"
    elif task.images or task.audios:  # "video" alone is what every card says; other results are named
        line += " · " + ", ".join(_count(noun, total) for noun, total, _, _ in counts if total)
    return View(
        line=line,
        progress=100,
        bar_style="success",
        videos=tuple(shown_videos),
        images=tuple(shown_images),
        audios=tuple(shown_audios),
        more=tuple((noun, playable - shown) for noun, _, playable, shown in counts if playable > shown),
        blocked=_first_schemes(blocked),
        final=True,
    )


def _playable(items: tuple[_MediaT, ...], noun: str, blocked: dict[tuple[str, str], None]) -> list[_MediaT]:
    """The items whose link may be embedded, credentials removed; the others' schemes go to ``blocked``."""
    playable = []
    for item in items:
        url = strip_credentials(item.url)
        if embeddable(url):
            playable.append(replace(item, url=url))
        else:
            blocked[(noun, _scheme(item.url))] = None
    return playable


def _first_schemes(blocked: dict[tuple[str, str], None]) -> tuple[tuple[str, str], ...]:
    """The refused (kind, scheme) pairs, at most `MAX_PLAYERS` schemes of each kind: a hostile list of
    links must not make the note long."""
    counted: dict[str, int] = {}
    kept = []
    for noun, scheme in blocked:
        counted[noun] = counted.get(noun, 0) + 1
        if counted[noun] <= MAX_PLAYERS:
            kept.append((noun, scheme))
    return tuple(kept)


def _playable_audios(audios: tuple[Audio, ...], blocked: dict[tuple[str, str], None]) -> list[Audio]:
    """`_playable` for sounds, whose WAV link is checked too (and dropped when it may not be embedded)."""
    playable = []
    for audio in _playable(audios, "sound", blocked):
        wav = strip_credentials(audio.wav_url) if audio.wav_url is not None else None
        if wav is not None and not embeddable(wav):
            blocked[("sound", _scheme(wav))] = None
            wav = None
        playable.append(replace(audio, wav_url=wav))
    return playable


def _expected_result(endpoint: str) -> str:
    """What a task of ``endpoint`` should have made, with its article: "a video", "an image", "a sound"."""
    if endpoint.startswith("images/"):
        return "an image"
    return "a sound" if endpoint.startswith("audio/") else "a video"


def _count(noun: str, count: int) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def describe(
    update: Update, task: Task | None, *, previous: View, generating_for: float, now: datetime
) -> View:
    """Turn one engine update into what the card should show.

    See docs/architecture.md, "What a watch shows, state by state".
    """
    state = update.state
    if state is WatchState.RETRYING:  # transient: the bar stays as it was
        return replace(previous, line=_retry_line(update.error, update.retry_in))
    if state is WatchState.ERROR:
        message = _message(update.error)
        line = f"Stopped: {_sentence(message)}"
        return replace(previous, line=line, bar_style="danger", error=message, final=True)
    if state is WatchState.TIMEOUT:
        limit = update.error.timeout if isinstance(update.error, TaskTimeoutError) else update.elapsed
        line = f"Gave up after {clock(limit)} — the task may still finish; watch it again with its id"
        message = _message(update.error) if update.error is not None else line
        return replace(previous, line=line, bar_style="warning", error=message, final=True)
    if state is WatchState.STOPPED:
        line = f"Stopped watching at {clock(update.elapsed)} — the task keeps running on the server"
        return replace(previous, line=line, bar_style="warning", error=line, final=True)
    if task is None:
        return previous
    age = max(update.elapsed, seconds_since(task.submit_time, now) or 0.0)
    if state is WatchState.SUCCESS:
        took = age
        if task.submit_time is not None and task.finish_time is not None:
            span = (task.finish_time - task.submit_time).total_seconds()
            took = span if 0 <= span < _PLAUSIBLE_SECONDS else age
        return _success(task, took)
    if state is WatchState.FAILURE:
        reason = clean_text(task.fail_reason) if task.fail_reason else "the gateway gave no reason"
        # The bar stays where the task got to: a full red bar would read as "finished".
        return View(
            line=f"Failed: {reason}", progress=previous.progress, bar_style="danger", error=reason, final=True
        )
    if task.status is TaskStatus.IN_PROGRESS:
        estimate = max(estimate_progress(generating_for), task.progress)
        line = f"Generating · {clock(age, _CLOCK_STEP)} elapsed · {_time_left(generating_for)} (estimate)"
    else:
        estimate = task.progress
        line = f"{'Queued' if task.status.is_queued else 'Waiting'} · {clock(age, _CLOCK_STEP)}"
    return View(line=line, progress=max(previous.progress, min(estimate, 99)))


# -- HTML and text builders ---------------------------------------------------------------------------


def _expiry(item: Media, now: datetime) -> str | None:
    """``link expires 29 Dec 2026`` from the signed URL's ``Expires`` parameter, if it has one."""
    expires = item.expires_at
    if expires is None:
        return None
    verb = "expired" if expires <= now else "expires"
    return f"link {verb} {expires.day} {_MONTHS[expires.month - 1]} {expires.year}"


def _links_html(item: Media, now: datetime, duration: float | None = None, wav_url: str | None = None) -> str:
    """``5.1 s · Open in new tab · Download · link expires 29 Dec 2026`` (and ``WAV`` for a sound that has
    one); the URLs must be embeddable."""
    href = html.escape(item.url, quote=True)
    parts = []
    if duration is not None and math.isfinite(duration):
        parts.append(f"{duration:g} s")
    # target=_blank on Download too: browsers ignore `download` for cross-origin links and would otherwise
    # navigate the notebook tab away. One styled span for both links: every byte here is saved per task.
    new_tab = 'target="_blank" rel="noreferrer"'  # noreferrer implies noopener (HTML standard, "Link types")
    link = f'href="{href}" {new_tab}'
    links = f"<a {link}>Open in new tab</a> · <a {link} download>Download</a>"
    if wav_url is not None:
        links += f' · <a href="{html.escape(wav_url, quote=True)}" {new_tab} download>WAV</a>'
    parts.append(f'<span style="{_LINK_STYLE}">{links}</span>')
    expiry = _expiry(item, now)
    if expiry:
        parts.append(expiry)
    return " · ".join(parts)


def kept_line(files: list[str], error: BaseException | None) -> str:
    """``Kept as kling-videos/123.mp4`` (plain text), or why the videos were not kept; "" for nothing kept.

    ``files`` are the kept files as they should be shown (relative to the working folder where possible).
    """
    if error is not None:
        return f"Not kept: {clean_text(str(error), _KEPT_CHARS)}"
    if not files:
        return ""
    more = f" and {len(files) - 1} more beside it" if len(files) > 1 else ""
    return f"Kept as {clean_text(files[0], _KEPT_CHARS)}{more}"


def _notes(view: View) -> list[str]:
    """Plain-text lines about results that are not shown as players, and where the videos were kept."""
    notes = [
        f"and {_count(f'more {noun}', count)} (all are in task.{_ATTRIBUTES[noun]})"
        for noun, count in view.more
    ]
    for noun in _ATTRIBUTES:
        listed = ", ".join(scheme for kind, scheme in view.blocked if kind == noun)
        if listed:
            notes.append(
                f"Not shown: the gateway's {noun} link is not http(s) ({listed}), so it was not embedded."
            )
    if view.kept:
        notes.append(view.kept)
    return notes


def _media_html(view: View, now: datetime, playback_note: str | None) -> list[str]:
    """The players (or, where videos cannot play, ``playback_note`` beside each link), the images, the
    sound players, the links, the notes."""
    blocks = []
    for video in view.videos:
        if playback_note is None:
            src = html.escape(video.url, quote=True)
            player = f'<video src="{src}" controls width="{_VIDEO_WIDTH}" style="max-width:100%"></video>'
            blocks.append(player)
            blocks.append(f"<div>{_links_html(video, now, video.duration)}</div>")
        else:  # a player that never starts (VS Code) would only mislead: docs/frontends.md
            blocks.append(
                f"<div>{_links_html(video, now, video.duration)} · {html.escape(playback_note)}</div>"
            )
    blocks.extend(_image_and_sound_html(view.images, view.audios, now))
    blocks.extend(f"<div>{html.escape(note)}</div>" for note in _notes(view))
    return blocks


def _image_and_sound_html(images: Sequence[Image], audios: Sequence[Audio], now: datetime) -> list[str]:
    """An ``<img>`` per image and an ``<audio controls>`` per sound, each with its links; the URLs must be
    embeddable."""
    blocks = []
    for number, image in enumerate(images, 1):
        src = html.escape(image.url, quote=True)
        blocks.append(
            f'<img src="{src}" alt="Generated image {number}" width="{_VIDEO_WIDTH}" style="max-width:100%">'
        )
        blocks.append(f"<div>{_links_html(image, now)}</div>")
    for audio in audios:
        blocks.append(f'<audio src="{html.escape(audio.url, quote=True)}" controls></audio>')
        blocks.append(f"<div>{_links_html(audio, now, audio.duration, audio.wav_url)}</div>")
    return blocks


def results_html(images: Sequence[Image], audios: Sequence[Audio], now: datetime) -> str:
    """Images and sounds as a card shows them (e.g. from the ledger): credentials removed, only http(s)
    links, at most `MAX_PLAYERS` in all; a note for the refused links."""
    blocked: dict[tuple[str, str], None] = {}
    shown_images = _playable(tuple(images), "image", blocked)[:MAX_PLAYERS]
    shown_audios = _playable_audios(tuple(audios), blocked)[: MAX_PLAYERS - len(shown_images)]
    view = View(line="", blocked=_first_schemes(blocked))
    blocks = _image_and_sound_html(shown_images, shown_audios, now)
    blocks.extend(f"<div>{html.escape(note)}</div>" for note in _notes(view))
    return "".join(blocks)


def caption_html(caption: str) -> str:
    """A card's caption (e.g. its prompt): bold; a longer one shortened, with more of it in the title."""
    shown = clean_text(caption, _CAPTION_CHARS)
    if shown == caption:
        return f"<div><b>{html.escape(shown)}</b></div>"
    title = html.escape(clean_text(caption, _TITLE_CHARS), quote=True)
    return f'<div title="{title}"><b>{html.escape(shown)}</b></div>'


def live_html(view: View, now: datetime, caption: str | None = None, playback_note: str | None = None) -> str:
    """The live card's one text block: caption, status line and, once final, the players and links.

    ``playback_note`` (`kling_widgets._frontend.playback_note`) replaces the players where they cannot play.
    """
    blocks = [caption_html(caption)] if caption is not None else []
    blocks.append(f"<div>{html.escape(view.line)}</div>")
    if view.final:
        blocks.extend(_media_html(view, now, playback_note))
    return "".join(blocks)


def _bar_html(view: View) -> str:
    """A static bar in the card's colours (plain HTML: readers without widgets see it too)."""
    colour = _BAR_COLOURS.get(view.bar_style, _BAR_COLOURS["info"])
    return (
        f'<span class="kling-bar" role="progressbar" aria-valuenow="{view.progress}" aria-valuemin="0" '
        f'aria-valuemax="100" data-style="{view.bar_style}" style="display:inline-block;width:160px;'
        f'height:10px;vertical-align:middle;background:var(--jp-layout-color3,#e0e0e0)">'
        f'<span style="display:block;height:100%;width:{view.progress}%;background:{colour}"></span></span>'
    )


def static_html(
    task_id: str, view: View, now: datetime, caption: str | None = None, playback_note: str | None = None
) -> str:
    """The ``text/html`` fallback: the same state as the card, as plain HTML with ``<video>``, ``<img>`` and
    ``<audio>`` tags (or the ``playback_note`` where videos cannot play)."""
    title = html.escape(clean_text(task_id, _TITLE_CHARS), quote=True)
    label = f'<span title="{title}">{html.escape(label_text(task_id))}</span>'
    parts = [caption_html(caption)] if caption is not None else []
    parts.append(f"<div>{label} {_bar_html(view)} {html.escape(view.line)}</div>")
    parts.extend(_media_html(view, now, playback_note))
    return "\n".join(parts)


def static_text(task_id: str, view: View) -> str:
    """The ``text/plain`` fallback."""
    lines = [f"Kling task {clean_text(task_id, _TITLE_CHARS)}: {view.line}"]
    lines.extend(item.url for item in (*view.videos, *view.images, *view.audios))
    lines.extend(_notes(view))
    return "\n".join(lines)


def error_card_html(error: KlingError, heading: str = "Not submitted") -> str:
    """The body of a card for a task that could not be submitted, or whose submission got no answer
    (messages quote the gateway)."""
    return (
        f'<span style="color:var(--jp-error-color1,#d32f2f)">{html.escape(heading)}: '
        f"{html.escape(clean_text(str(error)))}</span>"
    )


def waiting_card_html(caption: str) -> str:
    """The body of a card whose prompt waits for its turn to be submitted."""
    return f"{caption_html(caption)}<div>Waiting to be submitted</div>"
