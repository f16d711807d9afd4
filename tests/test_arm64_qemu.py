"""arm64 check (issue #5): artifacts under qemu-user in an arm64 Debian rootfs.

The slow test needs the rootfs that `make arm64-check` (scripts/arm64-rootfs.sh) builds into
.cache/arm64-rootfs; without it the test skips, so `make test` stays fast on a fresh machine.
The fast tests check the labelling (emulated latency is never a device figure) and the errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgecompress.targets.runners.qemu import READY_STAMP, QemuRunner, rootfs_path, rootfs_ready


def _qemu_unavailable() -> str:
    rootfs = rootfs_path()
    if not rootfs_ready(rootfs):
        return (f"no arm64 rootfs at {rootfs} ({READY_STAMP} missing): "
                "run `make arm64-check` or scripts/arm64-rootfs.sh to enable this test")
    if os.geteuid() != 0:
        return "chroot into the arm64 rootfs needs root"
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file():
        return "no binfmt_misc handler for aarch64 (scripts/arm64-rootfs.sh enables it)"
    return ""


def test_profile_is_qemu_and_arm64():
    from edgecompress.targets import get_target

    t = get_target("arm64-qemu")
    assert t.runner == "qemu" and t.isa == "aarch64"
    assert set(t.formats) == {"onnx", "tflite"}


def test_missing_rootfs_is_a_clear_error(tmp_path, monkeypatch):
    from edgecompress.errors import RuntimeMissingError
    from edgecompress.targets.runners.local import BenchRequest

    monkeypatch.setenv("ARM64_ROOTFS", str(tmp_path / "none"))
    with pytest.raises(RuntimeMissingError, match=r"no arm64 rootfs .*arm64-check"):
        QemuRunner().run(BenchRequest(artifact=tmp_path / "m.onnx", runtime="onnxruntime"))


def test_qemu_stages_the_ir_and_caps_the_runs(tmp_path, monkeypatch):
    """Without a rootfs or root: the files copied into the chroot and bench.py's command line."""
    import json
    import subprocess

    from edgecompress.targets import get_target
    from edgecompress.targets.runners import qemu
    from edgecompress.targets.runners.local import BenchRequest

    monkeypatch.setenv("ARM64_ROOTFS", str(tmp_path / "rootfs"))
    monkeypatch.setattr(QemuRunner, "check", lambda self, rootfs: None)
    seen: dict = {}

    def fake_run(cmd, **kw):
        outputs = tmp_path / "rootfs" / cmd[cmd.index("--outputs") + 1].lstrip("/")  # seen from the host
        seen.update(cmd=cmd, files=sorted(p.name for p in outputs.parent.iterdir()))
        np.save(outputs, np.zeros((1, 2), np.float32))
        out = {"machine": {"arch": "aarch64"}, "latency_ms": {}, "memory_mb": {}, "runtime": {}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(out), "")

    monkeypatch.setattr(qemu.subprocess, "run", fake_run)
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"weights")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    req = BenchRequest(artifact=xml, runtime="openvino", runs=100, warmup=10, inputs=tmp_path / "x.npy",
                       outputs=tmp_path / "out.npy")
    res = QemuRunner().run(req, get_target("arm64-qemu"))
    assert seen["files"] == ["bench.py", "m.bin", "m.xml", "x.npy"]
    argv = seen["cmd"]
    assert argv[argv.index("--runs") + 1] == "3" and argv[argv.index("--warmup") + 1] == "1"  # the profile's caps
    assert argv[argv.index("--inputs") + 1].endswith("/x.npy") and argv[argv.index("--inputs") + 1].startswith("/tmp/")
    assert res["latency_kind"] == "emulated" and np.load(tmp_path / "out.npy").shape == (1, 2)
    assert list((tmp_path / "rootfs" / "tmp").iterdir()) == []  # its folder removed


def test_emulated_latency_is_labelled_in_reports():
    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows, to_html, to_markdown

    row = {"format": "onnx", "precision": "int8", "size_bytes": 1000, "status": "ok",
           "latency_ms": {"p50": 812.0, "p90": 900.0}, "latency_kind": "emulated",
           "metrics": {}, "drift": {"top1_agreement": 1.0}, "memory_mb": {}, "target": "arm64-qemu"}
    report = Report(model={"name": "m"}, target="arm64-qemu", artifacts=[row])
    assert "(emulated, not a device figure)" in table_rows(report)[0]["p50 ms"]
    assert "EMULATED" in to_markdown(report, plot_name=None)
    assert "not a device figure" in to_html(report)


@pytest.mark.slow
@pytest.mark.skipif(bool(_qemu_unavailable()), reason=_qemu_unavailable() or "ok")
def test_digits_int8_onnx_agrees_on_arm64(tmp_path, digits_spec, digits_calib, digits_eval):
    from edgecompress.exporters import export
    from edgecompress.targets.metrics import drift
    from edgecompress.targets.profile import get_target
    from edgecompress.targets.runners.local import BenchRequest, LocalRunner
    from edgecompress.targets.validate import _inputs_file

    art = export(digits_spec, "onnx", "int8", tmp_path, digits_calib)
    inputs = _inputs_file(digits_eval, tmp_path)
    outs, results = {}, {}
    for where, runner, profile in (("x86", LocalRunner(), None),
                                   ("arm64", QemuRunner(), get_target("arm64-qemu"))):
        req = BenchRequest(artifact=Path(art.path), runtime="onnxruntime", warmup=1, runs=3,
                           inputs=inputs, outputs=tmp_path / f"{where}.npy", timeout_s=900)
        results[where] = runner.run(req, profile)
        outs[where] = np.load(tmp_path / f"{where}.npy")
    assert results["arm64"]["machine"]["arch"] == "aarch64"
    assert results["x86"]["machine"]["arch"] == "x86_64"
    assert results["arm64"]["latency_kind"] == "emulated"
    assert results["arm64"]["memory_mb"] == {}  # the emulator's RSS is not device memory
    assert outs["arm64"].shape == outs["x86"].shape == (len(digits_eval), 10)
    d = drift(outs["x86"], outs["arm64"])
    assert d["top1_agreement"] >= 0.99, d


def test_emulated_latency_regression_is_labelled():
    from edgecompress.report.model import Report
    from edgecompress.targets.baseline import compare_baseline

    def row(p50: float) -> dict:
        return {"format": "onnx", "precision": "int8", "size_bytes": 1000, "status": "ok",
                "target": "arm64-qemu", "latency_ms": {"p50": p50}, "latency_kind": "emulated"}

    report = Report(model={"name": "m"}, target="arm64-qemu", artifacts=[row(2000.0)])
    res = compare_baseline(report, {"artifacts": [row(1000.0)]}, "old.json")
    assert res["regressions"] and res["regressions"][0].endswith("[emulated]")
