"""The CLI's manners: no telemetry sent unasked, known third-party chatter dropped, --verbose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from edgecompress import quiet

# Does the OpenVINO converter's telemetry (initialised by `import openvino`) think it may send?
PROBE = """
import sys
if sys.argv[1] == "decline":
    from edgecompress.targets.bench import decline_openvino_telemetry
    decline_openvino_telemetry()
import openvino
import openvino_telemetry as tm
print("consent", tm.Telemetry().consent)
"""


@pytest.mark.parametrize("consent_file", [None, "1", "0"])
def test_openvino_telemetry_needs_explicit_consent(tmp_path, consent_file):
    pytest.importorskip("openvino_telemetry")
    if consent_file is not None:
        (tmp_path / "intel").mkdir()
        (tmp_path / "intel" / "openvino_telemetry").write_text(consent_file)
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    for key in ("CI", "TF_BUILD", "JENKINS_URL"):  # OpenVINO's own CI detection would decline anyway
        env.pop(key, None)

    def consent(mode: str) -> bool:
        r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split()[-1] == "True"

    # Without a consent file OpenVINO sends by default; with us only an explicit opt-in ("1") does.
    assert consent("decline") is (consent_file == "1")
    if consent_file is None:
        assert consent("vendor") is True  # what the decline prevents (the check can fail)
        assert not (tmp_path / "intel" / "openvino_telemetry").exists()  # the user's choice stays unmade


def test_quiet_drops_known_lines_only(caplog):
    quiet.quiet_third_party()
    quiet.quiet_third_party()  # idempotent: one filter per logger
    onnx_reg = logging.getLogger("torch.onnx._internal.exporter._registration")
    assert sum(isinstance(f, quiet._Drop) for f in onnx_reg.filters) == 1
    nncf = logging.getLogger("nncf")
    with caplog.at_level(logging.DEBUG):
        onnx_reg.warning("torchvision is not installed. Skipping torchvision::nms")
        onnx_reg.warning("something else went wrong")
        nncf.info("3 ignored nodes were found by names in the NNCFGraph")
        nncf.warning("Rollback to RangeEstimatorParametersSet.MINMAX for the target point: '4'")
        nncf.warning("the model has no quantizable layers")
        nncf.error("Rollback to RangeEstimatorParametersSet failed")  # errors always show
        logging.getLogger("torchao.kernel.intmm").warning(  # seen in the demo's TFLite int8 export
            "Warning: Detected no triton, on systems without Triton certain kernels will not work")
        logging.getLogger("transformers.modeling_utils").warning(  # the README's zoo:minilm-l6 export
            "`loss_type=None` was set in the config but it is unrecognized. Using the default loss: `ForCausalLMLoss`.")
    assert [r.getMessage() for r in caplog.records] == [
        "something else went wrong", "the model has no quantizable layers",
        "Rollback to RangeEstimatorParametersSet failed"]


def test_verbose_flag_is_taken_out_of_argv(monkeypatch):
    monkeypatch.delenv("EDGECOMPRESS_VERBOSE", raising=False)
    argv = ["edgecompress", "export", "--verbose", "zoo:digits-cnn"]
    assert quiet.verbose_requested(argv) and argv == ["edgecompress", "export", "zoo:digits-cnn"]
    assert not quiet.verbose_requested(argv)
    monkeypatch.setenv("EDGECOMPRESS_VERBOSE", "1")
    assert quiet.verbose_requested(argv)


def test_help_lists_registered_formats_and_keeps_brackets():
    from edgecompress.exporters import FORMATS
    from tests.conftest import run_cli

    r = run_cli("export", "--help", timeout=120)
    text = " ".join(r.stdout.replace("│", " ").split())  # the help box wraps lines
    assert r.returncode == 0 and "PATH[start:stop] selects rows" in text  # was eaten as markup
    for name, fmt in FORMATS:  # the registry drives the help text
        assert f"{name} ({', '.join(fmt.precisions)})" in text
    # piped (a build log), nothing is cut with "…" (rich's 80 columns cut the --fail-on example)
    for cmd in ("export", "validate", "compress", "run"):
        r = run_cli(cmd, "--help", timeout=120)
        assert r.returncode == 0 and "…" not in r.stdout, [ln for ln in r.stdout.splitlines() if "…" in ln]


def test_no_progress_silences_every_bar_of_export_and_validate(tmp_path):
    """Build logs (the mobile teams' CI) got thousands of carriage-return bar updates with no way
    to turn them off outside `run`: each command that draws bars takes --no-progress. Captured
    stderr is no terminal, so a bar shows as its completion line (edgecompress.progress)."""
    import re

    exe = [sys.executable, "-m", "edgecompress.cli"]
    common = ["--runs", "2", "--warmup", "0", "--rounds", "1"]
    # "validating on x86-local: 4/4 run in 1.2 s"
    done = re.compile(r"^[^\n]+: \d+/\d+ \w+(?: \([^\n]*\))? in \d[^\n]* s$", re.MULTILINE)

    def bars(*args: str) -> tuple[int, int]:
        """(completion lines, tqdm bars drawn in place: one that bypasses edgecompress.progress)"""
        r = subprocess.run([*exe, *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return len(done.findall(r.stderr)), r.stderr.count("%|")

    out = tmp_path / "e"
    assert bars("export", "zoo:digits-cnn", "-f", "onnx", "--int8", "--out", str(out), *common,
                "--no-progress") == (0, 0)
    lines, drawn = bars("validate", str(out), "--out", str(tmp_path / "v"), *common)
    assert lines > 0 and drawn == 0
    assert bars("validate", str(out), "--out", str(tmp_path / "v"), *common, "--no-progress") == (0, 0)


def test_a_failed_trace_s_graph_dump_is_held_back(monkeypatch, capsys):
    """torch.export prints a failed trace's partial graph to stderr (18-37 lines before our
    one-line error): on the quiet command line it is dropped when the trace fails, and written
    out when it succeeds; the Python API sees everything."""
    import sys

    import pytest

    from edgecompress.quiet import CLI_ENV, trace_dumps_held

    monkeypatch.setenv(CLI_ENV, "quiet")
    with pytest.raises(RuntimeError), trace_dumps_held():
        print("class GraphModule(torch.nn.Module): ...", file=sys.stderr)
        raise RuntimeError("Could not guard on data-dependent expression")
    assert "GraphModule" not in capsys.readouterr().err
    with trace_dumps_held():
        print("a warning worth reading", file=sys.stderr)
    assert "a warning worth reading" in capsys.readouterr().err
    monkeypatch.delenv(CLI_ENV)
    with pytest.raises(RuntimeError), trace_dumps_held():
        print("class GraphModule(torch.nn.Module): ...", file=sys.stderr)
        raise RuntimeError("x")
    assert "GraphModule" in capsys.readouterr().err


def test_data_paths_the_run_does_not_read_are_still_checked(tmp_path):
    """--calib on an fp32-only export and --eval with --no-validate were never looked at: a typo
    in a build script passed (exit 0) until someone added --int8 or dropped --no-validate. The
    path is checked (exit 2, nothing written) and an existing one gets a note that it is unused."""
    from tests.conftest import ROOT, run_cli

    base = ["export", "zoo:digits-cnn", "-f", "onnx", "--no-validate"]
    bad = run_cli(*base, "--calib", str(tmp_path / "no-such"), "--out", str(tmp_path / "a"), cwd=ROOT)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1] == (f"error: --calib {tmp_path / 'no-such'}: no such file or "
                                                   "directory (unused by this run: no int8 precision is asked for)")
    assert not (tmp_path / "a").exists()
    bad = run_cli(*base, "--eval", str(tmp_path / "no-such"), "--out", str(tmp_path / "b"), cwd=ROOT)
    assert bad.returncode == 2 and "--eval" in bad.stderr and "validation is off" in bad.stderr, bad.stderr[-2000:]
    data = tmp_path / "d.npy"
    data.write_bytes(b"")  # exists; never read, so its content does not matter
    ok = run_cli(*base, "--calib", str(data), "--out", str(tmp_path / "c"), cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"note: --calib {data} is not used: no int8 precision is asked for" in ok.stderr
    for rows in ("[10:5]", "[:0]"):  # a range that selects nothing fails now, not once --int8 is added
        bad = run_cli(*base, "--calib", f"{data}{rows}", "--out", str(tmp_path / "e"), cwd=ROOT)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
            f"error: --calib {data}{rows}: the range selects no samples (unused by this run: no int8 precision "
            "is asked for)"), bad.stderr[-800:]
    assert not (tmp_path / "e").exists()


def test_a_model_that_fixes_its_batch_gets_one_line_only(tmp_path):
    """torch logs a guard it cannot create (`x.reshape(1, -1)` against the dynamic batch) as a
    31-line ERROR traceback through its own logging handler, which holds the stderr of `import
    torch`: redirecting sys.stderr around the trace missed it, and it printed before our line."""
    from tests.conftest import ROOT, run_cli

    r = run_cli("export", "tests.bad_inputs.badmodels:fixed_batch", "--input-shape", "1,3,8,8", "-f", "onnx",
                "--no-progress", "--out", str(tmp_path / "out"), cwd=ROOT)
    assert r.returncode == 3, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("error: onnx export of fixed_batch failed") and "fixes its batch size" in lines[0]
    assert not (tmp_path / "out").exists()


def test_litert_s_xnnpack_banner_is_not_printed(tmp_path):
    """LiteRT prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` from native code
    (no logger, no env switch) when the int8 .tflite is checked in-process: every tflite run
    with validation showed it."""
    from tests.conftest import ROOT, run_cli

    r = run_cli("export", "zoo:digits-cnn", "-f", "tflite", "--int8", "--no-progress", "--runs", "2",
                "--warmup", "0", "--rounds", "1", "--out", str(tmp_path / "out"), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tflite  int8" in r.stderr  # validated: the summary table
    assert "XNNPACK" not in r.stderr, r.stderr[-2000:]


def test_native_lines_dropped_keeps_the_others(monkeypatch, capfd):
    monkeypatch.setenv(quiet.CLI_ENV, "quiet")
    with quiet.native_lines_dropped():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nan unknown native line\n")
    err = capfd.readouterr().err
    assert "an unknown native line" in err and "XNNPACK" not in err
    monkeypatch.setenv(quiet.CLI_ENV, "verbose")
    with quiet.native_lines_dropped():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" in capfd.readouterr().err


def test_calib_method_help_names_every_format_it_sets():
    """`--calib-method` also picks NNCF's range estimator for OpenVINO int8 (exporters/openvino.py
    `_RANGE_ESTIMATORS`: minmax -> MINMAX, percentile / entropy -> HISTOGRAM); the help said "ONNX
    int8 calibration" only, so an OpenVINO user read it as not theirs. TFLite's full int8 ignores it."""
    import typer

    from edgecompress.cli import app
    from edgecompress.exporters.openvino import _RANGE_ESTIMATORS

    command = typer.main.get_command(app).commands["export"]  # type: ignore[attr-defined]
    (opt,) = [p for p in command.params if "--calib-method" in p.opts]
    text = " ".join(opt.help.split())
    assert set(_RANGE_ESTIMATORS) == {"minmax", "percentile", "entropy"}
    for word in ("ONNX", "OpenVINO", "TFLite", "percentile (default"):
        assert word in text, text
