"""Crash safety, Ctrl-C and determinism (issue #7), on digits-cnn so they stay fast.

- SIGKILL the CLI at seeded random points during an export: the output directory only ever holds
  complete artifacts (each loads in its runtime), TEMP_PREFIX leftovers are never artifacts and the
  next run removes them, and a rerun finishes the job with a manifest whose hashes match.
  (That `validate` refuses an artifact tampered after the manifest is in test_validate_cli.py.)
- SIGINT during fine-tuning: one `interrupted: ...` line, exit 130; the rerun resumes from the
  last epoch checkpoint.
- ONNX fp32 and int8 exported twice give the same SHA-256.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgecompress.fileio import TEMP_PREFIX
from edgecompress.targets import ValidateSettings
from tests.conftest import ROOT

EXPORT = ["export", "zoo:digits-cnn", "-f", "onnx", "-f", "openvino", "--int8", "--no-validate"]


def _popen(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    # SIGINT back to default in the child: a test run launched as a background job (CI shells)
    # inherits SIG_IGN, and Python then never raises KeyboardInterrupt.
    return subprocess.Popen(
        [sys.executable, "-m", "edgecompress.cli", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_line(proc: subprocess.Popen, needle: str, count: int, timeout: float) -> list[str]:
    """Read stderr until `needle` has appeared `count` times (or the process ends)."""
    seen, lines, end = 0, [], time.monotonic() + timeout
    while seen < count and time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        seen += needle in line
    return lines


def _check_complete(out: Path) -> list[str]:
    """Every non-temporary artifact in `out` loads in its runtime; a manifest, if any, matches."""
    import onnxruntime as ort
    import openvino as ov

    names = []
    for p in sorted(out.iterdir()):
        if p.name.startswith(TEMP_PREFIX):
            continue  # a killed writer's temp file: never an artifact
        if p.suffix == ".onnx":
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            names.append(p.name)
        elif p.suffix == ".xml":
            ov.Core().compile_model(ov.Core().read_model(str(p)), "CPU")
            names.append(p.name)
    if (out / "manifest.json").exists():
        from edgecompress.targets.device_report import load_artifacts

        load_artifacts([out])  # raises if any listed artifact's sha256 differs
    return names


def test_sigkill_during_export_leaves_only_complete_artifacts(tmp_path):
    out = tmp_path / "out"
    rng = random.Random(7)
    # Kill after the k-th "exporting" line (k of 4 artifacts) plus a random delay: a kill lands
    # inside torch.export, ORT calibration, NNCF or the renames, differently per seed.
    for _ in range(3):
        k, delay = rng.randint(1, 4), rng.uniform(0.0, 2.5)
        proc = _popen(*EXPORT, "--out", str(out))
        _wait_for_line(proc, "exporting", k, timeout=300)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if out.exists():
            _check_complete(out)
    proc = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", *EXPORT, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = _check_complete(out)
    assert sorted(names) == sorted(
        ["digits-cnn-fp32.onnx", "digits-cnn-int8.onnx", "digits-cnn-fp32.xml", "digits-cnn-int8.xml"]
    ), names
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == 4
    assert not list(out.glob(TEMP_PREFIX + "*")), "the rerun must remove stale temp files"


def test_sigint_stops_finetuning_and_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    recipe = tmp_path / "kd.yaml"  # short epochs (2 batches) so both runs stay a few seconds
    recipe.write_text(
        "model: zoo:digits-cnn\npasses:\n  - distill: {epochs: 30, steps_per_epoch: 2}\noptions: {torch_threads: 1}\n"
    )
    args = ["run", str(recipe), "--out", str(out)]
    ck = out / "step1-distill" / "checkpoints" / "distill.pt"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:  # a file, not a pipe: tqdm output must never block the child
        proc = _popen(*args, stderr=f)
    end = time.monotonic() + 300
    while not ck.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    assert ck.exists(), "no checkpoint after the first epoch"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]  # was 0: typer returned Exit(130) and main ignored it
    last = [ln for ln in err.strip().splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted: ") and "fine-tuning restarts from the last checkpoint" in last, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert not list(out.rglob(TEMP_PREFIX + "*"))
    import torch

    epoch = torch.load(ck, weights_only=True)["epoch"]
    assert 1 <= epoch < 30
    again = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "distill: resuming from" in again.stderr, again.stderr[-2000:]
    resumed = int(again.stderr.split("distill: resuming from", 1)[1].split("(epoch ", 1)[1].split("/")[0])
    assert resumed >= epoch
    assert torch.load(ck, weights_only=True)["epoch"] == 30


@pytest.mark.parametrize("where", ["mkstemp", "unlink"])
def test_ctrl_c_at_temp_file_creation_or_removal_leaves_no_temp(tmp_path, monkeypatch, where, default_sigint):
    """A SIGINT arriving inside mkstemp (or the clean-up unlink) surfaces at the next bytecode;
    it used to land outside atomic_path's try and leave a temp file behind (flaky CI, run 9)."""
    import tempfile

    from edgecompress import fileio

    real_mkstemp, real_unlink = tempfile.mkstemp, Path.unlink

    def mkstemp(*a, **k):
        r = real_mkstemp(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)  # delivered before this function returns
        return r

    def unlink(self, *a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real_unlink(self, *a, **k)

    if where == "mkstemp":
        monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    else:
        monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt), fileio.atomic_path(tmp_path / "model.pt"):
        assert where == "unlink", "the interrupt must stop the writer before it starts"
        raise RuntimeError("writer failed")  # the temp must still be removed
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_failed_artifact_exits_4(tmp_path):
    # `raise typer.Exit(4)` (an artifact failed) used to exit 0 outside typer's standalone mode.
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "validate",
            str(bad),
            "--runs",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "v"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 4, proc.stderr[-2000:]


def test_rerun_removes_stale_temps_and_old_manifest(tmp_path, digits_spec):
    """What a SIGKILLed run leaves (temp files of every writer, a manifest of an older run) is
    cleaned by the next run_export into the same directory, which writes a fresh manifest."""
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "out"
    out.mkdir()
    stale = [f"{TEMP_PREFIX}digits-cnn-fp32-abc.onnx", f"{TEMP_PREFIX}123-digits-cnn-fp32.bin",
             f"{TEMP_PREFIX}99-digits-cnn-fp32.tflite"]
    for name in stale:
        (out / name).write_bytes(b"half")
    # the user's own files that merely look temporary stay (they were deleted, even by a failed run)
    mine = [".tmp-notes", ".session.tmp", ".vim.tmp/swap"]
    for name in mine:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("keep")
    (out / "manifest.json").write_text('{"artifacts": [{"path": "gone.onnx", "sha256": "0"}]}')
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out, do_validate=False, progress=False))
    assert not [p for p in out.iterdir() if p.name in stale]
    assert all((out / name).read_text() == "keep" for name in mine)
    entries = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert [e["path"] for e in entries] == ["digits-cnn-fp32.onnx"]
    _check_complete(out)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_export_is_deterministic(tmp_path, digits_spec, digits_calib, precision):
    from edgecompress.exporters import export

    calib = digits_calib.take(slice(0, 64))
    a = export(digits_spec, "onnx", precision, tmp_path / "a", calib)
    b = export(digits_spec, "onnx", precision, tmp_path / "b", calib)
    assert a.sha256 == b.sha256


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_ir_is_byte_stable_in_one_process(tmp_path, digits_spec, digits_calib, precision):
    """OpenVINO names the nodes it creates from a process-wide counter (`Model0` -> `Model3`,
    `Multiply_3611` -> `Multiply_7368`); the exporter renumbers them, so a second export in the same
    process, with the counter further on, writes the same .xml and .bin."""
    import hashlib

    import openvino as ov

    from edgecompress.exporters import export

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    calib = digits_calib.take(slice(0, 32))
    a, b = (export(digits_spec, "openvino", precision, tmp_path / d, calib) for d in ("a", "b"))
    assert sha(a.path.with_suffix(".bin")) == sha(b.path.with_suffix(".bin"))
    assert sha(a.path) == sha(b.path), "the .xml differs between two exports of the same model"
    assert '<net name="digits-cnn"' in a.path.read_text()
    # the names users address stay as they were
    model = ov.Core().read_model(str(a.path))
    assert [p.get_any_name() for p in model.inputs] == [i.name for i in digits_spec.inputs]
    assert [p.get_any_name() for p in model.outputs] == digits_spec.output_names
    assert [i.name for i in a.inputs] == [i.name for i in digits_spec.inputs]


def test_killed_checkpoint_write_is_cleaned_and_run_resumes(tmp_path, digits_spec, digits_calib, monkeypatch):
    """A fine-tune SIGKILLed inside save_checkpoint leaves `<TEMP_PREFIX><name>-*.pt` beside the checkpoint:
    the next run removes it (holding the directory's lock) and still resumes from the checkpoint."""
    import copy

    import torch

    from edgecompress.errors import OutputError
    from edgecompress.passes import _common, distill
    from edgecompress.passes.distill import DistillConfig, finetune

    cfg = DistillConfig(epochs=3, steps_per_epoch=2)
    data = digits_calib.take(slice(0, 256))
    ck = tmp_path / "checkpoints" / "distill.pt"
    first, again = copy.deepcopy(digits_spec.module), copy.deepcopy(digits_spec.module)

    saves = []
    real_save = _common.save_checkpoint

    def dies_in_second_save(path, payload):
        if saves:
            raise RuntimeError("killed")  # stands in for the SIGKILL; its temp file is made below
        saves.append(path)
        real_save(path, payload)

    monkeypatch.setattr(distill, "save_checkpoint", dies_in_second_save)
    with pytest.raises(RuntimeError, match="killed"):
        finetune(first, digits_spec.module, data, cfg, ck, "x", progress=False)
    monkeypatch.setattr(distill, "save_checkpoint", real_save)
    assert torch.load(ck, weights_only=True)["epoch"] == 1
    stale = [ck.parent / f"{TEMP_PREFIX}distill-k1ll3d.pt", ck.parent / f"{TEMP_PREFIX}distill-0ther.pt"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04 half a zip")  # a torch.save cut short by SIGKILL

    import fcntl

    held = os.open(ck.parent, os.O_RDONLY | os.O_DIRECTORY)  # another run's lock (exclusive_dir is
    fcntl.flock(held, fcntl.LOCK_EX)  # re-entrant in its own thread, so it cannot stand in for one)
    try:
        with pytest.raises(OutputError, match="another edgecompress run"):
            finetune(copy.deepcopy(again), digits_spec.module, data, cfg, ck, "x", progress=False)
    finally:
        os.close(held)
    assert all(p.exists() for p in stale), "a locked directory may belong to a live run: leave it alone"

    log = finetune(again, digits_spec.module, data, cfg, ck, "x", progress=False)
    assert log["resumed_from_epoch"] == 1
    assert not [p for p in stale if p.exists()]
    assert sorted(p.name for p in ck.parent.iterdir()) == ["distill.pt"]
    assert torch.load(ck, weights_only=True)["epoch"] == 3


def _guard_finalizers() -> int:
    """weakref finalizers registered by dynamo's guards (CheckFunctionManager.invalidate)."""
    import weakref

    n = 0
    for info in list(weakref.finalize._registry.values()):
        method = getattr(info.func, "func", None)
        n += type(getattr(method, "__self__", None)).__name__ == "CheckFunctionManager"
    return n


def test_strict_export_guard_finalizers_are_released():
    """A strict torch.export registers a weakref.finalize per object its guards reference (types,
    code objects, modules: objects that never die), each holding the CheckFunctionManager and its
    guard tree; `released_export_state` detaches them (their callback is a no-op: export installs
    no cache entry), and drops the GraphModule sources torch.fx cached during the export."""
    import torch

    from edgecompress.exporters._memory import released_export_state

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x) + 1

    args = (torch.ones(2, 3),)
    start = _guard_finalizers()
    torch.export.export(M(), args, strict=True)
    if _guard_finalizers() == start:
        pytest.skip("this torch's strict export registers no guard finalizers")
    kept = _guard_finalizers()
    sources = set(torch.fx.graph_module._loader.eval_cache)
    for _ in range(2):
        with released_export_state():
            torch.export.export(M(), args, strict=True)
        assert _guard_finalizers() == kept
        # the generated GraphModule sources fx keeps for tracebacks (cause 6): none left behind
        assert set(torch.fx.graph_module._loader.eval_cache) == sources


def test_repeated_tflite_export_keeps_no_torch_graphs(tmp_path, digits_spec):
    """torch's strict export leaves each captured graph (and the model's parameters) in the globals
    of torch._dynamo.functional_export, and its guards' weakref finalizers (CheckFunctionManager);
    `export` drops them, so repeated exports do not pile up."""
    import gc
    import sys

    from edgecompress.exporters import export

    def live() -> tuple[int, int, int]:
        gc.collect()
        g = vars(sys.modules.get("torch._dynamo.functional_export", sys))
        graphs = sum(type(o).__name__ == "OptimizedModule" for o in gc.get_objects())
        return sum(k.startswith("__compiled_fn") for k in g), graphs, _guard_finalizers()

    export(digits_spec, "tflite", "fp32", tmp_path / "warm")  # imports, first capture
    before = live()
    for i in range(2):
        export(digits_spec, "tflite", "fp32", tmp_path / str(i))
    assert live() == before


def test_failed_openvino_export_leaves_no_torchscript_functions_for_good(tmp_path, digits_spec):
    """A conversion that fails after the trace (an op OpenVINO lacks) unwinds through a traceback
    that still holds the traced ScriptModule, so its functions stay in the CU; the next export,
    finding only those, drops them with its own (they used to stay, and every later export in
    the process kept its functions too: +52 per digits-cnn export)."""
    pytest.importorskip("openvino")
    from edgecompress.errors import ExportError
    from edgecompress.exporters import export
    from edgecompress.models import load_model

    cu = torch.jit._state._python_cu
    if cu.get_functions():
        pytest.skip("another test left TorchScript functions in this process")
    bad = load_model("tests.bad_inputs.badmodels:unexportable", input_shape=(1, 3, 8, 8))
    with pytest.raises(ExportError, match="special_bessel_j0"):
        export(bad, "openvino", "fp32", tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    export(digits_spec, "openvino", "fp32", tmp_path / "ok")
    assert cu.get_functions() == []
    export(digits_spec, "openvino", "fp32", tmp_path / "again")
    assert cu.get_functions() == []


def test_repeated_openvino_export_keeps_no_torchscript_functions(tmp_path, digits_spec):
    """ov.convert_model traces the module with torch.jit.trace, which compiles every submodule's
    forward into TorchScript's global CompilationUnit for good (~19 MB per EfficientNet-Lite0
    export); `export` drops them when nothing else uses the CU, and leaves a caller's own
    TorchScript alone."""
    pytest.importorskip("openvino")
    import torch

    from edgecompress.exporters import export

    cu = torch.jit._state._python_cu
    if cu.get_functions():
        pytest.skip("another test left TorchScript functions in this process")
    export(digits_spec, "openvino", "fp32", tmp_path / "warm")  # imports, first trace
    for i in range(2):
        export(digits_spec, "openvino", "fp32", tmp_path / str(i))
        assert cu.get_functions() == []

    scripted = torch.jit.script(torch.nn.Linear(2, 2))  # the caller's own TorchScript: kept
    kept = len(cu.get_functions())
    export(digits_spec, "openvino", "fp32", tmp_path / "scripted")
    assert len(cu.get_functions()) >= kept
    assert scripted(torch.ones(1, 2)).shape == (1, 2)


def test_failed_run_changes_nothing_in_out_dir(tmp_path):
    """A run whose last format fails leaves the directory as the previous run left it: its files,
    its report and its manifest (the failing run used to leave its first formats beside them and
    delete the manifest)."""
    from tests.conftest import ROOT, run_cli

    out = tmp_path / "out"
    ok = run_cli("export", "tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "-f", "onnx",
                 "--no-validate", "--out", str(out), cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = run_cli("export", "tests.bad_inputs.badmodels:fft", "--input-shape", "1,3,8,8", "-f", "onnx",
                  "-f", "tflite", "--no-validate", "--out", str(out), cwd=ROOT)
    assert bad.returncode == 3, bad.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_interrupt_or_failure_while_validating_changes_nothing_in_out_dir(tmp_path, digits_spec, monkeypatch,
                                                                          failure):
    """Artifacts were moved into --out before validation: Ctrl-C (or an error) while measuring left
    new files beside the previous run's report, whose sha256 no longer matched, and no manifest."""
    import edgecompress.pipeline as pipeline
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "out"
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out, do_validate=False,
                         progress=False))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise failure("stopped while validating")

    monkeypatch.setattr(pipeline, "validate", boom)
    # the same model with other weights: a new file of the same name
    other = pipeline.replace(digits_spec, module=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    with pytest.raises(failure):
        run_export(ExportJob(model=other, formats=[("onnx", "fp32")], out_dir=out, progress=False))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    with pytest.raises(failure):
        run_export(ExportJob(model=other, formats=[("onnx", "fp32")], out_dir=fresh, progress=False))
    assert not fresh.exists()  # the directory the run made is gone again


def test_validated_in_staging_reports_the_final_paths(tmp_path, digits_spec, digits_calib, capsys):
    """Measured where they were exported, the rows name the files where they end up; model files
    an earlier run left in --out are noted (they are in neither report nor manifest)."""
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "out"
    out.mkdir()
    (out / "old-int8.tflite").write_bytes(b"an earlier run's")
    report, _ = run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out, progress=False,
                                     settings=ValidateSettings(runs=2, warmup=0, rounds=1)))
    paths = [a["path"] for a in report.artifacts]
    assert paths == [str(out / "digits-cnn-fp32.onnx")] and report.artifacts[0]["status"] == "ok"
    assert TEMP_PREFIX not in json.dumps(json.loads((out / "report.json").read_text()))
    assert "holds 1 model file(s) this run did not write, listed in neither report.json nor manifest.json: " \
           "old-int8.tflite" in capsys.readouterr().err
    # the model exported is not one of them (`export m.onnx --out .`)
    run_export(ExportJob(model=str(out / "digits-cnn-fp32.onnx"), formats=[("onnx", "int8")], out_dir=out,
                         calib=digits_calib, progress=False, do_validate=False))
    err = capsys.readouterr().err
    assert "old-int8.tflite" in err and "digits-cnn-fp32.onnx" not in err, err


def _procs_naming(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (a bench child left running names its artifact)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_sigterm_while_validating_cleans_up_like_ctrl_c(tmp_path):
    """SIGTERM (a cancelled CI job, `timeout`) killed the CLI outright: the staging folder and the
    --out it made stayed, and the bench child ran on alone. Now: the Ctrl-C cleanup, exit 143."""
    out = tmp_path / "out"
    with open(tmp_path / "stderr", "w") as log:
        proc = _popen("export", "zoo:digits-cnn", "-f", "onnx", "--runs", "1000000", "--warmup", "0", "--rounds",
                      "1", "--out", str(out), stderr=log)
        end = time.monotonic() + 300
        while not _procs_naming(str(out) + "/") and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.5)  # until the benchmark child runs (it names the staged artifact)
        assert _procs_naming(str(out) + "/"), (tmp_path / "stderr").read_text()[-2000:]
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM): stopped cleanly"), err[-2000:]
    assert "fine-tuning" not in err.strip().splitlines()[-1]  # an export has nothing to resume
    assert not out.exists()
    time.sleep(1)
    assert _procs_naming(str(out) + "/") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_results_land_leaves_one_whole_run(tmp_path, monkeypatch, digits_spec, sig, default_sigint):
    """A Ctrl-C (or SIGTERM) just after validation, while the artifacts moved into --out and the
    report was written, left the new .onnx beside the previous run's report with no manifest
    (audit 21C, B1). The signal is now held until the folder is one run's, whole, then delivered."""
    import json

    from edgecompress import fileio, pipeline
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "out"
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out,
                         do_validate=False, progress=False))
    real_write = pipeline.write_report

    def write_report(report, out_dir):
        os.kill(os.getpid(), sig)  # arrives after the artifact moved in, before the report is written
        return real_write(report, out_dir)

    monkeypatch.setattr(pipeline, "write_report", write_report)
    old_term = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(fileio, "LANDED_WHILE_INTERRUPTED", [])
    try:
        with pytest.raises(KeyboardInterrupt):
            run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32"), ("onnx", "int8")], out_dir=out,
                                 calib=None, do_validate=False, progress=False, command="second run"))
    finally:
        signal.signal(signal.SIGTERM, old_term)
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert report["command"] == "second run" and len(report["artifacts"]) == 2
    on_disk = {e["path"]: fileio.sha256_file(out / e["path"]) for e in manifest["artifacts"]}
    assert on_disk == {e["path"]: e["sha256"] for e in manifest["artifacts"]} and len(on_disk) == 2
    assert [out] == fileio.LANDED_WHILE_INTERRUPTED  # the CLI's line says the run finished writing
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupted_line_says_when_the_run_had_landed(monkeypatch, capsys, tmp_path):
    """The "nothing half-written; reports untouched" line was wrong for a run whose results had
    landed while the signal was held."""
    from edgecompress import cli, fileio

    monkeypatch.setattr(fileio, "LANDED_WHILE_INTERRUPTED", [tmp_path])
    with pytest.raises(SystemExit) as e:
        cli._stopped()
    err = capsys.readouterr().err
    assert e.value.code == 130 and f"after the run had finished writing {tmp_path}" in err
    assert "untouched" not in err
