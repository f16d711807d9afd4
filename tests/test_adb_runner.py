"""The adb runner without a phone: command construction (through a fake `adb` on PATH that
records its arguments), parsing of benchmark_model output (fixtures written from the tool's
documented format, see tests/fixtures/README-benchmark_model.md), and the no-device error."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Runs nothing: every shell command "succeeds" (its exit status as the runner asks for it, on
# stdout), the benchmark printing the fixture.
FAKE_ADB = """if "shell" in args:
    if "benchmark_model" in args[-1]:
        sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
    print(os.environ["FAKE_ADB_EXIT_MARKER"] + "0")
sys.exit(0)
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    from conftest import install_fake_adb

    from edgecompress.targets.runners.adb import EXIT_MARKER

    monkeypatch.setenv("FAKE_ADB_EXIT_MARKER", EXIT_MARKER)
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(FIXTURES / "benchmark_model_pixel4_int8.txt"))
    return install_fake_adb(tmp_path, monkeypatch, FAKE_ADB)


def _req(tmp_path, name="efficientnet-lite0-int8.tflite", runtime="litert"):
    from edgecompress.targets.runners.local import BenchRequest

    art = tmp_path / name
    art.write_bytes(b"TFL3 not a real model")
    return BenchRequest(artifact=art, runtime=runtime, threads=4, runs=50, warmup=10)


def test_parse_benchmark_model_fixture():
    from edgecompress.targets.runners.adb import parse_benchmark_model

    r = parse_benchmark_model((FIXTURES / "benchmark_model_pixel4_int8.txt").read_text())
    lat = r["latency_ms"]["1"]
    # The timed run's line (count=50), not the warm-up's (count=10).
    assert lat["runs"] == 50 and lat["mean"] == pytest.approx(6.58312)
    assert lat["min"] == pytest.approx(6.401) and lat["max"] == pytest.approx(7.688)
    assert lat["p50"] == pytest.approx(6.58312)  # no median printed: the mean stands in ...
    assert lat["p50_is_mean"] is True  # ... and the row says so, and the report in words
    from edgecompress.report import Report, artifact_row
    from edgecompress.report.render import to_markdown

    row = artifact_row({"artifact": {"format": "tflite", "precision": "int8", "path": "m.tflite", "size_bytes": 1,
                                     "sha256": ""}, "latency_ms": r["latency_ms"]})
    md = to_markdown(Report(model={"name": "m"}, target="android-arm64", artifacts=[row]), None)
    assert "tflite int8: the device's benchmark_model prints no percentiles, so p50 there is its mean" in md
    assert r["memory_mb"] == {"init_delta": 11.2031, "overall_delta": 14.8867, "peak_rss": 19.4414}
    assert r["load_seconds"] == pytest.approx(0.048312)


def test_parse_benchmark_model_failure_is_one_line():
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.adb import parse_benchmark_model

    with pytest.raises(ValidationError, match=r"no timings.*(not a valid Flatbuffer|Failed to mmap)"):
        parse_benchmark_model((FIXTURES / "benchmark_model_failed.txt").read_text())


def test_cpu_mask():
    from edgecompress.targets.runners.adb import cpu_mask

    assert cpu_mask([4, 5, 6, 7]) == "f0"
    assert cpu_mask([0]) == "1"
    assert cpu_mask([7]) == "80"


def test_adb_commands_pinned_and_quoted(fake_adb, tmp_path, monkeypatch):
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.adb import AdbRunner

    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC")
    prof = get_target("android-arm64")
    res = AdbRunner().run(_req(tmp_path, "my model;rm -rf x.tflite"), prof)
    assert res["latency_ms"]["1"]["mean"] == pytest.approx(6.58312)
    assert res["device"]["pinned"] == [4, 5, 6, 7]
    calls = fake_adb()
    assert calls[0] == ["devices"]
    push = next(c for c in calls if c[0] == "push")
    run_dir = push[2].rstrip("/")  # this run's own folder inside remote_dir
    assert push[1].endswith("my model;rm -rf x.tflite")
    assert run_dir.startswith("/data/local/tmp/edgecompress/edgecompress.")
    bench = next(c for c in calls if c[0] == "shell" and "benchmark_model" in c[1])
    words = shlex.split(bench[1])  # what the phone's shell will see: one word per argument
    i = words.index("taskset")  # after the guard that kills it at its timeout
    assert words[:2] == ["sh", "-c"] and words[i:i + 3] == ["taskset", "f0", "/data/local/tmp/benchmark_model"]
    assert f"--graph={run_dir}/my model;rm -rf x.tflite" in words
    assert "--num_threads=4" in words and "--num_runs=50" in words and "--use_xnnpack=true" in words
    assert calls[-1][0] == "shell" and shlex.split(calls[-1][1])[-3:] == ["rm", "-rf", run_dir]  # that folder only


def test_adb_bench_py_mode_command(tmp_path):
    from edgecompress.targets.runners.adb import AdbDevice

    dev = AdbDevice.__new__(AdbDevice)
    dev.__dict__.update(adb="adb", serial="X", remote_dir="/data/local/tmp/ec", mode="bench.py",
                        run_dir="/data/local/tmp/ec/edgecompress.1",
                        python="/data/data/com.termux/files/usr/bin/python", big_cores=[6, 7],
                        benchmark_model="", timeout=10, name="t")
    (cmd,) = dev.commands(_req(tmp_path, "m.onnx", runtime="onnxruntime"))
    assert cmd[:4] == ["taskset", "c0", "/data/data/com.termux/files/usr/bin/python",
                       "/data/local/tmp/ec/edgecompress.1/bench.py"]
    assert cmd[4] == "/data/local/tmp/ec/edgecompress.1/m.onnx" and "--runtime" in cmd
    assert dev.shell_argv(["echo", "a b"])[:4] == ["adb", "-s", "X", "shell"]


def test_no_device_attached(fake_adb, tmp_path, monkeypatch):
    from edgecompress.errors import ValidationError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.adb import AdbRunner
    from edgecompress.targets.runners.estimate import runner_name_for

    monkeypatch.delenv("FAKE_ADB_DEVICES", raising=False)
    prof = get_target("android-arm64")
    with pytest.raises(ValidationError, match="no device attached") as e:
        AdbRunner().run(_req(tmp_path), prof)
    assert "\n" not in str(e.value)
    assert runner_name_for(prof) == "estimate"  # the validator falls back to an estimate
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC")
    assert runner_name_for(prof) == "estimate"  # decided once per profile object
    assert runner_name_for(get_target("android-arm64")) == "adb"


def test_adb_missing(tmp_path, monkeypatch):
    from edgecompress.errors import RuntimeMissingError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.adb import AdbRunner

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeMissingError, match="adb not found"):
        AdbRunner().run(_req(tmp_path), get_target("android-arm64"))
