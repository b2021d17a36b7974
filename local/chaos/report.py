"""The figures of a chaos run (reports/chaos.json), a short report (reports/chaos.md) and its
chart of task latency and faults over time (reports/chaos.png)."""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from local.chaos.run import TERMINAL, RunRecord
from local.provenance import git_commit

# Where a duplicate submission is expected (docs/reliability.md): the provider took the task
# and the function died, or its write failed, before the provider's task id was recorded.
CRASH_WINDOW_FAULTS = frozenset({"die_before_provider_id"})
CRASH_WINDOW_STEP = "record_provider_id"
FAULT_FAMILIES = ("create", "status", "webhook", "video", "dynamodb", "sns", "die")


def percentile(samples: list[float], share: float) -> float:
    """Nearest-rank percentile (0 for no samples)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def figures(record: RunRecord) -> dict[str, Any]:
    """Every figure of the run, targets included."""
    keys = [upload.key for upload in record.uploads]
    tasks_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in record.tasks:
        tasks_of[str(task["source"]["key"])].append(task)
    upload_of_task = {str(t["task_id"]): key for key, ts in tasks_of.items() for t in ts}
    notified = defaultdict(list)
    for note in record.notifications:
        notified[str(note["task_id"])].append(note)

    terminal_tasks = [t for t in record.tasks if t["status"] in TERMINAL]
    lost = sorted(key for key in keys if not any(t["status"] in TERMINAL for t in tasks_of[key]))
    unnotified = sorted(str(t["task_id"]) for t in terminal_tasks if not notified[str(t["task_id"])])
    duplicate_notifications = sum(
        len(notes) - len({n["event_id"] for n in notes}) for notes in notified.values()
    )
    conflicting = sorted(task for task, notes in notified.items() if len({n["status"] for n in notes}) > 1)

    videos, missing_videos, stray_videos = _videos(record, tasks_of)
    submissions = _duplicate_submissions(record, tasks_of, upload_of_task)
    latencies = _latencies(record, tasks_of, notified)
    faults = Counter(str(f["kind"]) for f in record.faults)
    faulted = _faulted_uploads(record, upload_of_task)
    return {
        "seed": record.plan.seed,
        "uploads": len(keys),
        "terminal": dict(sorted(Counter(str(t["status"]) for t in terminal_tasks).items())),
        "lost": len(lost),
        "lost_uploads": lost,
        "duplicate_videos": videos,
        "succeeded_without_video": missing_videos,
        "videos_of_unsucceeded_tasks": stray_videos,
        "duplicate_submissions": submissions["count"],
        "duplicate_submissions_in_crash_window": submissions["in_window"],
        "duplicate_submissions_unexplained": submissions["unexplained"],
        "unnotified": len(unnotified),
        "unnotified_tasks": unnotified,
        "duplicate_notifications": duplicate_notifications,
        "conflicting_notifications": len(conflicting),
        "p50_seconds": round(percentile(latencies, 0.5), 2),
        "p95_seconds": round(percentile(latencies, 0.95), 2),
        "max_seconds": round(max(latencies, default=0.0), 2),
        "faults_injected": dict(sorted(faults.items())),
        "faults_total": sum(faults.values()),
        "uploads_with_faults": len(faulted),
        "uploads_with_faults_share": round(len(faulted) / len(keys), 3) if keys else 0.0,
        "by_route": _by_route(record),
        "wall_seconds": round(record.finished_at - record.started_at, 1),
        "plan": {"spread_seconds": record.plan.spread_seconds, **record.plan.describe()},
        "targets": {
            "lost": len(lost) == 0,
            "duplicate_videos": videos == 0,
            "unnotified": len(unnotified) == 0,
            "duplicate_submissions_explained": not submissions["unexplained"],
            "conflicting_notifications": not conflicting,
        },
    }


def _videos(record: RunRecord, tasks_of: dict[str, list[dict[str, Any]]]) -> tuple[int, int, int]:
    """(videos beyond one per upload, SUCCEEDED tasks without their video, videos of tasks
    that did not succeed)."""
    per_upload: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    for video in record.videos:
        key = str(video["key"])
        stem, task_id = posixpath.split(key.removeprefix("videos/"))
        per_upload[stem] += 1
        by_task[task_id.removesuffix(".mp4")] += 1
    duplicates = sum(n - 1 for n in per_upload.values() if n > 1)
    succeeded = {str(t["task_id"]) for ts in tasks_of.values() for t in ts if t["status"] == "SUCCEEDED"}
    missing = sum(1 for task_id in succeeded if by_task[task_id] == 0)
    stray = sum(n for task_id, n in by_task.items() if task_id not in succeeded)
    return duplicates, missing, stray


def _duplicate_submissions(
    record: RunRecord, tasks_of: dict[str, list[dict[str, Any]]], upload_of_task: dict[str, str]
) -> dict[str, Any]:
    made = Counter(str(p["upload"]) for p in record.provider_tasks)
    in_window_uploads = {
        upload_of_task.get(str(f.get("task_id")))
        for f in record.faults
        if f["kind"] in CRASH_WINDOW_FAULTS
        or (f["kind"] == "dynamodb_error" and f.get("step") == CRASH_WINDOW_STEP)
    }
    count = in_window = 0
    unexplained = []
    for upload, n in sorted(made.items()):
        if n <= 1:
            continue
        count += n - 1
        if upload in in_window_uploads:
            in_window += n - 1
        else:
            unexplained.append({"upload": upload, "provider_tasks": n})
    return {"count": count, "in_window": in_window, "unexplained": unexplained}


def _latencies(
    record: RunRecord, tasks_of: dict[str, list[dict[str, Any]]], notified: dict[str, list[dict[str, Any]]]
) -> list[float]:
    """Seconds from each upload's PUT to its task's first notification."""
    found = []
    for key, at in record.uploaded_at.items():
        published = [n["published_at"] for t in tasks_of[key] for n in notified[str(t["task_id"])]]
        if published:
            found.append(min(published) - at)
    return found


def _faulted_uploads(record: RunRecord, upload_of_task: dict[str, str]) -> set[str]:
    upload_of_provider_task = {str(p["provider_task_id"]): str(p["upload"]) for p in record.provider_tasks}
    faulted = set()
    for fault in record.faults:
        upload = (
            fault.get("upload")
            or upload_of_task.get(str(fault.get("task_id")))
            or upload_of_provider_task.get(str(fault.get("task")))
            or upload_of_task.get(str(fault.get("task")))
        )
        if upload:
            faulted.add(str(upload))
    return faulted


def _by_route(record: RunRecord) -> dict[str, dict[str, int]]:
    routes: dict[str, Counter[str]] = defaultdict(Counter)
    for task in record.tasks:
        routes[str((task.get("provider") or {}).get("name", "none"))][str(task["status"])] += 1
    return {route: dict(sorted(counts.items())) for route, counts in sorted(routes.items())}


def chart(record: RunRecord, path: Path) -> None:
    """Task latency per upload (by outcome) above the faults injected per 10 s, by family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in record.tasks:
        tasks_of[str(task["source"]["key"])].append(task)
    first_note: dict[str, float] = {}
    for note in record.notifications:
        task_id = str(note["task_id"])
        first_note[task_id] = min(first_note.get(task_id, math.inf), float(note["published_at"]))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11.5, 6.5), sharex=True, height_ratios=(3, 2))
    for status, colour in zip(TERMINAL, ("tab:green", "tab:red", "tab:orange", "tab:purple"), strict=True):
        points = [
            (at - record.started_at, first_note[str(t["task_id"])] - at)
            for key, at in record.uploaded_at.items()
            for t in tasks_of[key]
            if t["status"] == status and str(t["task_id"]) in first_note
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            top.scatter(xs, ys, s=12, color=colour, label=f"{status} ({len(points)})")
    top.set_ylabel("upload to notification (s)")
    top.set_title(f"chaos run: {len(record.uploads)} uploads, seed {record.plan.seed}")
    # Beside the plot: inside, it would hide the slowest tasks.
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    top.grid(alpha=0.3)

    width = 10.0
    bins = max(1, math.ceil((record.finished_at - record.started_at) / width))
    counts = {family: [0] * bins for family in FAULT_FAMILIES}
    for fault in record.faults:
        index = int((float(fault["at"]) - record.started_at) // width)
        family = str(fault["kind"]).split("_")[0]
        if 0 <= index < bins and family in counts:
            counts[family][index] += 1
    base = [0] * bins
    lefts = [i * width for i in range(bins)]
    for family in FAULT_FAMILIES:
        bottom.bar(lefts, counts[family], width=width * 0.9, bottom=base, align="edge", label=family)
        base = [b + c for b, c in zip(base, counts[family], strict=True)]
    bottom.set_ylabel("faults per 10 s")
    bottom.set_xlabel("seconds since the first upload")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(record: RunRecord, folder: Path, *, name: str = "chaos") -> dict[str, Any]:
    """`<name>.json`, `<name>.md` and `<name>.png` in `folder`; the figures."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {"commit": git_commit(), **figures(record)}
    (folder / f"{name}.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    chart(record, folder / f"{name}.png")
    (folder / f"{name}.md").write_text(markdown(found, f"{name}.png"), encoding="utf-8")
    return found


def markdown(found: dict[str, Any], chart_name: str) -> str:
    targets = found["targets"]
    verdict = (
        "all targets met"
        if all(targets.values())
        else "TARGETS MISSED: " + ", ".join(name for name, met in targets.items() if not met)
    )
    faults = ", ".join(f"{kind} {n}" for kind, n in found["faults_injected"].items())
    terminal = ", ".join(f"{status} {n}" for status, n in found["terminal"].items())
    lines = [
        "# Chaos run",
        "",
        f"`make chaos` (local/chaos/): {found['uploads']} uploads over every route with seeded faults "
        f"(seed {found['seed']}; `make chaos SEED={found['seed']}` replays the plan; "
        f"commit `{found.get('commit', 'unknown')}`), "
        f"{found['wall_seconds']} s of wall time. {verdict}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| uploads | {found['uploads']} |",
        f"| terminal | {terminal} |",
        f"| lost | {found['lost']} |",
        f"| duplicate videos | {found['duplicate_videos']} |",
        f"| duplicate submissions (in the crash window) | {found['duplicate_submissions']} "
        f"({found['duplicate_submissions_in_crash_window']}) |",
        f"| videos of tasks that did not succeed (not a target; docs/reliability.md) | "
        f"{found['videos_of_unsucceeded_tasks']} |",
        f"| unnotified | {found['unnotified']} |",
        f"| duplicate notifications (same `event_id`) | {found['duplicate_notifications']} |",
        f"| upload to notification p50 / p95 / max | {found['p50_seconds']} / {found['p95_seconds']} / "
        f"{found['max_seconds']} s |",
        f"| uploads that met a fault | {found['uploads_with_faults']} "
        f"({found['uploads_with_faults_share']:.0%}) |",
        f"| faults injected | {found['faults_total']} |",
        "",
        f"Faults by kind: {faults}.",
        "",
        f"![task latency and faults over time]({chart_name})",
        "",
        "What the figures mean and the guarantees they check: docs/reliability.md.",
        "",
    ]
    return "\n".join(lines)
