"""`make demo`: one image through the whole pipeline on this machine, step by step.

    python -m local.demo [--image PATH] [--prompt TEXT] [--out out/]

Starts the local stack (docs/local-stack.md), uploads the image under `incoming/` with
the prompt as S3 metadata, prints each step with its time since the start, prints the
SNS notification, downloads the video to `<out>/<image stem>.mp4` and checks it with
PyAV. Exit codes: 0 the video is there, 2 the image was rejected (the reason is
printed), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
from PIL import Image, ImageDraw

from i2v.providers import ROUTES, known_routes
from local.stack import LocalStack, LocalStackError

DEFAULT_PROMPT = "A happy horse trots across a sunny meadow, its mane flowing in the wind"
# Generated when no image is given; the name has a space and a non-ASCII letter on purpose.
GENERATED_IMAGE_NAME = "happy horse démo.png"
# The simulator renders at most this long side unless told otherwise: a 1080P render of
# a 5 s clip takes several times longer and proves nothing more.
RENDER_MAX_LONG_SIDE = 1280
RECONCILE_INTERVAL_SECONDS = 5.0
TASK_TIMEOUT_SECONDS = 180.0
EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2
# Printable ASCII stays as it is in S3 metadata; "%" and everything else is percent-encoded.
_METADATA_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

# The task item's timestamps, in the order they happen, and what each one means.
STEPS = (
    ("received_at", "upload event taken from the queue"),
    ("submitted_at", "submitted to the provider"),
    ("running_at", "provider running"),
    ("completed_at", "provider finished"),
    ("finished_at", "task finished"),
)
FINISHED = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")


@dataclass(frozen=True)
class VideoFacts:
    size: int
    duration_seconds: float
    width: int
    height: int
    codec: str


def metadata_text(text: str) -> str:
    """`text` as S3 metadata can carry it (ASCII): percent-encoded UTF-8 where needed."""
    return quote(text, safe=_METADATA_SAFE)


def generate_image(path: Path) -> Path:
    """A 1280x720 gradient with a few shapes: a valid input for every provider rule."""
    width, height = 1280, 720
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = y / height
        draw.line([(0, y), (width, y)], fill=(int(90 + 120 * shade), int(160 - 60 * shade), 230))
    draw.ellipse((960, 80, 1120, 240), fill=(255, 214, 90))
    draw.polygon([(0, 720), (420, 380), (820, 720)], fill=(70, 140, 80))
    draw.polygon([(560, 720), (980, 420), (1280, 640), (1280, 720)], fill=(50, 115, 65))
    draw.rectangle((300, 470, 520, 560), fill=(140, 90, 50))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")
    return path


def inspect_video(path: Path) -> VideoFacts:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        return VideoFacts(
            size=path.stat().st_size,
            duration_seconds=duration,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
        )


class Timeline:
    """Prints steps with the seconds since the demo started."""

    def __init__(self) -> None:
        self.started = time.time()

    def say(self, text: str, at: float | None = None) -> None:
        elapsed = (at if at is not None else time.time()) - self.started
        print(f"[{elapsed:6.1f} s] {text}", flush=True)


def follow_task(stack: LocalStack, key: str, timeline: Timeline) -> dict[str, Any]:
    """Print the task's steps as they happen; return the finished task."""
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    shown: set[str] = set()
    while time.monotonic() < deadline:
        tasks = stack.tasks_for(key)
        task = tasks[-1] if tasks else None
        if task is not None:
            for field, text in STEPS:
                if field in task and field not in shown:
                    shown.add(field)
                    timeline.say(_step_label(stack, task, field, text), at=task[field])
            if task["status"] in FINISHED:
                return task
        time.sleep(0.2)
    raise LocalStackError(f"the task of {key!r} did not finish in {TASK_TIMEOUT_SECONDS:.0f} s")


COMPLETED_VIA = {
    "callback": "callback received: {}",
    "poll": "{} (found by its scheduled status check: a polling route)",
}


def _step_label(stack: LocalStack, task: dict[str, Any], field: str, text: str) -> str:
    if field == "received_at":
        return f"{text} (task {task['task_id']})"
    if field == "completed_at":
        # The task records which path learnt the outcome; the gateway's log of requests
        # is written only once the function has answered, so it may lag behind.
        return COMPLETED_VIA.get(
            task.get("completed_via") or "", "{} (found by the reconciler's poll: no callback came)"
        ).format(text)
    if field == "finished_at" and task["status"] == "SUCCEEDED":
        return f"video stored: s3://{task['video']['bucket']}/{task['video']['key']}"
    if field == "finished_at":
        return f"{text}: {task['status']}"
    return text


def run(
    image: Path,
    prompt: str,
    out_dir: Path,
    render_max_long_side: int | None,
    verbose: bool,
    provider: str = "magnific",
) -> int:
    timeline = Timeline()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "local-stack.log"
    with open(log_path, "ab") as function_log:
        handler = logging.StreamHandler() if verbose else logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
        # httpx logs whole URLs at INFO, and callback URLs carry tokens.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        stack = LocalStack(
            routes=[provider],
            reconcile_interval_seconds=RECONCILE_INTERVAL_SECONDS,
            simulator_options={"render_max_long_side": render_max_long_side},
            function_log=None if verbose else function_log,
        )
        with stack:
            timeline.say(
                f"stack up: AWS (moto) {stack.moto.url}, {provider} simulator {stack.simulator.url}, "
                f"webhooks {stack.gateway.url}"
            )
            if not verbose:
                print(f"           functions' logs: {log_path}")
            return _process(stack, image, prompt, out_dir, timeline)


def _process(stack: LocalStack, image: Path, prompt: str, out_dir: Path, timeline: Timeline) -> int:
    key = f"{stack.incoming_prefix}{image.name}"
    stack.upload(image, key, {"prompt": metadata_text(prompt)})
    timeline.say(f"uploaded s3://{stack.bucket}/{key} ({image.stat().st_size:,} bytes)")
    task = follow_task(stack, key, timeline)

    notification = stack.wait_for_notification(task["task_id"], timeout=30)
    timeline.say(
        f"notification published: {notification.message['event_type']}", at=notification.published_at
    )
    print(json.dumps(notification.message, indent=2, ensure_ascii=False))

    if task["status"] == "REJECTED":
        print(f"rejected: {task['error']['message']}")
        return EXIT_REJECTED
    if task["status"] != "SUCCEEDED":
        error = task.get("error") or {}
        print(f"{task['status'].lower()}: {error.get('message', 'no reason recorded')}")
        return EXIT_FAILED

    video = task["video"]
    target = out_dir / f"{image.stem}.mp4"
    stack.s3.download_file(video["bucket"], video["key"], str(target))
    facts = inspect_video(target)
    timeline.say(
        f"video saved to {target}: {facts.size:,} bytes, {facts.duration_seconds:.2f} s, "
        f"{facts.width}x{facts.height} {facts.codec}"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.demo",
        description="Animate one image with the whole pipeline running on this machine.",
    )
    parser.add_argument("--image", type=Path, help="image to animate (default: a generated one)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what should happen in the video")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    parser.add_argument(
        "--render-max-long-side",
        type=int,
        default=RENDER_MAX_LONG_SIDE,
        help="cap on the simulated video's long side, 0 for none (default: %(default)s)",
    )
    parser.add_argument(
        "--provider",
        default="magnific",
        help=f"the route that generates the video: {known_routes()} (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="functions' logs on the console")
    args = parser.parse_args(argv)
    if args.provider not in ROUTES:
        parser.error(f"unknown provider {args.provider!r}; the routes are: {known_routes()}")

    if args.image is None:
        image = generate_image(args.out / GENERATED_IMAGE_NAME)
        print(f"no --image given: generated {image}")
    elif not args.image.is_file():
        parser.error(f"no such image: {args.image}")
    else:
        image = args.image
    # A SIGTERM unwinds like Ctrl-C does, so the stack's processes are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(
            image, args.prompt, args.out, args.render_max_long_side or None, args.verbose, args.provider
        )
    except LocalStackError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: the local stack was stopped", file=sys.stderr)
        return EXIT_FAILED


def _interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
