"""The ``kling-widgets`` command (also ``python -m kling_widgets``): status, watch, simulate, demo, --version.

``status`` and ``watch`` read ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL`` like `KlingClient` (or Kling's own
API keys, ``KLING_ACCESS_KEY`` and ``KLING_SECRET_KEY``, with ``KLING_BASE_URL``). Results go to
stdout, progress and problems to stderr, so ``url=$(kling-widgets watch ID)`` captures just the video URL.
Exit codes: 0 success, 1 the task failed, 2 any other error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._client import ENDPOINTS, KlingClient
from ._errors import KlingError, TaskFailedError
from ._ledger_cli import add_commands
from ._models import Task, TaskStatus
from ._terminal import ProgressLine, printable
from ._version import __version__

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

_PHASES = {
    TaskStatus.NOT_START: "Queued",
    TaskStatus.SUBMITTED: "Queued",
    TaskStatus.QUEUED: "Queued",
    TaskStatus.IN_PROGRESS: "Generating",
    TaskStatus.SUCCESS: "Done",
    TaskStatus.FAILURE: "Failed",
    TaskStatus.UNKNOWN: "Waiting",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (KlingError, ValueError, OSError) as exc:
        print(f"kling-widgets: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-widgets",
        description="Watch Kling video tasks made through the EZmodel gateway, or try everything offline.",
        epilog="status and watch use EZMODEL_API_KEY and EZMODEL_BASE_URL from the environment "
        "(or KLING_ACCESS_KEY, KLING_SECRET_KEY and KLING_BASE_URL for Kling's own API).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="print a task's state once")
    _add_task_arguments(status)
    status.add_argument("--json", action="store_true", help="print the task as JSON")
    status.set_defaults(handler=_status)

    watch = commands.add_parser("watch", help="follow a task until it ends; print the video URL")
    _add_task_arguments(watch)
    watch.add_argument("--timeout", type=_positive, default=900.0, help="seconds to wait (default 900)")
    watch.add_argument(
        "--interval",
        type=_positive,
        default=5.0,
        help="the longest gap between polls, in seconds (default 5)",
    )
    watch.set_defaults(handler=_watch)

    simulate = commands.add_parser("simulate", help="run a local gateway simulator until Ctrl-C")
    simulate.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    simulate.add_argument("--speed", type=_positive, default=1.0, help="time-lapse factor (default 1)")
    simulate.add_argument("--api-key", help="the key it accepts (default: a random sk-sim-… key)")
    simulate.add_argument(
        "--flavor", choices=("ezmodel", "kling"), default="ezmodel",
        help="the service it stands in for: the EZmodel gateway (default) or Kling's own API",
    )  # fmt: skip
    simulate.set_defaults(handler=_simulate)

    demo = commands.add_parser("demo", help="open JupyterLab on the example notebooks (simulated gateway)")
    demo.add_argument("--port", type=int, default=None, help="JupyterLab's port (default 8888 if free)")
    demo.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    demo.add_argument(
        "--flavor", choices=("ezmodel", "kling"), default="ezmodel",
        help="simulate the EZmodel gateway (default) or Kling's own API when no key is set",
    )  # fmt: skip
    demo.set_defaults(handler=_demo)

    add_commands(commands)  # history, keep, resume, batch: the ledger's commands
    return parser


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", metavar="TASK_ID", help="the id printed when the task was submitted")
    parser.add_argument(
        "--endpoint",
        default="text2video",
        choices=sorted(ENDPOINTS),
        metavar="ENDPOINT",
        help="the endpoint the task was submitted to (default text2video)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


# -- commands -------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    with KlingClient() as client:
        task = client.get_task(args.task_id, args.endpoint)
    if args.json:
        print(json.dumps(_task_json(task), indent=2, ensure_ascii=False))
    else:
        print(_summary(task))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        with KlingClient() as client, ProgressLine(sys.stderr, ticking=True) as line:
            task = client.wait(
                args.task_id,
                endpoint=args.endpoint,
                timeout=args.timeout,
                poll_interval=min(1.0, args.interval),
                max_poll_interval=args.interval,
                on_poll=lambda snapshot: line.show(_progress(snapshot, time.monotonic() - started)),
            )
    except TaskFailedError as exc:
        print(f"Failed: {printable(exc.task.fail_reason or 'the gateway gave no reason')}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("Stopped watching; the task keeps running on the server.", file=sys.stderr)
        return EXIT_INTERRUPTED
    for result in (*task.videos, *task.images, *task.audios):
        print(result.url)
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from .simulator import GatewaySimulator

    sim = GatewaySimulator(api_key=args.api_key, port=args.port, speed=args.speed, flavor=args.flavor).start()
    service = "Kling API" if args.flavor == "kling" else "Gateway"
    print(f"{service} simulator running at {sim.url}")
    print("Point kling-widgets at it (in the shell that runs Jupyter or Python):")
    for name, value in sim.environment().items():
        print(f"  export {name}={shlex.quote(value)}")
    print("Press Ctrl-C to stop.", flush=True)
    sim.serve_forever()  # returns after Ctrl-C, with the server stopped
    print("Stopped.", file=sys.stderr)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # pulls in Jupyter-side machinery; only this command needs it

    return run_demo(port=args.port, open_browser=not args.no_browser, flavor=args.flavor)


# -- output ---------------------------------------------------------------------------------------


def _task_json(task: Task) -> dict[str, Any]:
    def iso(when: datetime | None) -> str | None:
        return when.isoformat() if when else None

    return {
        "task_id": task.task_id,
        "endpoint": task.endpoint,
        "status": task.status.value,
        "progress": task.progress,
        "video_url": task.video_url,
        "image_urls": [image.url for image in task.images],  # the image routes
        "audio_urls": [audio.url for audio in task.audios],  # the audio routes
        "fail_reason": task.fail_reason,
        "submit_time": iso(task.submit_time),
        "start_time": iso(task.start_time),
        "finish_time": iso(task.finish_time),
        "units": task.units,  # Kling's own API only: units charged; null through the gateway
    }


def _summary(task: Task) -> str:
    text = f"{task.task_id}: {task.status.value} {task.progress}%"
    if task.video_url:
        text += f" {task.video_url}"
    elif task.fail_reason:
        text += f" ({task.fail_reason})"
    return printable(text)


def _progress(task: Task, elapsed: float) -> str:
    minutes, seconds = divmod(int(elapsed), 60)
    return printable(
        f"Kling {task.task_id} · {_PHASES[task.status]} · {task.progress}% · {minutes}:{seconds:02d}"
    )


if __name__ == "__main__":
    sys.exit(main())
