"""ADB runner: push the artifact to an Android phone, run it pinned to the big cores, parse.

Two modes (profile [connection] mode):
- "benchmark_model" (default): LiteRT's `benchmark_model` binary (pushed by the user to
  connection.benchmark_model) on a .tflite; its "Inference timings in us" / "count=... avg=..."
  lines and memory footprint are parsed.
- "bench.py": the project's bench.py with the phone's python (e.g. Termux + numpy + ai-edge-litert).

Both run under `taskset <mask of big_cores>` (bench.py is pinned to the big cores too: its own
sched_setaffinity would otherwise undo the taskset). Each run works in its own folder under
`remote_dir` and removes only that folder. `adb shell` hands its words to the phone's shell, so
every word is shlex-quoted. UNTESTED ON HARDWARE: the tests cover command construction, parsing of
benchmark_model output written from its documented format, and the no-device error.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import shutil
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, RuntimeMissingError, ValidationError
from edgecompress.targets.runners import RUNNERS
from edgecompress.targets.runners.local import BENCH, parse_bench_output
from edgecompress.targets.runners.ssh import _GUARD, _KILL_AND_REMOVE, _KILLED

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest


def cpu_mask(cpus: list[int]) -> str:
    """taskset's hex mask for a CPU list: [4, 5, 6, 7] -> 'f0'."""
    if not cpus:
        raise ConfigError("adb: [hardware] big_cores is empty; cannot pin to the big cores")
    return format(sum(1 << c for c in set(cpus)), "x")


_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Latency (ms) and memory from LiteRT benchmark_model's log; one-line error if absent."""
    stats = None
    for line in text.splitlines():  # the last "count=" line is the timed run (earlier: warm-up)
        if "count=" in line and "avg=" in line:
            stats = dict(re.findall(r"(\w+)=" + _NUM, line))
    timings = re.search(r"Inference timings in us:.*?Inference \(avg\):\s*" + _NUM, text)
    if stats is None and timings is None:
        err = next((ln.strip() for ln in reversed(text.splitlines())
                    if "ERROR" in ln or "Failed" in ln or "error" in ln), "")
        raise ValidationError("benchmark_model printed no timings" + (f" ({err[:200]})" if err else ""))
    us = {k: float(v) for k, v in (stats or {}).items()}
    avg = us.get("avg", float(timings.group(1)) if timings else 0.0)
    # benchmark_model prints percentiles only in newer builds (p50/median); else the mean stands in.
    p50 = us.get("median", us.get("p50", avg))
    lat = {"p50": p50 / 1e3, "mean": avg / 1e3, "runs": int(us.get("count", 0))}
    if "median" not in us and "p50" not in us:
        lat["p50_is_mean"] = True  # said in the report: not a median
    for k_out, k_in in (("min", "min"), ("max", "max"), ("std", "std"), ("p90", "p90"), ("p99", "p99")):
        if k_in in us:
            lat[k_out] = us[k_in] / 1e3
    lat["throughput_per_s"] = 1000 / lat["p50"] if lat["p50"] else 0.0
    out: dict[str, Any] = {"latency_ms": {"1": lat}, "memory_mb": {}}
    mem = re.search(r"Memory footprint delta.*?init=" + _NUM + r"\s+overall=" + _NUM, text)
    if mem:
        out["memory_mb"] = {"init_delta": float(mem.group(1)), "overall_delta": float(mem.group(2))}
    peak = re.search(r"Overall peak memory footprint \(MB\).*?:\s*" + _NUM, text)
    if peak:
        out["memory_mb"]["peak_rss"] = float(peak.group(1))
    init = re.search(r"Init:\s*" + _NUM, text)
    if init:
        out["load_seconds"] = float(init.group(1)) / 1e6
    return out


class AdbDevice:
    def __init__(self, conn: dict[str, Any], hardware: dict[str, Any], name: str = "") -> None:
        adb = shutil.which(str(conn.get("adb") or "adb"))
        if not adb:
            raise RuntimeMissingError(f"target {name}: adb not found (Debian package 'adb')")
        self.adb = adb
        self.serial = str(conn.get("serial") or "")
        self.remote_dir = str(conn.get("remote_dir") or "/data/local/tmp/edgecompress").rstrip("/") or "/"
        # This run's own folder: the cleanup removed remote_dir itself, which with
        # remote_dir = "/data/local/tmp" took benchmark_model and two runs took each other's files.
        self.run_dir = f"{self.remote_dir.rstrip('/')}/edgecompress.{uuid.uuid4().hex[:12]}"
        self.benchmark_model = str(conn.get("benchmark_model") or "/data/local/tmp/benchmark_model")
        self.mode = str(conn.get("mode") or "benchmark_model")
        if self.mode not in ("benchmark_model", "bench.py"):
            raise ConfigError(f"target {name}: connection.mode must be benchmark_model or bench.py")
        self.python = str(conn.get("python") or "python3")
        self.timeout = float(conn.get("command_timeout_s") or 900)
        self.timeout_set = bool(conn.get("command_timeout_s"))
        self.big_cores = [int(c) for c in hardware.get("big_cores", [])]
        self.name = name

    def base(self) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else [])]

    def shell_argv(self, words: list[str]) -> list[str]:
        return [*self.base(), "shell", " ".join(shlex.quote(w) for w in words)]

    def _run(self, argv: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"adb {self.name}: {what} timed out") from None
        err = (proc.stderr or "").strip()
        if "no devices/emulators found" in err or "device offline" in err or \
                ("device" in err and "not found" in err):
            raise ValidationError(f"adb {self.name}: no device attached ({err.splitlines()[-1]}); "
                                  "connect one or validate against an estimate")
        return proc

    def check_attached(self) -> None:
        out = self._run([self.adb, "devices"], "listing devices", 20).stdout
        devices = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]
        if not devices or (self.serial and self.serial not in devices):
            want = f" {self.serial}" if self.serial else ""
            raise ValidationError(f"adb {self.name}: no device{want} attached (`adb devices` lists "
                                  f"{', '.join(devices) or 'none'}); connect one or use an estimate")

    def push(self, local: Path, remote: str) -> None:
        proc = self._run([*self.base(), "push", str(local), remote], f"push {local.name}")
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
            why = lines[-1] if lines else f"adb exit code {proc.returncode}"
            if len(why) > 300:  # adb names both paths first; the reason is at the end
                why = "..." + why[-300:]
            raise ValidationError(f"adb {self.name}: push {local.name} failed ({why})")

    def bench_cpus(self, threads: int) -> list[int]:
        """bench.py's --cpus: the first `threads` big cores. Its sched_setaffinity replaces the
        taskset mask, and CPUs 0..n-1 are a phone's LITTLE cores."""
        if not self.big_cores:
            cpu_mask(self.big_cores)  # the one error for an empty big_cores
        return self.big_cores[:max(threads, 1)]

    def commands(self, req: BenchRequest) -> list[list[str]]:
        """The device-side command (as words) for one request: pinned to the big cores."""
        art = f"{self.run_dir}/{Path(req.artifact).name}"
        pin = ["taskset", cpu_mask(self.big_cores)]
        threads = max(req.threads, 1)
        if self.mode == "benchmark_model":
            if req.runtime != "litert":
                raise ConfigError(f"adb {self.name}: benchmark_model runs .tflite only, not {req.runtime}")
            return [[*pin, self.benchmark_model, f"--graph={art}", f"--num_threads={threads}",
                     f"--warmup_runs={req.warmup}", f"--num_runs={req.runs}", "--min_secs=0",
                     "--use_xnnpack=true", "--report_peak_memory_footprint=true"]]
        inputs = f"{self.run_dir}/{Path(req.inputs).name}" if req.inputs else None
        outputs = f"{self.run_dir}/outputs.npy" if req.outputs else None
        pinned = replace(req, cpus=self.bench_cpus(threads))
        return [[*pin, self.python, f"{self.run_dir}/{BENCH.name}",
                 *pinned.argv(artifact=art, inputs=inputs, outputs=outputs)]]


class AdbRunner:
    name = "adb"

    def preflight(self, profile: TargetProfile) -> None:
        """Before any work: adb present, the phone attached, big cores listed and the benchmark
        program on the phone (one clear error, not a report whose every row failed)."""
        dev = AdbDevice(profile.connection, profile.hardware, profile.name)
        dev.check_attached()
        cpu_mask(dev.big_cores)
        if dev.mode == "benchmark_model":
            proc = dev._run(dev.shell_argv(["ls", dev.benchmark_model]), "looking for benchmark_model", 60)
            if proc.returncode != 0:
                raise RuntimeMissingError(f"adb {profile.name}: {dev.benchmark_model} not on the device "
                                          "(push LiteRT's benchmark_model there)")
        else:
            proc = dev._run(dev.shell_argv([dev.python, "-c", "import numpy"]), "checking python", 60)
            if proc.returncode != 0:
                said = (proc.stderr or proc.stdout).strip()[-200:]
                raise RuntimeMissingError(f"adb {profile.name}: {dev.python} with numpy does not run on the "
                                          f"device (exit {proc.returncode}: {said or 'no message'})")

    def run(self, req: BenchRequest, profile: TargetProfile | None = None) -> dict[str, Any]:
        if profile is None:
            raise ConfigError("adb runner: needs a target profile")
        dev = AdbDevice(profile.connection, profile.hardware, profile.name)
        dev.check_attached()
        # The profile's command_timeout_s bounds the benchmark too, not only the copies.
        limit = max(1, math.ceil(min(req.timeout_s, dev.timeout) if dev.timeout_set else req.timeout_s))
        self._shell(dev, ["mkdir", "-p", dev.run_dir], "mkdir")
        finished = False  # the benchmark returned: nothing of ours can still run on the phone
        try:
            dev.push(Path(req.artifact), f"{dev.run_dir}/")
            if dev.mode == "bench.py":
                dev.push(BENCH, f"{dev.run_dir}/")
                if req.inputs:
                    dev.push(Path(req.inputs), f"{dev.run_dir}/")
            (cmd,) = dev.commands(req)
            start = time.monotonic()
            # Killed on the phone at `limit` (toybox timeout), and by the cleanup if we gave up first.
            proc = dev._run(dev.shell_argv(["sh", "-c", _GUARD, "sh", dev.run_dir, str(limit), *cmd]),
                            "benchmark", limit + 30)
            finished = True
            where = f"adb {profile.name} ({Path(req.artifact).name})"
            if proc.returncode in _KILLED and time.monotonic() - start >= limit - 1:
                raise ValidationError(f"{where}: benchmark timed out after {limit} s (killed on the device)")
            if dev.mode == "benchmark_model":
                if proc.returncode != 0 and "not found" in (proc.stdout + proc.stderr):
                    raise RuntimeMissingError(f"{where}: {dev.benchmark_model} not on the device "
                                              "(push LiteRT's benchmark_model there)")
                result = parse_benchmark_model(proc.stdout + "\n" + proc.stderr)
                result["runtime"] = {"name": "litert-benchmark_model", "version": "device",
                                     "settings": {"num_threads": req.threads, "xnnpack": True,
                                                  "taskset": cpu_mask(dev.big_cores)}}
            else:
                result = parse_bench_output(proc.stdout, proc.stderr, proc.returncode, where)
                if req.outputs:
                    self._pull(dev, f"{dev.run_dir}/outputs.npy", Path(req.outputs))
                    result["outputs"] = str(req.outputs)
            result["device"] = {"transport": "adb", "serial": dev.serial, "pinned": dev.big_cores}
            return result
        finally:
            # Only this run's folder; the kill only when the benchmark did not return (its pid
            # could be another process's by now).
            cleanup = ["rm", "-rf", dev.run_dir] if finished else ["sh", "-c", _KILL_AND_REMOVE, "sh", dev.run_dir]
            with contextlib.suppress(ValidationError):
                self._shell(dev, cleanup, "cleanup")

    @staticmethod
    def _shell(dev: AdbDevice, words: list[str], what: str) -> None:
        proc = dev._run(dev.shell_argv(words), what, 60)
        if proc.returncode != 0:
            raise ValidationError(f"adb {dev.name}: {what} failed ({proc.stderr.strip()[:200]})")

    @staticmethod
    def _pull(dev: AdbDevice, remote: str, local: Path) -> None:
        proc = dev._run([*dev.base(), "pull", remote, str(local)], "pull outputs")
        if proc.returncode != 0:
            raise ValidationError(f"adb {dev.name}: pull outputs failed ({proc.stderr.strip()[:200]})")


RUNNERS.register("adb", AdbRunner())
