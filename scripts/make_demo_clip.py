"""Make ``src/kling_widgets/_data/demo.mp4``, the clip the gateway simulator serves as every video.

A 5 s, 480x270, 24 fps animated gradient with a title that glides across and a running timestamp.
H.264 baseline, yuv420p, ``+faststart`` (plays while it downloads), no audio: a few hundred KB.

Uses Debian's ``ffmpeg`` if it is on PATH, else the binary bundled with ``imageio-ffmpeg``.

Usage::

    python scripts/make_demo_clip.py [OUTPUT]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "src" / "kling_widgets" / "_data" / "demo.mp4"
WIDTH, HEIGHT, FPS, SECONDS = 480, 270, 24, 5
TITLE = "kling-widgets demo"
COLOURS = "c0=0x1e3a8a:c1=0x7c3aed:c2=0xdb2777"  # indigo, violet, pink
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/System/Library/Fonts/Supplemental/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)


def ffmpeg_binary() -> str:
    """Return the ffmpeg executable: the system one, else imageio-ffmpeg's."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg
    except ImportError:
        sys.exit("ffmpeg not found: install it (apt install ffmpeg) or `pip install imageio-ffmpeg`")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def video_filter() -> str:
    """The filter chain: title sliding left to right on a sine path, plus a seconds counter."""
    font = next((f for f in FONT_CANDIDATES if Path(f).is_file()), None)
    if font is None:  # no known font: a plain gradient is still a valid demo clip
        return "format=yuv420p"
    fontfile = font.replace(":", r"\:")
    title = (
        f"drawtext=fontfile='{fontfile}':text='{TITLE}':fontsize=34:fontcolor=white"
        ":shadowcolor=black@0.6:shadowx=2:shadowy=2"
        f":x=(w-text_w)/2+(w-text_w)/2*sin(2*PI*t/{SECONDS}):y=(h-text_h)/2"
    )
    clock = (
        f"drawtext=fontfile='{fontfile}':text='%{{eif\\:t\\:d}}.%{{eif\\:mod(t*10\\,10)\\:d}} s'"
        ":fontsize=18:fontcolor=white@0.85:x=w-text_w-12:y=h-text_h-10"
    )
    return f"{title},{clock},format=yuv420p"


def make_clip(output: Path) -> None:
    """Render the clip to ``output`` (overwritten)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi",
        "-i", f"gradients=s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}:speed=0.02:{COLOURS}",
        "-vf", video_filter(),
        "-an",
        "-c:v", "libx264", "-profile:v", "baseline", "-level", "3.0", "-preset", "slow", "-crf", "28",
        "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        str(output),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main() -> None:
    """Parse the command line and make the clip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    output: Path = parser.parse_args().output
    make_clip(output)
    print(f"wrote {output} ({output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
