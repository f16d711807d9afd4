"""Load check (issue #7): export EfficientNet-Lite0 to every format x precision, repeatedly.

- 3 runs in a row in ONE process (memory must not grow run over run: peak RSS per run);
- then 2 worker processes in PARALLEL (1 run each), same inputs;
- every artifact's sha256 is compared across all runs: a deterministic format gives identical
  bytes every time; the ones that do not are listed with the reason.

Writes benchmarks/RESULTS-load.md (date, machine, `uptime` load, command).

    .venv/bin/python benchmarks/bench_load.py [--runs 3] [--parallel 2] [--calib-n 64] [--isolate]

`--isolate` exports each artifact in a spawned child (ExportOptions(isolate=True), issue #7): the
table then also gives the largest child peak RSS of each run (the child's VmHWM). The results are
appended to RESULTS-load.md as a new section; earlier sections stay.

Peak RSS per run is sampled from /proc/self/status (VmRSS every 20 ms) by a thread, so each run
gets its own peak even inside one process (ru_maxrss only ever grows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS-load.md"
MODEL = "zoo:efficientnet-lite0"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Max VmRSS seen while the block runs."""

    def __enter__(self) -> PeakRss:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def all_formats(only: str = "") -> list[tuple[str, str]]:
    """Every format x precision of the table, or those named in `only` ('tflite,onnx:int8-dynamic')."""
    from edgecompress.exporters import FORMATS

    pairs = [(name, p) for name, f in FORMATS for p in f.precisions]
    if only:
        wanted = [w.strip() for w in only.split(",") if w.strip()]
        pairs = [(n, p) for n, p in pairs if n in wanted or f"{n}:{p}" in wanted]
    return pairs


def worker(runs: int, out_root: Path, calib_n: int, tag: str, only: str = "", isolate: bool = False) -> list[dict]:
    """`runs` exports of every format x precision in this process; one dict per run."""
    import torch

    from edgecompress.exporters import ExportOptions
    from edgecompress.models import load_model
    from edgecompress.pipeline import ExportJob, resolve_data, run_export

    torch.set_num_threads(1)
    results = []
    for i in range(runs):
        out = out_root / f"{tag}-run{i + 1}"
        t0 = time.perf_counter()
        with PeakRss() as rss:
            spec = load_model(MODEL)  # loaded afresh each run, as a CLI call would
            calib = resolve_data(spec, None, "calibration", progress=False)
            calib = calib.take(slice(0, calib_n))
            job = ExportJob(
                model=spec,
                formats=all_formats(only),
                out_dir=out,
                calib=calib,
                do_validate=False,
                progress=False,
                command=f"bench_load {tag} run {i + 1}",
                options=ExportOptions(isolate=isolate),
            )
            report, _paths = run_export(job)
            child_peaks = [a["details"].get("export_peak_rss_mb") for a in report.artifacts]
            # the calibration slice is a view of the zoo's whole set (172 MB): dropped here, so the
            # next run's load does not find it still alive (it inflated run 2's peak before)
            del report, spec, job, calib
        manifest = json.loads((out / "manifest.json").read_text())
        results.append(
            {
                "tag": tag,
                "run": i + 1,
                "pid": os.getpid(),
                "seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mb": round(rss.peak, 1),
                "rss_after_mb": round(_rss_mb(), 1),
                # [issue #7] isolate: the largest peak RSS of this run's export children
                "child_peak_rss_mb": max((p for p in child_peaks if p), default=None),
                "hashes": {f"{a['format']}:{a['precision']}": a["sha256"] for a in manifest["artifacts"]},
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def _machine() -> str:
    from edgecompress.report.model import machine

    cpu = machine()["cpu"]
    return f"{cpu}, {os.cpu_count()} vCPU, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# Why a format is not byte-identical run to run, when known. (OpenVINO was, until the exporter
# renumbered the node names OpenVINO takes from a process-wide counter: exporters/openvino.py
# `stable_names`, issue #7.)
WHY: dict[str, str] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--calib-n", type=int, default=64, help="calibration samples per int8 export")
    ap.add_argument("--formats", default="", help="only these, e.g. 'tflite,onnx:int8-dynamic' (default: all)")
    ap.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="w", help=argparse.SUPPRESS)
    ap.add_argument("--isolate", action="store_true", help="export each artifact in a child process (issue #7)")
    ap.add_argument("--no-write", action="store_true", help="print, do not append to RESULTS-load.md")
    args = ap.parse_args()

    if args.worker:
        res = worker(args.runs, Path(args.worker), args.calib_n, args.tag, args.formats, args.isolate)
        print(json.dumps(res))
        return

    cmd = " ".join([".venv/bin/python", "benchmarks/bench_load.py", *sys.argv[1:]])
    start, up0 = dt.datetime.now(dt.UTC), _uptime()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as td:
        root = Path(td)
        seq = worker(args.runs, root, args.calib_n, "seq", args.formats, args.isolate)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(root),
                    "--runs",
                    "1",
                    "--calib-n",
                    str(args.calib_n),
                    "--tag",
                    f"par{k + 1}",
                    "--formats",
                    args.formats,
                    *(["--isolate"] if args.isolate else []),
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for k in range(args.parallel)
        ]
        par = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"parallel worker failed with exit code {p.returncode}")
            par += json.loads(out.strip().splitlines()[-1])
    up1 = _uptime()
    runs = seq + par
    keys = list(runs[0]["hashes"])
    mode = "isolated (each export in a child process)" if args.isolate else "in-process"
    lines = [
        f"## bench_load.py, {mode} — {start.isoformat(timespec='minutes')}\n",
        f"- command: `{cmd}`",
        f"- date: {start.isoformat(timespec='seconds')}",
        f"- machine: {_machine()}",
        f"- uptime at start: `{up0}`",
        f"- uptime at end: `{up1}`",
        f"- model: {MODEL}; formats: {', '.join(f'{f}:{p}' for f, p in all_formats(args.formats))}; "
        f"{args.calib_n} calibration samples; validation off (export only); torch threads 1; {mode}",
        f"- {args.runs} runs in one process (`seq`), then {args.parallel} processes in parallel "
        "(`par*`, 1 run each, started together)\n",
        "### Peak RSS per run (of the process running the job)\n",
        "| run | pid | seconds | peak RSS MB | RSS after MB | largest export-child peak RSS MB |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['tag']} {r['run']} | {r['pid']} | {r['seconds']} | {r['peak_rss_mb']} | {r['rss_after_mb']} "
            f"| {r.get('child_peak_rss_mb') or '-'} |"
            for r in runs
        ],
        "",
        "### Hashes across all runs\n",
        "| artifact | distinct sha256 over runs | deterministic | first sha256 |",
        "|---|---|---|---|",
    ]
    nondet = []
    for k in keys:
        distinct = {r["hashes"].get(k) for r in runs}
        det = len(distinct) == 1
        if not det:
            nondet.append(k)
        lines.append(f"| {k} | {len(distinct)} | {'yes' if det else 'NO'} | `{runs[0]['hashes'][k][:16]}` |")
    lines.append("")
    if nondet:
        lines.append("Not byte-identical: " + "; ".join(f"{k} ({WHY.get(k, 'see notes')})" for k in nondet) + ".")
    else:
        where = "sequential and parallel" if par else "in this process"
        lines.append(f"Every format and precision gave byte-identical artifacts in every run, {where}.")
    seq_peaks = [r["peak_rss_mb"] for r in seq]
    seq_after = [r["rss_after_mb"] for r in seq]
    lines.append(
        f"\nPeak RSS over the {len(seq)} runs in one process: "
        f"{' -> '.join(f'{p:.0f}' for p in seq_peaks)} MB "
        f"(growth first -> last {seq_peaks[-1] - seq_peaks[0]:+.0f} MB); RSS after: "
        f"{' -> '.join(f'{p:.0f}' for p in seq_after)} MB."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:  # a new section: earlier runs (other code, other modes) stay for comparison
        old = RESULTS.read_text() if RESULTS.exists() else "# Load: repeated and parallel exports (issue #7)\n"
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
