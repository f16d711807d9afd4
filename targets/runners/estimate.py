"""Estimate runner: no device, no execution; latency from the calibrated cost model.

Used for a profile whose `runner = "estimate"`, and in place of the ssh / adb runner when the
profile's device is not attached (no host configured; no phone in `adb devices`). Its results carry
`latency_kind = "estimated"`, and no memory, accuracy or drift (nothing ran).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError
from edgecompress.targets.runners import RUNNERS

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest

def device_attached(profile: TargetProfile) -> bool:
    """Whether the profile's device can be reached by its own runner (cheap checks, no login): the
    runner's `attached(profile)`; a runner without one (local, qemu) is always there."""
    from edgecompress.targets.runners import RUNNERS

    runner = RUNNERS.get(profile.runner) if profile.runner in RUNNERS else None
    attached = getattr(runner, "attached", None)
    return bool(attached(profile)) if attached is not None else True


def runner_name_for(profile: TargetProfile) -> str:
    """The runner that serves `profile` here: its own when its device is attached, else the
    estimate. Decided once per profile object (a command gets its profile once)."""
    if profile.resolved_runner is None:
        profile.resolved_runner = profile.runner if device_attached(profile) else "estimate"
    return profile.resolved_runner


def preflight(profile: TargetProfile) -> str:
    """Check, before any work, that the runner `profile` resolves to can run at all (device
    reachable, phone attached, rootfs built, [hardware] figures present): one clear error instead
    of a report whose every row failed. Returns that runner's name."""
    from edgecompress.targets.runners import RUNNERS

    name = runner_name_for(profile)
    if name == "local":
        _check_local_isa(profile)
    check = getattr(RUNNERS.get(name, f"target {profile.name}:"), "preflight", None)  # the profile's runner
    if check is not None:
        check(profile)
    profile.preflight_passed = True  # validate() skips its own check of a profile checked here
    return name


_ISA = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def _check_local_isa(profile: TargetProfile) -> None:
    """A local profile runs on this machine: one whose `isa` names another (an aarch64 "Raspberry
    Pi" profile with runner = "local") had this x86 host's figures reported as the Pi's."""
    import platform

    here = _ISA.get(platform.machine().lower(), platform.machine().lower())
    said = _ISA.get(profile.isa.lower(), profile.isa.lower())
    if said and said != here:
        raise ConfigError(f"target {profile.name}: runner = \"local\" measures this machine ({here}), but isa = "
                          f"{profile.isa!r}; use the ssh / adb / qemu runner for that device")


def estimate_threads(requested: int, profile: TargetProfile) -> int:
    """The threads an estimate assumes: the requested ones, at most one per big core (or per core
    when the profile lists no big cores): the cost model spreads work over that many cores."""
    from edgecompress.targets.estimate import _hw

    limit = len(profile.hardware.get("big_cores") or []) or int(_hw(profile, "cores"))
    return max(1, min(int(requested), limit))


def _format_of(req: BenchRequest) -> str:
    """The format of a request made without one (BenchRequest.for_artifact sets it): the one its
    runtime runs with the artifact's suffix, else the first its runtime runs."""
    from edgecompress.exporters import FORMATS

    suffix = Path(req.artifact).suffix.lower()
    runs = [(name, f) for name, f in FORMATS if f.runtime == req.runtime]
    return next((name for name, f in runs if f.suffix.lower() == suffix), runs[0][0] if runs else req.runtime)


class EstimateRunner:
    name = "estimate"
    connection_keys = None  # reads no [connection] (a device's keys may stay; other keys are typos)

    def attached(self, profile: TargetProfile) -> bool:
        return False  # no device at all

    def preflight(self, profile: TargetProfile) -> None:
        """The [hardware] figures an estimate needs, checked before any export (a profile missing
        one exported and wrote everything, then failed every row)."""
        from edgecompress.targets.estimate import _hw

        if not profile.hardware.get("big_cores"):
            _hw(profile, "cores")
        for key in ("peak_fp32_gops_per_core", "peak_int8_gops_per_core", "memory_bandwidth_gbs"):
            _hw(profile, key)

    def run(self, req: BenchRequest, profile: TargetProfile | None = None) -> dict[str, Any]:
        from edgecompress.targets.estimate import estimate_artifact

        if profile is None:
            raise ConfigError("estimate runner: needs a target profile with [hardware] figures")
        fmt = req.format or _format_of(req)
        # The requested threads (it was the profile's 4 big cores whenever --threads was 1, so
        # `--threads 1` read faster than `--threads 2`), capped at the cores there are.
        threads = estimate_threads(req.threads, profile)
        result = estimate_artifact(req.artifact, fmt, req.precision or "fp32", profile, threads,
                                   _sample_shapes(req.inputs))
        result["threads"] = threads  # what the figure assumes, as bench.py reports what it used
        result["cpus"] = profile.default_cpus(threads)  # the cores a device run would be pinned to
        if threads != req.threads:
            result["runtime"]["settings"]["threads_requested"] = req.threads
        # --batch N: the cost model is fit on batch-1 figures only; said per batch (the report's
        # "Not timed" note), not dropped while settings.batches still listed N
        for b in req.batches:
            if b != 1:
                result["latency_ms"][str(b)] = {"error": "not estimated: the cost model is fit on batch-1 "
                                                         "figures only"}
        return result


RUNNERS.register("estimate", EstimateRunner())


def _sample_shapes(inputs: Path | None) -> list[tuple[int, ...]]:
    """The batch-1 shape of each input in the request's inputs file (.npy: one input, .npz: one
    per array): what an ONNX file's symbolic dims stand for in the estimate."""
    import numpy as np

    if inputs is None or not Path(inputs).is_file():
        return []
    if Path(inputs).suffix == ".npz":
        with np.load(inputs) as z:
            return [(1, *z[k].shape[1:]) for k in z.files]
    return [(1, *np.load(inputs, mmap_mode="r").shape[1:])]
