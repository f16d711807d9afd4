"""The Report: one JSON-able object per run; Markdown, HTML and plots are rendered from it."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError, InputFileError, Surface
from edgecompress.errors import surface as _surface_now

# 2: artifact paths relative to the report's folder; `gates` (--fail-on outcomes); NaN written as null
SCHEMA_VERSION = 2
_PACKAGES = ("edgecompress", "torch", "torchao", "onnx", "onnxruntime", "openvino", "nncf",
             "litert-torch", "ai-edge-litert", "torch-pruning", "transformers", "numpy")


def versions() -> dict[str, str]:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    if commit := _source_commit():
        out["edgecompress commit"] = commit
    return out


def _source_commit() -> str:
    """The checkout's commit (+ "-dirty") when edgecompress runs from a git clone: the version
    number stays 0.1.0 across commits, so a report could not say which code wrote it."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("-dirty" if dirty else "")


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((ln for ln in f if ln.startswith("flags")), "").partition(":")[2].split())
    except OSError:
        return set()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30  # GiB (the key predates the label)
    return {"hostname": platform.node(), "cpu": cpu, "arch": platform.machine(),
            "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "isa_extensions": isa,
            "os": platform.platform(), "python": sys.version.split()[0],
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed under us
        return ""


@dataclass
class Report:
    """What report.json holds: the model, the target, one row per artifact (`artifact_row`), the
    reference's metrics, the data used, the compression steps, the command, the machine and the
    versions; `write_report` renders it, `Report.load` reads it back."""

    model: dict[str, Any]
    target: str
    artifacts: list[dict[str, Any]]
    reference: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # compression passes, in order
    command: str = ""
    # where the command ran: its relative paths (--calib, --out, data sources) are relative to it
    cwd: str = field(default_factory=lambda: _cwd())
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    machine: dict[str, Any] = field(default_factory=machine)
    versions: dict[str, str] = field(default_factory=versions)
    schema_version: int = SCHEMA_VERSION
    baseline: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)  # --fail-on: gate, artifact, value, passed
    # who ran it: "cli", "recipe" (`edgecompress run`, run_recipe), "compress" or "python", the surface
    # it was built under; its hints name that surface's option (--eval / data.eval / eval). "" in a report
    # written before the field: `spoken_as` guesses from the command.
    surface: str = field(default_factory=_surface_now)

    @classmethod
    def from_measurements(cls, measurements: Any, *, model: dict[str, Any], target: str | None = None,
                          **fields: Any) -> Report:
        """The Measurements -> Report stage: one `artifact_row` per Measurement (or a single one),
        the other fields (reference, data, steps, command, ...) as given. What `run_export`,
        `edgecompress validate` and the recipe runner build, for a caller running the stages alone."""
        ms = [measurements] if hasattr(measurements, "to_dict") or isinstance(measurements, dict) else measurements
        if not isinstance(ms, (list, tuple)):
            raise ConfigError("Report.from_measurements: measurements must be a list of Measurements (validate(...)), "
                              f"got {type(measurements).__name__}")
        for i, m in enumerate(ms):
            # an Artifact has to_dict too, and was taken for a Measurement (KeyError: 'artifact')
            if not isinstance(m.get("artifact") if isinstance(m, dict) else getattr(m, "artifact", None), dict):
                hint = " (an export: measure it with validate([...]) first)" if type(m).__name__ == "Artifact" else ""
                raise ConfigError(f"Report.from_measurements: measurements[{i}] must be a Measurement (validate(...)) "
                                  f"or its to_dict(), got {type(m).__name__}{hint}")
        # the target the Measurements were taken on (a copied target="x86-local" headed a report of
        # rpi5 estimates); one of several when they span several targets
        theirs = sorted({t for m in ms if (t := m.get("target") if isinstance(m, dict) else m.target)})
        if target is None:
            if len(theirs) != 1:
                raise ConfigError("Report.from_measurements: the measurements are of targets "
                                  f"{', '.join(theirs) or 'none'}: name the report's target=")
            target = theirs[0]
        elif theirs and target not in theirs and not str(target).endswith(".toml"):  # a profile file: its name
            raise ConfigError(f"Report.from_measurements: target {target!r}, but the measurements are of "
                              f"{', '.join(theirs)}")
        return cls(model=model, target=target, artifacts=[artifact_row(m) for m in ms], **fields)

    def verdict(self) -> dict[str, Any]:
        """The report's outcome in one place, for CI scripts (written to report.json as `verdict`):
        they had to recombine artifact statuses, `gates` and `baseline` themselves. `passed` is
        false when an artifact failed, a --fail-on gate failed, or a baseline regression did under
        --fail-on-regression (`regressions_fail`); otherwise regressions are counted, not judged."""
        failed = [a for a in self.artifacts if a.get("status") == "failed"]
        gates = [g for g in self.gates if not g.get("passed", True)]
        regressions = len(self.baseline.get("regressions", []))
        # validate stores the flag; a report built elsewhere may only carry it in its command
        strict = bool(self.baseline.get("fail_on_regression")) or "--fail-on-regression" in self.command.split()
        # a baseline sharing no artifact and metric with the run (another target) compared nothing:
        # under --fail-on-regression that passed as "no regression"
        vacuous = self.baseline.get("regressions") is not None and self.baseline.get("compared") == []
        return {"passed": not failed and not gates and not (strict and (regressions or vacuous)),
                "failed_artifacts": len(failed), "failed_gates": len(gates), "regressions": regressions,
                "regressions_fail": strict, "baseline_missing": len(self.baseline.get("missing", [])),
                **({"baseline_compared": not vacuous} if self.baseline.get("regressions") is not None else {}),
                # what the latencies are: an estimated target's rows are "ok" and pass, and only each
                # row's latency_kind said that nothing ran on the device
                "latency": _latency_summary({str(k) for a in self.artifacts if (k := a.get("latency_kind"))})}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        known = set(cls.__dataclass_fields__)
        return cls(**{"surface": "", **{k: v for k, v in d.items() if k in known}})

    def spoken_as(self) -> Surface:
        """The surface the report's hints are worded for: `surface`, or for an older report.json
        (no such field) its command's (`edgecompress run` a recipe, `edgecompress compress` its
        flags, another `edgecompress` command the CLI, anything else Python)."""
        if self.surface in ("cli", "recipe", "python", "compress"):
            return self.surface  # type: ignore[return-value]
        if self.command.startswith("edgecompress run "):
            return "recipe"
        if self.command.startswith("edgecompress compress "):
            return "compress"
        return "cli" if self.command.startswith("edgecompress ") else "python"

    @classmethod
    def load(cls, path: Path | str) -> Report:
        try:
            from edgecompress.fileio import json_loads

            obj = json_loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(obj, dict) or not isinstance(obj.get("artifacts", []), list):
                raise TypeError("not a JSON object with an 'artifacts' list")
            # what comparing with it reads as objects: `"artifacts": [5]` or `"model": 5` were an
            # AttributeError traceback (a baseline or report edited by hand, another tool's JSON)
            odd = next((f"'artifacts' holds {type(a).__name__}" for a in obj.get("artifacts", [])
                        if not isinstance(a, dict)), None) or next(
                (f"'{k}' is {type(obj[k]).__name__}" for k in ("model", "reference", "baseline", "data")
                 if obj.get(k) is not None and not isinstance(obj[k], dict)), None)
            if odd:
                raise TypeError(f"{odd}, not an object")
            # what every report.json holds: without them, say what the file is (an export's
            # manifest.json gave "Report.__init__() missing 2 required positional arguments")
            missing = [k for k in ("model", "target", "artifacts") if k not in obj]
            if missing:
                what = " (an export's manifest.json: pass the report.json beside it)" if "files" in obj or \
                    Path(path).name == "manifest.json" else ""
                raise TypeError(f"no {', '.join(repr(k) for k in missing)} key{'s' if len(missing) > 1 else ''}{what}")
            if isinstance(obj.get("schema_version"), int) and obj["schema_version"] > SCHEMA_VERSION:
                raise TypeError(f"schema_version {obj['schema_version']}, newer than this edgecompress "
                                f"reads ({SCHEMA_VERSION}); upgrade edgecompress")
            report = cls.from_dict(obj)
            # artifact paths are relative to the report's folder (write_report): made usable from here
            for row in report.artifacts:
                if isinstance(row, dict) and row.get("path") and not Path(row["path"]).is_absolute():
                    row["path"] = str(Path(path).parent / row["path"])
            return report
        except FileNotFoundError:
            raise InputFileError(f"{path}: no such report") from None
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise InputFileError(f"{path}: not a valid edgecompress report.json ({e})") from e
        except OSError as e:
            raise InputFileError(f"{path}: cannot read ({e.strerror})") from None


_BATCH1_KEYS = ("p50", "p90", "p99", "mean", "cpu_p50", "io_ms", "p50_is_mean", "p50_rounds")


def _latency_summary(kinds: set[str]) -> str:
    """"measured", "estimated" or "emulated" when every timed row is that, "mixed", or "none"."""
    return "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def artifact_row(measurement: Any, batch: int = 1) -> dict[str, Any]:
    """Flatten a Measurement (or its `to_dict()`) into the report's artifact entry (batch-1
    latency up front)."""
    if hasattr(measurement, "to_dict"):  # artifact_row(m) failed with "not subscriptable"
        measurement = measurement.to_dict()
    art = measurement["artifact"]
    lat = measurement.get("latency_ms", {})
    first = lat.get(str(batch)) or (next(iter(lat.values())) if lat else {})
    return {
        "format": art["format"], "precision": art["precision"], "path": art["path"],
        "size_bytes": art["size_bytes"], "sha256": art["sha256"],
        "latency_ms": {k: first[k] for k in _BATCH1_KEYS if k in first},
        # None when nothing was timed (--no-validate, a failed file): "measured" told a script
        # filtering on it that a latency existed
        "latency_kind": measurement.get("latency_kind", "measured") if first else None,
        "latency_by_batch": lat,
        "memory_mb": measurement.get("memory_mb", {}),
        "metrics": measurement.get("metrics", {}), "drift": measurement.get("drift", {}),
        "status": measurement.get("status", "ok"), "error": measurement.get("error", ""),
        "target": measurement.get("target", ""), "runtime": measurement.get("runtime", {}),
        "settings": measurement.get("settings", {}),
        "io": {"inputs": art.get("inputs", []), "outputs": art.get("outputs", [])},
        "details": art.get("details", {}),
    }
