"""ADB runner: push the artifact to an Android phone, run it pinned to the big cores, parse.

Two modes (profile [connection] mode):
- "benchmark_model" (default): LiteRT's `benchmark_model` binary (pushed by the user to
  connection.benchmark_model) on a .tflite; its "Inference timings in us" / "count=... avg=..."
  lines and memory footprint are parsed.
- "bench.py": the project's bench.py with the phone's python (e.g. Termux + numpy + ai-edge-litert).

Both run under `taskset <mask of big_cores>` (bench.py is pinned to the big cores too: its own
sched_setaffinity would otherwise undo the taskset). Each run works in its own folder under
`remote_dir` and removes only that folder. `adb shell` hands its words to the phone's shell, so
every word is shlex-quoted. A remote command's exit status is read from a marker it echoes, never
from adb's exit code: over shell protocol v1 (Android before 7, or an old adb) `adb shell` exits 0
whatever the command did, and the command's stderr arrives on its stdout. UNTESTED ON HARDWARE:
the tests cover command construction, parsing of benchmark_model output written from its
documented format, and the no-device error, with a fake adb speaking shell protocol v2 or v1.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgecompress.errors import ConfigError, DeviceError, RuntimeMissingError, ValidationError
from edgecompress.targets.profile import _choice, _positive, _text
from edgecompress.targets.runners import RUNNERS
from edgecompress.targets.runners._remote import staged, time_limit
from edgecompress.targets.runners.local import parse_bench_output
from edgecompress.targets.runners.ssh import _GUARD, _KILL_AND_REMOVE, _KILLED

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest


# What every `adb shell` command runs inside (`sh -c _WITH_STATUS sh WORDS...`): the words, then
# the marker with their exit status, the last thing on stdout.
EXIT_MARKER = "edgecompress-exit-status:"
_WITH_STATUS = '"$@"; echo "' + EXIT_MARKER + '$?"'


def cpu_mask(cpus: list[int]) -> str:
    """taskset's hex mask for a CPU list: [4, 5, 6, 7] -> 'f0'."""
    if not cpus:
        raise ConfigError("adb: [hardware] big_cores is not set; the adb runner pins the benchmark to the "
                          "phone's big cores: list them, e.g. big_cores = [4, 5, 6, 7]")
    return format(sum(1 << c for c in set(cpus)), "x")


def device_states(adb_devices: str) -> dict[str, str]:
    """Serial -> state from `adb devices` ("device" when ready; "offline", "unauthorized", ...)."""
    out = {}
    for ln in adb_devices.splitlines()[1:]:
        words = ln.split()
        if len(words) >= 2 and not ln.startswith("*"):  # "* daemon started successfully"
            out[words[0]] = words[1]
    return out


_STATE_HINT = {"unauthorized": "accept the USB-debugging prompt on the phone",
               "offline": "reconnect it, or run `adb kill-server`",
               "no permissions": "check the udev rules for the phone"}


def _said(*texts: str) -> str:
    """The last non-empty line of what a command printed ('' if nothing), its last 300
    characters: adb and the phone's tools name the paths first and the reason last."""
    lines = [ln.strip() for text in texts for ln in text.splitlines() if ln.strip()]
    why = lines[-1] if lines else ""
    return why if len(why) <= 300 else "..." + why[-300:]


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

    def shell(self, words: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run `words` on the phone. `returncode` is the command's own exit status (from the
        marker it echoes, whatever adb's shell protocol), `stdout` its output without the marker,
        `stderr` what adb kept apart (nothing over v1, where it is in stdout). No marker: the
        phone's shell never finished the command, a ValidationError."""
        proc = self._run(self.shell_argv(["sh", "-c", _WITH_STATUS, "sh", *words]), what, timeout)
        marks = list(re.finditer(re.escape(EXIT_MARKER) + r"(\d+)", proc.stdout))
        if not marks:
            said = _said(proc.stderr, proc.stdout) or f"adb exit code {proc.returncode}"
            raise ValidationError(f"adb {self.name}: {what}: the device's shell returned no exit status ({said})")
        status = marks[-1]
        out = proc.stdout[:status.start()] + proc.stdout[status.end():]
        return subprocess.CompletedProcess(proc.args, int(status.group(1)), out.replace("\r\n", "\n"),
                                           proc.stderr.replace("\r\n", "\n"))

    def _run(self, argv: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"adb {self.name}: {what} timed out") from None
        err = (proc.stderr or "").strip()
        if "no devices/emulators found" in err or "device offline" in err or \
                ("device" in err and "not found" in err):
            raise DeviceError(f"adb {self.name}: no device attached ({err.splitlines()[-1]}); "
                                  "connect one or validate against an estimate")
        return proc

    @classmethod
    def attached(cls, profile: TargetProfile) -> AdbDevice:
        """The profile's phone, checked to be in `adb devices`."""
        dev = cls(profile.connection, profile.hardware, profile.name)
        dev.check_attached()
        return dev

    def probe(self, timeout: float = 20) -> str:
        """Why the wanted phone is not usable ('' if it is): the profile's `serial` in another
        state (offline, unauthorized), none ready, adb hung."""
        try:
            text = self._run([self.adb, "devices"], "listing devices", timeout).stdout
        except ValidationError as e:  # `adb devices` hung, or adb said there is no device
            return str(e)
        states = device_states(text)
        ready = [d for d, st in states.items() if st == "device"]
        want = [self.serial] if self.serial else list(states)
        for serial in want:  # a phone adb sees but cannot use: say which and why
            state = states.get(serial, "device")
            if state != "device" and (self.serial or not ready):
                hint = _STATE_HINT.get(state, "reconnect it")
                return f"adb {self.name}: phone {serial} is {state} in `adb devices`; {hint}"
        if not ready or (self.serial and self.serial not in ready):
            w = f" {self.serial}" if self.serial else ""
            return (f"adb {self.name}: no device{w} attached (`adb devices` lists "
                    f"{', '.join(ready) or 'none'}); connect one or use an estimate")
        return ""

    def check_attached(self, timeout: float = 20) -> None:
        problem = self.probe(timeout)
        if problem:
            raise DeviceError(problem)

    def copy(self, verb: str, source: str, dest: str, what: str) -> None:
        """`adb push` / `adb pull`: adb's own exit code (no remote shell involved)."""
        proc = self._run([*self.base(), verb, source, dest], what)
        if proc.returncode != 0:
            why = _said(proc.stderr, proc.stdout) or f"adb exit code {proc.returncode}"
            raise ValidationError(f"adb {self.name}: {what} failed ({why})")

    def push(self, local: Path, remote: str) -> None:
        self.copy("push", str(local), remote, f"push {local.name}")

    def missing_benchmark_model(self, where: str) -> RuntimeMissingError:
        return RuntimeMissingError(f"{where}: {self.benchmark_model} not on the device "
                                   "(push LiteRT's benchmark_model there)")

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
        pinned = replace(req, cpus=self.bench_cpus(threads))
        return [[*pin, *staged(pinned, self.run_dir).command(self.python)]]


class AdbRunner:
    name = "adb"
    # What AdbDevice reads from [connection]; profile.py checks a profile's table against it.
    connection_keys: ClassVar[dict[str, Any]] = {
        "adb": _text, "serial": _text, "remote_dir": _text, "benchmark_model": _text,
        "mode": _choice("benchmark_model", "bench.py"), "python": _text, "command_timeout_s": _positive,
    }

    def attached(self, profile: TargetProfile) -> bool:
        """The profile's phone is in `adb devices`, asked with the profile's own adb (with
        `adb = "/opt/sdk/adb"` off PATH an attached phone was estimated instead of measured).

        A profile that names its phone (`serial`) means that phone, as an ssh profile's `host`
        means that board: it is never estimated, and the preflight says why it cannot be used
        (offline, unauthorized, adb hung: exit 3). It was estimated, exit 0, without a word."""
        if str(profile.connection.get("serial") or "").strip():
            return True
        try:
            problem = AdbDevice(profile.connection, profile.hardware, profile.name).probe(timeout=10)
        except (RuntimeMissingError, OSError):  # no adb (no phone), adb broken
            return False
        if problem and ("phone " in problem or "timed out" in problem):
            # a phone adb sees but cannot use, or adb hung: estimated, but not without a word
            print(f"note: {problem}; estimating instead", file=sys.stderr)
        return not problem

    def preflight(self, profile: TargetProfile) -> None:
        """Before any work: adb present, the phone attached, big cores listed and the benchmark
        program on the phone (one clear error, not a report whose every row failed)."""
        dev = AdbDevice.attached(profile)
        cpu_mask(dev.big_cores)
        if dev.mode == "benchmark_model":
            if dev.shell(["ls", dev.benchmark_model], "looking for benchmark_model", 60).returncode != 0:
                raise dev.missing_benchmark_model(f"adb {profile.name}")
        else:
            proc = dev.shell([dev.python, "-c", "import numpy"], "checking python", 60)
            if proc.returncode != 0:
                said = _said(proc.stderr, proc.stdout) or "no message"
                raise RuntimeMissingError(f"adb {profile.name}: {dev.python} with numpy does not run on the "
                                          f"device (exit {proc.returncode}: {said})")

    def run(self, req: BenchRequest, profile: TargetProfile | None = None) -> dict[str, Any]:
        if profile is None:
            raise ConfigError("adb runner: needs a target profile")
        dev = AdbDevice.attached(profile)
        limit = time_limit(req, dev.timeout if dev.timeout_set else None)
        proc = dev.shell(["mkdir", "-p", dev.run_dir], "mkdir", 60)
        if proc.returncode != 0:
            why = _said(proc.stderr, proc.stdout) or f"exit {proc.returncode}"
            raise DeviceError(f"adb {dev.name}: mkdir failed ({why})")
        finished = False  # the benchmark returned: nothing of ours can still run on the phone
        try:
            # benchmark_model reads the .tflite alone; bench.py also needs its sibling files (an
            # IR's .bin: it was left behind) and the inputs
            stage = staged(req, dev.run_dir)
            for f in stage.files if dev.mode == "bench.py" else [Path(req.artifact)]:
                dev.push(f, f"{dev.run_dir}/")
            (cmd,) = dev.commands(req)
            start = time.monotonic()
            # Killed on the phone at `limit` (toybox timeout), and by the cleanup if we gave up first.
            proc = dev.shell(["sh", "-c", _GUARD, "sh", dev.run_dir, str(limit), *cmd], "benchmark", limit + 30)
            finished = True
            where = f"adb {profile.name} ({Path(req.artifact).name})"
            if proc.returncode in _KILLED and time.monotonic() - start >= limit - 1:
                raise ValidationError(f"{where}: benchmark timed out after {limit} s (killed on the device)")
            if dev.mode == "benchmark_model":
                if proc.returncode != 0 and "not found" in (proc.stdout + proc.stderr):
                    raise dev.missing_benchmark_model(where)
                result = parse_benchmark_model(proc.stdout + "\n" + proc.stderr)
                result["runtime"] = {"name": "litert-benchmark_model", "version": "device",
                                     "settings": {"num_threads": req.threads, "xnnpack": True,
                                                  "taskset": cpu_mask(dev.big_cores)}}
            else:
                # over shell protocol v1 bench.py's stderr (its traceback) arrives in stdout
                result = parse_bench_output(proc.stdout, proc.stderr or proc.stdout, proc.returncode, where)
                if stage.outputs and req.outputs:
                    dev.copy("pull", stage.outputs, str(req.outputs), "pull outputs")
                    result["outputs"] = str(req.outputs)
            result["device"] = {"transport": "adb", "serial": dev.serial, "pinned": dev.big_cores}
            return result
        finally:
            # Only this run's folder; the kill only when the benchmark did not return (its pid
            # could be another process's by now).
            cleanup = ["rm", "-rf", dev.run_dir] if finished else ["sh", "-c", _KILL_AND_REMOVE, "sh", dev.run_dir]
            with contextlib.suppress(ValidationError):  # a failed cleanup leaves a folder, not a wrong figure
                dev.shell(cleanup, "cleanup", 60)


RUNNERS.register("adb", AdbRunner())
