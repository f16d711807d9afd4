"""Shared fixtures: the digits model and its data (fast, real accuracy), the shared data set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("EDGECOMPRESS_CACHE", str(ROOT / ".cache" / "edgecompress"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def digits_spec():
    from edgecompress.models import load_model

    return load_model("zoo:digits-cnn")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (deterministic, and fair to the other jobs)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits_calib(digits_spec):
    from edgecompress.pipeline import resolve_data

    return resolve_data(digits_spec, None, "calibration", progress=False)


@pytest.fixture(scope="session")
def digits_eval(digits_spec):
    from edgecompress.pipeline import resolve_data

    return resolve_data(digits_spec, None, "evaluation", progress=False)


@pytest.fixture(scope="session")
def digits_reference(digits_spec, digits_eval):
    from edgecompress.targets import reference_outputs

    return reference_outputs(digits_spec.module, digits_eval, progress=False)


@pytest.fixture(scope="session")
def imagenet_labels() -> Path:
    from edgecompress.paths import imagenet_sample

    path = imagenet_sample()
    if path is None:
        pytest.skip("../shared/data/imagenet-sample-1k is absent")
    return path


@pytest.fixture
def default_sigint():
    """Ctrl-C raising KeyboardInterrupt in this process, as in a terminal. A job started in the
    background by a non-interactive shell (`make test &`, some CI runners) inherits SIGINT ignored,
    and Python keeps it so: the tests that send themselves a Ctrl-C then saw nothing."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


# The one wording of a failed --fail-on gate, in `export` and `validate` alike (targets/gates.py
# gate_failure): both commands' tests match it, so a CI log grep works for either.
GATE_FAILURE = re.compile(r"^error: gate failed: (?P<gate>\S.*?) \((?:(?P<file>[^,()]+), )?(?P<format>\S+) "
                          r"(?P<precision>\S+) on (?P<target>\S+): (?P<path>[\w.]+) = (?P<value>[^()\[\]]+?)"
                          r"(?: \[(?P<kind>\w+)\])?\)(?: \(\+\d+ more\))?$")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600):
    """Run the CLI in a subprocess (as users and build scripts do); returns CompletedProcess."""
    import subprocess
    import sys

    # pytest-xdist gives its workers COLUMNS=80 / LINES=24: a build log's piped CLI has neither
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "edgecompress.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**env, "PYTHONWARNINGS": "ignore"})


# What every fake adb does first: log the call, drop `-s SERIAL`, answer `adb devices` from
# FAKE_ADB_DEVICES ("SERIAL" or "SERIAL:offline") and fail as adb does when none is attached. With
# FAKE_ADB_SHELL_V1 set it behaves like adb over shell protocol v1 (devices before Android 7, or an
# old adb): `adb shell` exits 0 whatever the command's exit status, the command's stderr arrives on
# stdout, and every "\n" as "\r\n" (a pty); the script below answers the call as usual, run once
# more without the flag.
FAKE_ADB_HEAD = """#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
if os.environ.get("FAKE_ADB_SHELL_V1") and os.environ.get("FAKE_ADB_DEVICES") and "shell" in args[:3]:
    said = subprocess.run([sys.executable, sys.argv[0], *args], env={{**os.environ, "FAKE_ADB_SHELL_V1": ""}},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    sys.stdout.buffer.write(said.replace(b"\\n", b"\\r\\n"))
    sys.exit(0)
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached")
    for d in os.environ.get("FAKE_ADB_DEVICES", "").split():  # SERIAL or SERIAL:state
        serial, _, state = d.partition(":")
        print(serial + "\\t" + (state or "device"))
    sys.exit(0)
if not os.environ.get("FAKE_ADB_DEVICES"):
    print("adb: no devices/emulators found", file=sys.stderr)
    sys.exit(1)
"""


def install_fake_adb(tmp_path: Path, monkeypatch, script: str):
    """Put FAKE_ADB_HEAD + `script` (the rest of a Python program, `{python}` filled in) on PATH
    as `adb`; it logs each call as a JSON line to FAKE_ADB_LOG. Returns calls(): the logged
    argument lists so far."""
    import json
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "adb"
    exe.write_text((FAKE_ADB_HEAD + script).format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    return lambda: [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


def save_onnx(model, path: Path, external: bool = False) -> None:
    """Save an ONNX ModelProto, its weights in a `<name>.data` file beside it when `external`."""
    import onnx

    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=Path(path).name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
