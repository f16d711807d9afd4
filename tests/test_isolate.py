"""[issue #7] ExportOptions(isolate=True): each export in a spawned child (exporters/_isolate.py).

Each isolated export spawns an interpreter (~3-5 s), so every test here spawns one child at most
(the child of the __main__ case stops before importing torch).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest
import torch

from edgecompress.errors import ExportError
from edgecompress.exporters import ExportOptions, export
from edgecompress.fileio import TEMP_PREFIX
from edgecompress.models.spec import InputSpec

ISOLATE = ExportOptions(isolate=True)


def test_isolated_onnx_is_byte_identical(tmp_path, digits_spec, monkeypatch):
    import subprocess
    import tempfile

    # a private TMPDIR left by a parent killed mid-export goes; a live process's stays
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = tmp_root / f"edgecompress-export-{gone.pid}-x1"
    orphan.mkdir()
    (orphan / "half.onnx").write_bytes(b"\0" * 1024)
    alive = tmp_root / f"edgecompress-export-{os.getppid()}-x2"
    alive.mkdir()
    here = export(digits_spec, "onnx", "fp32", tmp_path / "here")
    child = export(digits_spec, "onnx", "fp32", tmp_path / "child", options=ISOLATE)
    left = sorted(n for n in os.listdir(tmp_root) if n.startswith("edgecompress-export-"))
    assert left == [alive.name]  # the orphan and our own child's are gone
    assert child.sha256 == here.sha256 and child.size_bytes == here.size_bytes
    a, b = here.to_dict(), child.to_dict()
    for d in (a, b):
        d.pop("path")
        d["details"].pop("export_seconds")
    assert b["details"].pop("export_peak_rss_mb") > 0  # the child's own VmHWM
    assert a == b
    assert child.path.name == here.path.name and sorted(os.listdir(tmp_path / "child")) == [child.path.name]


def test_child_error_arrives_with_class_and_message(tmp_path, digits_spec):
    # Real bad input: a 5-channel input for a 1-channel conv fails in torch.export.
    bad = digits_spec.replace(inputs=[InputSpec((1, 5, 28, 28))])
    with pytest.raises(ExportError) as here:
        export(bad, "onnx", "fp32", tmp_path / "here")
    with pytest.raises(ExportError) as child:
        export(bad, "onnx", "fp32", tmp_path / "child", options=ISOLATE)
    assert type(child.value) is type(here.value) and str(child.value) == str(here.value)
    # one line naming the mismatch (torch.export's error under torch.onnx's), without colour codes
    assert "expected input" in str(here.value) and "5 channels" in str(here.value)
    assert "\x1b" not in str(here.value) and "\n" not in str(here.value)
    assert "Traceback" in str(child.value.__cause__)  # the child's traceback, for --debug
    assert not (tmp_path / "child").exists()  # nothing left: the folder the export made is removed too


def test_killed_child_gives_one_line_and_leaves_nothing(tmp_path, digits_spec):
    """SIGKILL the child once its temp file exists (as the OOM killer would): no hook in the child."""
    out = tmp_path / "out"
    out.mkdir()
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if any(n.startswith(TEMP_PREFIX) for n in os.listdir(out)):
                for p in multiprocessing.active_children():
                    if p.name.startswith("edgecompress-export-"):
                        os.kill(p.pid, signal.SIGKILL)
                        killed.append(p.pid)
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    with pytest.raises(ExportError) as err:
        export(digits_spec, "onnx", "fp32", out, options=ISOLATE)
    t.join()
    assert killed, "the child finished before its temp file was seen"
    msg = str(err.value)
    assert "\n" not in msg and "onnx fp32" in msg and "SIGKILL" in msg and str(killed[0]) in msg
    assert os.listdir(out) == []


class _LocalNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_unpicklable_model_is_exported_here_with_a_warning(tmp_path, digits_spec):
    class Net(torch.nn.Module):  # defined in a function: pickle cannot name it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    spec = digits_spec.replace(module=Net(), name="local-net")
    with pytest.warns(RuntimeWarning, match=r"model local-net cannot be sent to a child process .*in this process"):
        art = export(spec, "onnx", "fp32", tmp_path, options=ISOLATE)
    assert "export_peak_rss_mb" not in art.details and os.listdir(tmp_path) == [art.path.name]


def test_main_module_class_falls_back_from_the_child(tmp_path, digits_spec, monkeypatch):
    """A class of an interactive session's __main__ pickles here but cannot be imported in the child."""
    monkeypatch.setattr(_LocalNet, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "_LocalNet", _LocalNet, raising=False)
    spec = digits_spec.replace(module=_LocalNet(), name="main-net")
    with pytest.warns(RuntimeWarning, match=r"main-net cannot be sent to a child process \(AttributeError: Can't get"):
        art = export(spec, "onnx", "fp32", tmp_path, options=ISOLATE)
    assert "export_peak_rss_mb" not in art.details and os.listdir(tmp_path) == [art.path.name]


def test_ctrl_c_stops_the_child_and_leaves_nothing(tmp_path, digits_spec, default_sigint):
    out = tmp_path / "out"
    out.mkdir()
    main = threading.main_thread().ident
    sent: list[bool] = []

    def interrupt() -> None:  # a Ctrl-C to the parent once the child is writing
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sent:
            if any(n.startswith(TEMP_PREFIX) for n in os.listdir(out)):
                signal.pthread_kill(main, signal.SIGINT)
                sent.append(True)
            time.sleep(0.005)

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        export(digits_spec, "onnx", "fp32", out, options=ISOLATE)
    t.join()
    assert sent and os.listdir(out) == []
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("edgecompress-export-")]


def test_recipe_isolate_round_trips_and_is_validated(tmp_path):
    from edgecompress.errors import ConfigError
    from edgecompress.recipe import load_recipe, parse_recipe, save_recipe

    r = parse_recipe({"model": "zoo:digits-cnn", "export": ["onnx:fp32"], "options": {"isolate": True}})
    back = load_recipe(save_recipe(r, tmp_path / "r.yaml"))
    assert back.options.isolate is True and back.resolved() == r.resolved()
    assert parse_recipe({"model": "zoo:digits-cnn"}).options.isolate is False
    with pytest.raises(ConfigError, match=r"options\.isolate"):
        parse_recipe({"model": "zoo:digits-cnn", "options": {"isolate": "maybe"}})


def test_cli_export_has_isolate():
    from conftest import run_cli

    out = run_cli("export", "--help", timeout=120)
    assert out.returncode == 0 and "--isolate" in out.stdout and "child process" in out.stdout


def test_errors_survive_the_pipe():
    """What the child sends back: edgecompress errors keep class and message; an ImportError keeps
    `name`, which api.export turns into RuntimeMissingError as in-process."""
    import pickle

    from edgecompress import errors

    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.EdgeCompressError):
            e = pickle.loads(pickle.dumps(cls("tflite int8:  two\nlines")))
            assert type(e) is cls and str(e) == "tflite int8: two lines"
    e = pickle.loads(pickle.dumps(ImportError("No module named 'openvino'", name="openvino")))
    assert e.name == "openvino"


def test_a_script_without_a_main_guard_fails_in_one_line_instead_of_hanging(tmp_path):
    """isolate=True from a script with no `if __name__ == "__main__":`: the spawned child re-runs
    the script and dies before reading the job; the parent blocked forever writing the model into
    spawn's pipe. Now it is an ExportError naming the fix, and nothing is written."""
    import subprocess

    script = tmp_path / "noguard.py"
    script.write_text("import edgecompress as ec\n"
                      "spec = ec.load_model('zoo:digits-cnn')\n"
                      f"ec.export(spec, 'onnx', 'fp32', {str(tmp_path / 'out')!r}, None,\n"
                      "          ec.ExportOptions(isolate=True))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edgecompress.errors.ExportError: onnx fp32: the export child process") \
        and "re-runs noguard.py" in last and '`if __name__ == "__main__":`' in last, r.stderr[-2000:]
    assert not list((tmp_path / "out").glob("*"))  # the folder export() made, empty


def test_the_export_child_makes_no_semaphore_a_stop_would_leak():
    """tqdm's default multiprocessing lock in the spawned export child: SIGTERM during an
    `--isolate` export ended stderr with Python's "leaked semaphore objects" warning."""
    import subprocess

    probe = ("import io, multiprocessing; multiprocessing.set_start_method('spawn', force=True)\n"
             "from multiprocessing import resource_tracker\n"
             "from edgecompress.exporters import _isolate\n"
             "from edgecompress.progress import LineBar\n"
             "_isolate._bars_without_semaphores()\n"
             "for _ in LineBar(range(2), total=2, file=io.StringIO()): pass\n"
             "print(resource_tracker._resource_tracker._pid)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr[-800:]  # no tracker: nothing to leak
    unfixed = subprocess.run([sys.executable, "-c", probe.replace("_isolate._bars_without_semaphores()", "")],
                             capture_output=True, text=True, timeout=120)
    assert unfixed.stdout.strip() not in ("", "None")  # the probe sees the semaphore tqdm makes otherwise
