"""Artifacts + a target -> Measurements: latency, memory, accuracy and drift vs the fp32 reference."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import (
    ConfigError,
    DataError,
    DeviceError,
    EdgeCompressError,
    ValidationError,
    first_line,
    opt,
)
from edgecompress.targets.metrics import check_finite_outputs, drift, task_metrics
from edgecompress.targets.profile import TargetProfile, get_target
from edgecompress.targets.runners import RUNNERS
from edgecompress.targets.runners.local import BenchRequest

if TYPE_CHECKING:
    import torch

    from edgecompress.data import Dataset
    from edgecompress.exporters import Artifact
    from edgecompress.models import ModelSpec


@dataclass
class ValidateSettings:
    """How artifacts are timed: `threads` pinned to `cpus` (default: the target's first big cores),
    each batch size of `batches` timed `runs` times after `warmup`, in `rounds` interleaved fresh
    processes (each figure the median of the rounds'); outputs computed in chunks of `eval_batch`."""

    threads: int = 1
    cpus: list[int] | None = None  # default: the profile's first `threads` big cores
    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    runs: int = 100
    # Latency is measured in `rounds` interleaved passes over all artifacts (a fresh process per
    # artifact and round) and each percentile is the median of the rounds'. Measured one after the
    # other, the fp32 and int8 files of a format met different host speeds: single runs of the demo
    # read ORT int8 1.93-2.12x on a 2-vCPU Xeon VM (benchmarks/RESULTS-spine.md).
    rounds: int = 3
    eval_batch: int = 8
    # OpenVINO: "f32" pins fp32 execution for fp32/fp16 IRs (it runs bf16 by default on this CPU).
    openvino_fp32_hint: str = "f32"

    def __post_init__(self) -> None:
        # Checked here, for the CLI, recipes and Python alike: `runs 0` failed later inside the
        # benchmark ("list index out of range"), `threads 0` or `batch -3` reached the runtimes.
        if isinstance(self.batches, int) or not isinstance(self.batches, tuple | list):
            raise ConfigError(f"validation settings: batches {self.batches!r}: a tuple of batch sizes, e.g. (1, 8)")
        self.batches = tuple(self.batches)
        if self.cpus is not None and not (isinstance(self.cpus, list | tuple) and self.cpus and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.cpus)):
            raise ConfigError(f"validation settings: cpus {self.cpus!r}: a list of CPU numbers, e.g. [0, 1]")
        if self.openvino_fp32_hint not in ("f32", "bf16", "f16", ""):  # a typo failed every OpenVINO row
            raise ConfigError(f"validation settings: openvino_fp32_hint {self.openvino_fp32_hint!r}: one of "
                              "'f32', 'bf16', 'f16' ('' leaves OpenVINO's default)")
        bad = [f"{name} {value}" for name, value, low in (
            ("threads", self.threads, 1), ("runs", self.runs, 1), ("warmup", self.warmup, 0),
            ("rounds", self.rounds, 1),
            ("eval_batch", self.eval_batch, 1), *(("batch", b, 1) for b in self.batches))
            if not isinstance(value, int) or isinstance(value, bool) or value < low]
        if bad:
            raise ConfigError(f"validation settings: {', '.join(bad)} (threads, runs, rounds, batch >= 1; "
                              "warmup >= 0)")


@dataclass
class Measurement:
    """One artifact on one target. `latency_ms` maps a batch size ("1", "8") to ms figures (p50,
    p90, p99, mean, min, cpu_p50, io_ms, throughput_per_s, runs, p50_rounds); `latency_kind` says
    whether they were measured, estimated or emulated. `memory_mb`: peak_rss of the inference
    process. `metrics` (top1, top5 or spearman) need labelled eval data; `drift` (top1_agreement,
    cosine, cosine_min, max_abs, mean_abs) needs a reference. `status` is ok or failed (`error`)."""

    artifact: dict[str, Any]
    target: str
    status: str = "ok"  # ok | failed
    error: str = ""
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_kind: str = "measured"  # measured | estimated | emulated (qemu-user: never a device figure)
    memory_mb: dict[str, float] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hash_of(art: Artifact) -> str:
    """The Artifact's files hashed by the exporters' rule."""
    from edgecompress.exporters.api import artifact_files, artifact_hash

    files = artifact_files(art.path, art.format)
    if not all(f.exists() for f in files):
        raise ValidationError(f"{art.path}: missing file(s) {', '.join(str(f) for f in files if not f.exists())}")
    return artifact_hash(files)


def _random_inputs(art: Artifact, folder: Path, i: int) -> Path:
    """A one-sample input for latency-only runs (no eval data), from the artifact's I/O contract.

    bench.py takes NCHW floats and converts them itself (NHWC layout, int8 quantization).
    """
    rng = np.random.default_rng(0)
    arrays = {}
    for t in art.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in t.shape]
        if t.layout == "NHWC" and len(shape) == 4:
            shape = [shape[0], shape[3], shape[1], shape[2]]
        if takes_ids(t):  # token ids, masks; ids below the model's vocabulary (an Embedding's rows)
            # (an .onnx of several inputs: each input's own table, `input_vocab`)
            bound = (art.details.get("input_vocab") or {}).get(t.name) or art.details.get("vocab_size") or 100
            high = 2 if "mask" in t.name else min(100, int(bound))
            arrays[t.name] = rng.integers(0, high, shape).astype(t.dtype)
        else:
            arrays[t.name] = rng.standard_normal(shape).astype(np.float32)
    if len(arrays) == 1:
        path = folder / f"random{i}.npy"
        np.save(path, next(iter(arrays.values())))
    else:
        path = folder / f"random{i}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]  # tensor names: mypy fears one is allow_pickle
    return path


def _head(path: Path, n: int, folder: Path) -> Path:
    """The first `n` samples of an inputs file, as a new file in `folder`."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            arrays = {k: z[k][:n] for k in z.files}
        head = folder / "head.npz"
        np.savez(head, **arrays)
    else:
        head = folder / "head.npy"
        np.save(head, np.load(path, mmap_mode="r")[:n])
    return head


def fixed_batch(art: Artifact) -> int | None:
    """The batch an ONNX / OpenVINO file fixes (a .pt2 exported at batch 1), else None: such a
    file is timed and evaluated at that batch only. A runtime that resizes its inputs itself
    (LiteRT, `Format.resizes_inputs`) has none."""
    from edgecompress.exporters import FORMATS

    if FORMATS.get(art.format).resizes_inputs or not art.inputs or not art.inputs[0].shape:
        return None
    first = art.inputs[0].shape[0]
    return first if isinstance(first, int) and first > 0 else None


def _inputs_file(data: Dataset, folder: Path) -> Path:
    if isinstance(data.x, dict):
        path = folder / "inputs.npz"
        np.savez(path, **data.x)  # type: ignore[arg-type]  # tensor names: mypy fears one is allow_pickle
    else:
        path = folder / "inputs.npy"
        np.save(path, data.x)
    return path


def _as_artifacts(artifacts: Sequence[Artifact | str | os.PathLike[str]] | Artifact | str | os.PathLike[str],
                  ) -> list[Artifact]:
    """validate's `artifacts` as a list of Artifacts: files on disk (an export folder, or loose
    files) have their format and precision read back, as `edgecompress validate` takes them."""
    from edgecompress.exporters import Artifact as _Artifact

    if isinstance(artifacts, _Artifact | str | os.PathLike):  # "'Artifact' object is not iterable"
        artifacts = [artifacts]
    resolved: list[Any] = []
    for a in artifacts:
        if isinstance(a, str | os.PathLike):
            # a str was read as an Artifact ("unknown format <built-in method format of str object>")
            from edgecompress.targets.device_report import load_artifacts

            resolved.extend(load_artifacts([Path(a)])[0])
        elif isinstance(a, _Artifact):
            resolved.append(a)
        else:
            raise ConfigError(f"validate: expected Artifacts (export(...)) or artifact paths, got {type(a).__name__}")
    return resolved


def takes_ids(t: Any) -> bool:
    """An artifact input (TensorInfo) of integer ids (token / class indices): an integer dtype with
    no quantization scale. A full-int8 .tflite's int8 input has one: float samples, quantized by
    the runner."""
    return str(t.dtype).startswith(("int", "uint")) and t.scale is None


def _id_bounds(artifacts: Sequence[Artifact]) -> dict[str, int]:
    """The rows of the table each input of ids indexes, by input name, as the exports recorded them:
    the input's own `input_vocab`, else the model's `vocab_size` (the bound `_random_inputs` keeps
    its ids below); the smallest where files differ. An input with neither is left out."""
    bounds: dict[str, int] = {}
    for a in artifacts:
        for t in a.inputs:
            rows = (a.details.get("input_vocab") or {}).get(t.name) or a.details.get("vocab_size")
            if rows and takes_ids(t):
                bounds[t.name] = min(int(rows), bounds.get(t.name, int(rows)))
    return bounds


def _checked_eval_data(eval_data: Dataset, artifacts: Sequence[Artifact] = ()) -> Dataset:
    """The evaluation set as the runners take it (float32 samples in memory; integer ids for
    artifacts that take ids, inside the tables they index), or a DataError: NaN samples came back
    as "NaN outputs" of every artifact, an empty set as ZeroDivisionError, an id beyond its table
    as ONNX Runtime's Gather error in every artifact's row."""
    from edgecompress.data import Dataset
    from edgecompress.data.datasets import as_float32, as_ids, check_in_memory, match_inputs

    if not isinstance(eval_data, Dataset):
        raise ConfigError("validate: eval_data must be a Dataset (edgecompress.load_data(path, array, "
                          f"tensor or DataLoader)), got {type(eval_data).__name__}")
    if len(eval_data) == 0:
        raise DataError(f"evaluation data {eval_data.source}: holds no samples")
    check_in_memory(eval_data, f"evaluation data {eval_data.source}")
    if isinstance(eval_data.x, dict):
        # several inputs: each as the files take it (`match_inputs`): a bool mask cast (the runners
        # cast integers to their file's type, not bools), a float array under an input of ids
        # refused here, not reported as every artifact's "benchmark failed" (ORT's type error)
        dtypes: dict[str, str] = {}
        for a in artifacts:
            for t in a.inputs:
                if takes_ids(t) or t.dtype == "float32":
                    dtypes.setdefault(t.name, t.dtype)
        return replace(eval_data, x=match_inputs(eval_data.x, dtypes, f"evaluation data {eval_data.source}",
                                                 _id_bounds(artifacts)))
    ids = [a for a in artifacts if a.inputs and takes_ids(a.inputs[0])]
    if not isinstance(eval_data.x, dict) and ids and len(ids) == len(artifacts):
        # [audit #27] a model of integer ids: the runners feed each file its own integer type
        if eval_data.x.dtype.kind not in "iu":
            raise DataError(f"evaluation data {eval_data.source}: dtype {eval_data.x.dtype} but {ids[0].path} "
                            f"takes {ids[0].inputs[0].dtype} ids; save them as integers (x.astype(np.int64))")
        bounds = _id_bounds(ids)
        if rows := [bounds[a.inputs[0].name] for a in ids if a.inputs[0].name in bounds]:
            # the range only (calibration's check): the ids stay in their own dtype
            as_ids(eval_data.x, str(eval_data.x.dtype), f"evaluation data {eval_data.source}", min(rows))
        return eval_data
    if not isinstance(eval_data.x, dict) and eval_data.x.dtype != np.float32:
        if eval_data.x.dtype.kind != "f":  # ORT failed on it, OpenVINO and LiteRT cast it
            raise DataError(f"evaluation data {eval_data.source}: dtype {eval_data.x.dtype}; the runners "
                            "take preprocessed float32 samples"
                            + (f" (and {ids[0].path} takes ids: files of another model?)" if ids else ""))
        # ORT refused float64
        eval_data = replace(eval_data, x=as_float32(eval_data.x, f"evaluation data {eval_data.source}"))
    return eval_data


def _as_reference(reference: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(reference, np.ndarray):
        return reference
    if hasattr(reference, "detach"):  # a torch tensor: "'Tensor' object has no attribute 'astype'"
        return reference.detach().cpu().float().numpy()
    raise ConfigError(f"validate: reference must be a numpy array (reference_outputs(...)), got "
                      f"{type(reference).__name__}")


def _measure(art: Artifact, req: BenchRequest, runner: Any, profile: TargetProfile, settings: ValidateSettings,
             eval_data: Dataset | None, reference: np.ndarray | None, task: str) -> Measurement:
    """One artifact's first round: latency, memory, and its outputs judged against `reference`; a
    failure becomes the row's status and one-line error."""
    fixed = fixed_batch(art)
    m = Measurement(artifact=art.to_dict(), target=profile.name,
                    settings={"threads": settings.threads, "cpus": req.cpus,
                              "batches": list(req.batches), "warmup": settings.warmup,
                              "runs": settings.runs, "rounds": 1})
    if fixed is not None:
        m.settings["fixed_batch"] = fixed
        m.settings["batches_skipped"] = [b for b in settings.batches if b != fixed]
    try:
        if eval_data is not None and (why := _sample_mismatch(art, eval_data)):
            raise ValidationError(why)  # a runtime's own words were "XNNPack failed to reshape runtimeNode 5"
        if art.sha256 and _hash_of(art) != art.sha256:
            raise ValidationError(f"{art.path}: changed since export (sha256 differs from the "
                                  "Artifact's); refusing to report it as that artifact")
        res = runner.run(req, profile)
        m.latency_ms = res["latency_ms"]
        m.latency_kind = res.get("latency_kind", "measured")
        m.memory_mb = res["memory_mb"]
        m.runtime = res["runtime"]
        m.settings["threads"] = res.get("threads", settings.threads)  # an estimate caps them
        if res.get("device"):  # ssh / adb / qemu: where it ran, for the report's header
            device = {**res["device"], **(
                {"arch": res["machine"].get("arch")} if res.get("machine", {}).get("arch") else {})}
            # and what the profile says about it (soc, ram_gb); what the run saw wins
            device.update({k: v for k, v in profile.hardware_facts().items() if k not in device})
            m.runtime = {**m.runtime, "device": device}
        m.settings["cpus"] = res.get("cpus", req.cpus)
        m.settings["loadavg"] = res.get("machine", {}).get("loadavg")
        if m.latency_kind == "estimated":  # nothing ran: no timed runs, warm-up or rounds
            for key in ("warmup", "runs", "rounds"):
                m.settings.pop(key, None)
        if req.outputs is not None and res.get("outputs"):  # an estimate runs nothing
            outputs = np.load(req.outputs)
            # an Inf where the fp32 reference has the same one is the model's answer (masked logits)
            check_finite_outputs(outputs, f"{art.path}: outputs on the evaluation set", reference)
            if eval_data is not None:
                # top-1/5 for labelled images; STS Spearman for sentence pairs
                m.metrics = task_metrics(outputs, eval_data)
            if reference is not None:
                m.drift = drift(reference, outputs, classes=task != "embedding")
                _refuse_unfaithful_fp32(art, m.drift)
    except DeviceError:
        raise  # the device, not this artifact: every other one would fail the same way (exit 3)
    except EdgeCompressError as e:
        m.status, m.error = "failed", str(e)
    return m


def validate(artifacts: Sequence[Artifact | str | os.PathLike[str]] | Artifact | str | os.PathLike[str],
             target: str | TargetProfile = "x86-local",
             eval_data: Dataset | None = None, reference: np.ndarray | torch.Tensor | None = None,
             settings: ValidateSettings | None = None, progress: bool = True,
             task: str = "classification", no_reference: Collection[int] = ()) -> list[Measurement]:
    """Measure each artifact on `target`; compare its outputs on `eval_data` with `reference`.

    `task` is the model's (ModelSpec.task): `embedding` outputs get no top-1 agreement.
    `no_reference`: indices of artifacts not compared with `reference` (another model's files).

    A failing artifact gets status `failed` and its one-line error; the others still run.
    """
    from edgecompress.models.spec import TEXT_TASKS

    if task not in ("classification", *TEXT_TASKS):  # a typo was measured as classification
        raise ConfigError(f"validate: task {task!r}: one of classification, {', '.join(TEXT_TASKS)}")
    artifacts = _as_artifacts(artifacts)
    if settings is not None and not isinstance(settings, ValidateSettings):
        hint = " (wrap it: ValidateSettings(**settings))" if isinstance(settings, dict) else ""
        raise ConfigError(f"validate: settings must be a ValidateSettings, got {type(settings).__name__}{hint}")
    settings = settings or ValidateSettings()
    if eval_data is not None:
        eval_data = _checked_eval_data(eval_data, artifacts)
    if reference is not None:
        reference = _as_reference(reference)
    profile = get_target(target) if isinstance(target, str) else target
    # A profile whose device is not attached (no ssh host, no phone) is estimated, and says so.
    from edgecompress.targets.runners.estimate import runner_name_for

    # What the CLI checks before any work, from Python too: an OpenVINO file on rpi5 got an "ok"
    # estimate, and a missing device (qemu rootfs, offline Pi) became a "failed, measured" row
    # instead of the DeviceError (exit-3 class) the CLI raises.
    foreign = [a for a in artifacts if a.format not in profile.formats]
    if foreign:
        files = ", ".join(str(a.path) for a in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(f"validate: target {profile.name} runs {', '.join(profile.formats)}; not "
                          f"{', '.join(sorted({a.format for a in foreign}))} ({files}): validate only the "
                          "files of formats it runs")
    from edgecompress.targets.runners.estimate import preflight

    if not profile.preflight_passed:  # the CLI and the pipeline checked it before any work
        preflight(profile)
    runner_name = runner_name_for(profile)
    runner = RUNNERS.get(runner_name, f"target {profile.name}:")  # the profile's runner, not a flag
    if runner_name == "estimate" and eval_data is not None:
        print(f"note: target {profile.name} is estimated here (no device attached): nothing runs, so eval_data "
              "is not used", file=sys.stderr)
    # A device's big cores (CPUs 0..n-1 are a phone's LITTLE ones); this machine's first CPUs, since
    # x86-local's [hardware] describes the VM it was measured on, not the one running now.
    check_threads(profile, settings)
    if runner_name == "local":
        check_batch_memory(artifacts, settings)
    cpus = settings.cpus or (list(range(settings.threads)) if runner_name == "local"
                             else profile.default_cpus(settings.threads))
    out: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="edgecompress-val-") as td:
        inputs = _inputs_file(eval_data, Path(td)) if eval_data is not None else None
        bar = None
        if progress:
            from edgecompress.progress import bar as progress_bar

            bar = progress_bar(total=len(artifacts) * settings.rounds, desc=f"validating on {profile.name}",
                               unit="run", leave=False)
        requests: list[BenchRequest] = []
        for i, art in enumerate(artifacts):
            req = BenchRequest.for_artifact(art, settings, cpus=cpus, inputs=inputs or _random_inputs(art, Path(td), i),
                                            outputs=Path(td) / f"out{i}.npy" if inputs else None)
            requests.append(req)
            out.append(_measure(art, req, runner, profile, settings, eval_data,
                                None if i in no_reference else reference, task))
            if bar is not None:
                bar.update(1)
        if settings.rounds > 1 and inputs is not None:
            # latency rounds need only the first samples (a remote runner copies the inputs file)
            head = _head(inputs, max(settings.batches), Path(td))
            requests = [replace(r, inputs=head) if r.inputs == inputs else r for r in requests]
        _more_rounds(out, requests, runner, profile, settings.rounds, bar)
        if bar is not None:
            bar.close()
    return out


def nchw_shape(art: Artifact) -> list[Any]:
    """The artifact's first input shape in NCHW terms (the runners transpose NCHW data to NHWC)."""
    want = list(art.inputs[0].shape) if art.inputs else []
    if art.inputs and art.inputs[0].layout == "NHWC" and len(want) == 4:
        want = [want[0], want[3], want[1], want[2]]
    return want


def shape_misfit(want: list[Any], got: Sequence[int]) -> tuple[Any, ...] | None:
    """`want[1:]` as shown ("?" for symbolic dims) when samples of shape `got[1:]` do not fit it, else None."""
    want, rest = want[1:], list(got[1:])
    fixed = [(w, g) for w, g in zip(want, rest, strict=False) if isinstance(w, int) and w > 0]  # "?" dims match any
    if len(want) == len(rest) and all(w == g for w, g in fixed):
        return None
    return tuple(w if isinstance(w, int) and w > 0 else "?" for w in want)


def _sample_mismatch(art: Artifact, data: Dataset) -> str | None:
    """Why `data`'s samples cannot go into `art` (its first input, in NCHW terms), or None."""
    if isinstance(data.x, dict) or not art.inputs or len(art.inputs[0].shape) < 2:
        return None  # token sets: the runners pad them to the file
    if takes_ids(art.inputs[0]) != (data.x.dtype.kind in "iu"):  # [audit #27] (files of two models)
        return (f"{art.path}: takes {art.inputs[0].dtype} {'ids' if takes_ids(art.inputs[0]) else 'samples'} and the "
                f"evaluation samples are {data.x.dtype}")
    shown = shape_misfit(nchw_shape(art), data.x.shape)
    if shown is None:
        return None
    return (f"{art.path}: evaluation samples have shape {tuple(data.x.shape[1:])} but the file takes {shown} (NCHW); "
            "check the layout and the preprocessing")


def check_batch_memory(artifacts: Sequence[Artifact], settings: ValidateSettings) -> None:
    """The largest --batch against this machine's memory, for a local run: one batch of an
    artifact's inputs larger than all of it failed every row with numpy's ArrayMemoryError, exit 4
    (read as the model's failure) with the previous results in --out replaced, for a flag's typo
    (--batch 100000000). Symbolic dimensions count as 1: refused only what cannot fit."""
    import math

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such figure here: nothing to compare with
        return
    batch = max(settings.batches)
    for a in artifacts:
        per_sample = 0
        for t in a.inputs:
            try:
                size = np.dtype(t.dtype).itemsize
            except TypeError:
                size = 4
            per_sample += size * math.prod(d for d in t.shape[1:] if isinstance(d, int) and d > 0)
        if per_sample * batch > total:
            raise ConfigError(f"{opt('--batch', 'batches', batch)}: one batch of {Path(a.path).name}'s inputs is "
                              f"{per_sample * batch / 2**30:,.1f} GiB, more than this machine's "
                              f"{total / 2**30:,.1f} GiB of memory")


def usable_cpu_count() -> int:
    """How many CPUs this process may run on (its affinity, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_threads(profile: TargetProfile, settings: ValidateSettings) -> None:
    """--threads against the CPUs the run may use: this machine's for a local run (it ran
    oversubscribed and was reported as given: 99 threads on 2), the profile's big cores (or cores)
    for a device or an estimate (a device ran 4 threads pinned to 2 CPUs, reported as 4; an
    estimate was capped without a word). One rule for every runner; the pipeline calls it before
    exporting anything."""
    from edgecompress.targets.runners.estimate import runner_name_for

    local = runner_name_for(profile) == "local"
    if settings.cpus:
        mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if local and mine and not set(settings.cpus) <= set(mine):  # every row failed with OSError 22
            raise ConfigError(f"validation settings: cpus {settings.cpus}: this process may use CPUs {mine}")
        return
    if local:
        avail = usable_cpu_count()
        if settings.threads > avail:
            raise ConfigError(f"{opt('--threads', 'threads', settings.threads)}: this machine gives edgecompress "
                              f"{avail} CPU(s); use {avail} or fewer")
        return
    big = profile.hardware.get("big_cores") or []
    cores = profile.hardware.get("cores")
    limit, key = (len(big), "big_cores") if big else (cores, "cores")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < settings.threads:
        raise ConfigError(f"{opt('--threads', 'threads', settings.threads)}: target {profile.name} has {limit} "
                          f"{'big ' if big else ''}core(s) ([hardware] {key}); use {limit} or fewer")


# An fp32 file computes what its reference does up to float reduction order (cosine 1.00000 on
# every model here); below this, the conversion changed the model.
FP32_MIN_COSINE = 0.999


def _refuse_unfaithful_fp32(art: Artifact, d: dict[str, Any]) -> None:
    """A safety net under the exporters' own checks: an fp32 file that disagrees with its reference
    (a branch on tensor values frozen by tracing, a wrong op lowering) was reported ok, with the
    drift figures showing it to whoever read them."""
    cos = d.get("cosine")
    if art.precision == "fp32" and isinstance(cos, float) and cos < FP32_MIN_COSINE:
        agree = d.get("top1_agreement")
        tail = f", top-1 agreement {100 * agree:.1f} %" if isinstance(agree, float) else ""
        # the other cause is the caller's: the reference of another model (the model before a
        # compression pass), which blamed the exporter for the pruning
        raise ValidationError(f"{art.path}: the fp32 file disagrees with the reference (cosine {cos:.4f}{tail}): "
                              "the conversion changed what the model computes, or the reference is another "
                              "model's outputs (measure against the exported model's own: reference_outputs(its "
                              "module, data))")


def _more_rounds(out: list[Measurement], requests: list[BenchRequest], runner: Any,
                 profile: TargetProfile, rounds: int, bar: Any) -> None:
    """Rounds 2..N of the latency: every measured artifact again, alternating the order, then each
    figure is the median of its rounds'. An estimate (deterministic) or an emulated run (slow, and
    no device figure) is not repeated; a round that fails marks the artifact failed."""
    todo = [i for i, m in enumerate(out) if m.status == "ok" and m.latency_kind == "measured"]
    if bar is not None:
        bar.total -= (len(out) - len(todo)) * (rounds - 1)
    per_round: dict[int, list[dict[str, Any]]] = {i: [out[i].latency_ms] for i in todo}
    for r in range(1, rounds):
        for i in (todo if r % 2 == 0 else todo[::-1]):  # nobody always runs first (or last)
            if out[i].status != "ok":
                continue
            try:
                per_round[i].append(runner.run(replace(requests[i], outputs=None), profile)["latency_ms"])
            except DeviceError:
                raise
            except EdgeCompressError as e:
                out[i].status, out[i].error = "failed", f"latency round {r + 1}: {e}"
            if bar is not None:
                bar.update(1)
    for i in todo:
        if out[i].status == "ok" and len(per_round[i]) > 1:
            out[i].latency_ms = combine_rounds(per_round[i])
            out[i].settings["rounds"] = len(per_round[i])


def combine_rounds(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per batch size: each percentile the median of the rounds' (`p50_rounds` keeps them all),
    `min` the smallest, `runs` the total. A batch size that failed in any round keeps its error."""
    combined: dict[str, dict[str, Any]] = {}
    for batch, first in rounds[0].items():
        got = [r.get(batch, {}) for r in rounds]
        bad = next((g for g in got if "p50" not in g), None)
        if bad is not None:
            combined[batch] = bad if "error" in bad else first
            continue
        entry = dict(first)  # what is not a figure (a runner's notes) is the first round's
        entry.update({k: float(np.median([g[k] for g in got])) for k in first
                      if k not in ("min", "runs", "throughput_per_s")
                      and all(isinstance(g.get(k), int | float) and not isinstance(g.get(k), bool) for g in got)})
        entry["min"] = min(g.get("min", g["p50"]) for g in got)
        entry["runs"] = sum(g.get("runs", 0) for g in got)
        entry["throughput_per_s"] = 1000 * int(batch) / entry["p50"] if batch.isdigit() else first.get(
            "throughput_per_s")
        entry["p50_rounds"] = [g["p50"] for g in got]
        combined[batch] = entry
    return combined


def reference_outputs(module: ModelSpec | torch.nn.Module, data: Dataset, batch: int = 32,
                      progress: bool = True) -> np.ndarray:
    """fp32 PyTorch outputs on `data`: the reference every artifact is compared with.

    `module`: an nn.Module or a ModelSpec. It runs in eval mode (a module left in train mode gave
    a reference with dropout noise in it) and gets its own mode back. A QAT spec's reference is
    its float model before QAT (`extra["fp32_reference"]`), as in the pipeline's reports: its
    module is the int8 graph, and an int8 file agreed 100 % with it.
    """
    import torch

    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec

    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:  # 0: range() raised ValueError
        raise ConfigError(f"reference_outputs: batch {batch!r}: 1 or more")
    spec = module if isinstance(module, ModelSpec) else None
    net: Any = module  # the module to run: a spec's, or the caller's
    if spec is not None:
        net = spec.extra.get("fp32_reference") or spec.module
        if net is None and spec.onnx_path is not None and isinstance(data, Dataset):
            # an .onnx model in: its own outputs in ONNX Runtime, as the pipeline's reference
            # (this said "expected an nn.Module or a ModelSpec, got NoneType" to a ModelSpec)
            from edgecompress.pipeline import onnx_reference

            if len(data) == 0:
                raise DataError(f"reference_outputs: data {data.source}: holds no samples")
            return np.asarray(onnx_reference(spec.onnx_path, data), dtype=np.float32)
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"reference_outputs: expected an nn.Module or a ModelSpec, got {type(net).__name__}")
    if not isinstance(data, Dataset):
        raise ConfigError(f"reference_outputs: data must be a Dataset (edgecompress.load_data(...) or "
                          f"Dataset(x, y)), got {type(data).__name__}")
    from edgecompress.data.datasets import check_in_memory, match_model
    from edgecompress.models.modes import kept_modes
    from edgecompress.models.spec import first_output

    where = f"reference_outputs: data {data.source}"
    if len(data) == 0:  # was "ValueError: need at least one array to concatenate"
        raise DataError(f"{where}: holds no samples")
    check_in_memory(data, where)
    data = replace(data)  # a float64 set becomes float32 here, not in the caller's object
    if spec is not None:  # the sample shape and dtype, as export() checks them
        match_model(data, spec.input_shape, spec.inputs[0].dtype, where, spec.extra.get("vocab_size"),
                    spec.extra.get("input_vocab"), {i.name: i.dtype for i in spec.inputs})
    elif not isinstance(data.x, dict) and data.x.dtype == np.float64:
        data.x = data.x.astype(np.float32)  # numpy's default float: torch refused it against fp32 weights
    outs = []
    with kept_modes(net), torch.no_grad():
        net.eval()
        for i, xb in enumerate(data.batches(batch, desc="fp32 reference (PyTorch)" if progress else None)):
            try:
                if isinstance(xb, dict):
                    y = net(**{k: torch.from_numpy(np.asarray(v)) for k, v in xb.items()})
                else:
                    y = net(torch.from_numpy(np.ascontiguousarray(xb)))
            except (RuntimeError, ValueError, TypeError) as e:
                if i:  # the first batch went through: not a data mismatch
                    raise
                shape = {k: v.shape[1:] for k, v in xb.items()} if isinstance(xb, dict) else tuple(xb.shape[1:])
                first = first_line(e)
                raise DataError(f"{where}: the model fails on samples of shape {shape} ({first}); check the "
                                "layout (NCHW) and the preprocessing") from e
            # several outputs: the first is the one compared, the first tensor in the order every
            # exporter lays them out and names them (a dict's in key order, nested ones too); a
            # result no exporter takes is refused in the line load_model gives
            y = first_output(y, f"model {spec.name if spec is not None else type(net).__name__}")
            outs.append(y.float().reshape(y.shape[0], -1).numpy())
    return np.concatenate(outs)
