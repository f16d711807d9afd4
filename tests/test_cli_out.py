"""The CLI's answer and its --out, as build scripts use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_out_with_a_quoted_tilde_goes_to_home(tmp_path):
    """`--out '~/x'` (quoted in a build file, so no shell expanded it) made a folder named `~`."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "--no-validate",
                        "--no-progress", "--out", "~/x"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(home / "x" / "report.html")
    assert (home / "x" / "manifest.json").is_file() and not (work / "~").exists()
    # the model argument and validate's artifacts too
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "validate", "~/x", "--runs", "2", "--warmup", "0",
                        "--rounds", "1", "--no-progress", "--out", "~/v"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == str(home / "v" / "report.html"), r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "~/x/digits-cnn-fp32.onnx",
                        "--no-validate", "--no-progress", "--out", "~/o2"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and (home / "o2" / "manifest.json").is_file(), r.stderr[-2000:]


def test_closed_stdout_is_said_not_a_silent_exit_1(tmp_path):
    """`edgecompress export ... | head -0`: the answer cannot be written; the run completed."""
    r = subprocess.run(f"{sys.executable} -m edgecompress.cli export zoo:digits-cnn --no-validate --no-progress "
                       f"--out {tmp_path / 'o'} | head -c 0; exit ${{PIPESTATUS[0]}}", shell=True,
                       executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 141, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == ("error: stdout was closed before the answer could be written "
                                                 "(what the command writes to disk is complete)")
    assert (tmp_path / "o" / "manifest.json").is_file()


@pytest.mark.parametrize("args", ["--help", "export --help"])
def test_help_into_a_closed_pipe_exits_as_sigpipe(args):
    """`edgecompress --help | head -1`: rich's broken-pipe handler exited 1, which reads as a
    failure; a program whose reader left exits 141 (SIGPIPE), silently."""
    r = subprocess.run(f"{sys.executable} -m edgecompress.cli {args} | head -c 0; exit ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 141 and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", *args.split()], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "Usage" in r.stdout


def test_no_onnxruntime_telemetry_unasked(tmp_path):
    """ONNX Runtime 1.32 kept a device ID and a queue of usage events under ~/.cache/Microsoft on
    every run (CLI, Python API and the bench child) unless ORT_DISABLE_TELEMETRY=1."""
    import shutil

    home = tmp_path / "home"
    home.mkdir()
    # ORT itself stays quiet when CI is set (a CI runner): those variables go, so the check means
    # the same here and there
    ci = ("ORT_DISABLE_TELEMETRY", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "JENKINS_URL", "BUILDKITE")
    env = {k: v for k, v in os.environ.items() if k not in ci}
    env.update(HOME=str(home), PYTHONWARNINGS="ignore")
    fp32 = tmp_path / "o" / "digits-cnn-fp32.onnx"
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "--no-validate",
                        "--no-progress", "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.rmtree(home / ".cache", ignore_errors=True)  # (the export's own ORT use is checked below)
    # the check can fail: without the setting, ONNX Runtime writes there
    script = f"import onnxruntime as ort; ort.InferenceSession({str(fp32)!r})"
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=300).returncode == 0
    if not (home / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime" / "deviceid").is_file():
        pytest.skip("ONNX Runtime keeps no telemetry in this environment even unasked")
    shutil.rmtree(home / ".cache")
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "-f", "onnx", "--int8",
                        "--runs", "2", "--warmup", "0", "--rounds", "1", "--no-progress", "--out",
                        str(tmp_path / "o2")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    script = f"import edgecompress, onnxruntime as ort; ort.InferenceSession({str(fp32)!r})"
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=300).returncode == 0
    assert not (home / ".cache" / "Microsoft").exists()


def test_export_fail_on_gates_without_a_second_measurement(tmp_path):
    """A CI gate on an export needed `validate` afterwards: every artifact measured twice."""
    from tests.conftest import run_cli

    common = ["export", "zoo:digits-cnn", "--int8", "--runs", "3", "--warmup", "0", "--rounds", "1",
              "--no-progress"]
    ok = run_cli(*common, "--fail-on", "size_bytes>1e7", "--out", str(tmp_path / "ok"), cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run_cli(*common, "--fail-on", "metrics.top1>0.5", "--out", str(tmp_path / "bad"), cwd=ROOT)
    assert bad.returncode == 4, bad.stderr[-2000:]
    from tests.conftest import GATE_FAILURE

    # worded as validate words it (it said "(digits-cnn-fp32.onnx, x86-local/onnx/fp32: 99.33 %)")
    m = GATE_FAILURE.match(bad.stderr.strip().splitlines()[-1])
    assert m, bad.stderr[-500:]
    assert (m["gate"], m["file"], m["format"], m["precision"], m["target"], m["path"]) == (
        "metrics.top1>0.5", "digits-cnn-fp32.onnx", "onnx", "fp32", "x86-local", "metrics.top1")
    assert m["value"].startswith("99.") and m["value"].endswith(" %") and m.group(0).endswith("(+1 more)")
    gates = json.loads((tmp_path / "bad" / "report.json").read_text())["gates"]
    assert [(g["file"], g["passed"]) for g in gates] == [("digits-cnn-fp32.onnx", False),
                                                         ("digits-cnn-int8.onnx", False)]
    assert "## Gates (--fail-on)" in (tmp_path / "bad" / "report.md").read_text()
    # checked before any work: a malformed gate, and a gate with nothing to measure
    import numpy as np

    from edgecompress.models.digits import digits_npz

    np.save(tmp_path / "unlabelled.npy", np.load(digits_npz("test"))["x"][:20])
    for args, msg in ((["--fail-on", "latency.p50>1"], "; did you mean 'latency_ms.p50'?"),
                      (["--fail-on", "size_bytes>1", "--no-validate"], "gates need measurements"),
                      (["--fail-on", "metrics.top1<0.9", "--eval", str(tmp_path / "unlabelled.npy")],
                       "metrics need labelled evaluation data")):
        r = run_cli("export", "zoo:digits-cnn", *args, "--out", str(tmp_path / "x"), cwd=ROOT)
        assert r.returncode == 2 and msg in r.stderr and not (tmp_path / "x").exists(), r.stderr[-2000:]
    # a gate no figure answers is found after measuring, but before anything moves into --out
    before = {p.name: p.read_bytes() for p in (tmp_path / "ok").iterdir()}
    r = run_cli(*common, "--fail-on", "metrics.spearman<0.5", "--out", str(tmp_path / "ok"), cwd=ROOT)
    assert r.returncode == 2 and "no artifact in the report has a numeric metrics.spearman" in r.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "ok").iterdir()} == before


def test_no_matplotlib_lines_without_a_writable_home(tmp_path):
    """With no writable home (a CI container), matplotlib printed two "mkdir -p failed ... set
    MPLCONFIGDIR" lines into every report's output; the plot is still drawn."""
    env = {**os.environ, "HOME": "/proc/nonexistent-home", "PYTHONWARNINGS": "ignore"}
    env.pop("MPLCONFIGDIR", None)
    env.pop("XDG_CONFIG_HOME", None)
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "--runs", "2",
                        "--warmup", "0", "--rounds", "1", "--no-progress", "--out", str(tmp_path / "o")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MPLCONFIGDIR" not in r.stderr and "Matplotlib" not in r.stderr, r.stderr[-2000:]
    assert (tmp_path / "o" / "report.png").is_file()


def test_tilde_with_no_home_is_left_as_written(monkeypatch):
    """`~/x` with no HOME and no passwd entry: Path.expanduser raised RuntimeError (a traceback)."""
    from pathlib import Path

    from edgecompress.cli import _expand_user

    def no_home(self):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "expanduser", no_home)
    assert _expand_user("~/m.onnx") == "~/m.onnx" and _expand_user(Path("~/o")) == Path("~/o")
    assert _expand_user(["~/a", Path("~/b")]) == ["~/a", Path("~/b")]


def test_recipe_model_path_with_tilde(tmp_path, monkeypatch):
    """`model: ~/m.onnx` in a recipe was joined to the recipe's folder as a relative path."""
    from edgecompress.recipe import load_recipe

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "r.yaml").write_text("model: ~/m.onnx\nexport: [onnx]\n")
    assert load_recipe(tmp_path / "r.yaml").resolved()["model"] == str(tmp_path / "home" / "m.onnx")


@pytest.mark.parametrize("args, said", [
    (["export", "zoo:digits-cnn", "--weights", "", "--no-validate", "--out", "o"], "--weights '': empty value"),
    (["export", "zoo:digits-cnn", "--no-validate", "--out", ""], "--out '': empty value"),
    (["export", "zoo:digits-cnn", "--no-validate", "--out="], "--out '': empty value"),
    (["export", "", "--no-validate", "--out", "o"], "empty argument ''"),
    (["validate", "o", "--target", ""], "--target '': empty value"),
])
def test_an_empty_argument_is_refused_and_nothing_written(tmp_path, args, said):
    """A build script's unset variable: `--weights ''` exported the untrained factory model (exit
    0) and `--out ''` wrote the model, reports and manifest into the current directory."""
    from tests.conftest import run_cli

    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {said} (an unset variable in the "
                                                                   "build script?)"], r.stderr[-800:]
    assert list(tmp_path.iterdir()) == []


def test_no_validate_still_checks_the_target(tmp_path):
    """--target rpi55 --no-validate exported and recorded 'rpi55' as the report's target; a target
    not running the format exported for it too."""
    from tests.conftest import run_cli

    r = run_cli("export", "zoo:digits-cnn", "--no-validate", "--target", "rpi55", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--target 'rpi55': unknown target" in r.stderr, r.stderr[-800:]
    r = run_cli("export", "zoo:digits-cnn", "-f", "onnx", "--no-validate", "--target", "android-arm64",
                "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--target android-arm64 runs" in r.stderr, r.stderr[-800:]
    assert not (tmp_path / "o").exists()
