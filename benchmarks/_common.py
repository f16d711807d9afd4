"""Helpers shared by the benchmarks: header lines, the results file, the run record and the data check."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS-compress.md"


def header(title: str) -> str:
    """The section heading and the run's command, date, machine and load. Call it after setting
    torch's thread count: the line records it."""
    import torch

    from edgecompress.report.model import machine

    cpu = machine()["cpu"]
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cmd = " ".join([Path(sys.executable).name, *sys.argv])
    return (f"## {title}\n\n- command: `{cmd}`\n- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n"
            f"- machine: {cpu}, {os.cpu_count()} vCPU, torch threads {torch.get_num_threads()}\n"
            f"- uptime at start: `{up}`\n")


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section `## title` of RESULTS-compress.md. The notes written by
    hand below the generated part (after its `- uptime at end:` line) are kept."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Compression benchmarks (issue #4)\n\n"
    marker = f"## {title}\n"
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        old = text[start:] if nxt < 0 else text[start:nxt + 1]
        end = old.rfind("\n- uptime at end:")
        notes = old[old.find("\n", end + 1) + 1:].strip("\n") if end >= 0 and old.find("\n", end + 1) >= 0 else ""
        if notes:
            body = body.rstrip("\n") + "\n\n" + notes
        # keep one blank line between this section and the next heading
        text = text[:start] + body.rstrip("\n") + "\n" + ("" if nxt < 0 else "\n" + text[nxt + 1:])
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text.rstrip("\n") + "\n")


def end_line() -> str:
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"- uptime at end: `{up}`\n"


def imagenet_or_exit() -> Path:
    """The labels.csv of ../shared/data/imagenet-sample-1k; the EfficientNet benchmarks need it."""
    from edgecompress.paths import imagenet_sample

    labels = imagenet_sample()
    if labels is None:
        sys.exit("needs ../shared/data/imagenet-sample-1k")
    return labels


def run_record() -> dict:
    """The start of a results JSON: when, where, with what, and the command."""
    from edgecompress.report.model import machine, versions

    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
            "versions": versions(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "loadavg_start": list(os.getloadavg())}


def interleaved_p50s(calls: dict, rounds: int, per_round: int, warmup: int) -> dict:
    """{key: [p50 ms of each round]} for zero-argument callables timed in interleaved rounds (every
    callable once per round, `per_round` calls each, after `warmup` calls each): a host that
    speeds up or slows down during the run touches every callable alike."""
    import statistics
    import time

    for f in calls.values():
        for _ in range(warmup):
            f()
    p50s: dict = {k: [] for k in calls}
    for _ in range(rounds):
        for k, f in calls.items():
            ts = []
            for _ in range(per_round):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            p50s[k].append(statistics.median(ts) * 1000)
    return p50s
