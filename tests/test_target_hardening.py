"""Device targets under bad profiles, full disks, slow devices and odd paths (audit of targets/).

The fakes are the ones tests/test_adb_runner.py and tests/test_ssh_runner.py use: an `adb` script
(here one whose "phone" is this machine: push/pull copy files, `shell` runs `sh -c`) and a real
OpenSSH server on 127.0.0.1 with throwaway keys. No device is needed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_ssh_runner import SSHD
from test_ssh_runner import _profile as _ssh_profile
from test_ssh_runner import _req as _ssh_req
from test_ssh_runner import sshd as _sshd_fixture

FIXTURES = Path(__file__).parent / "fixtures"
RPI5 = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "rpi5.toml"
CPUS = sorted(os.sched_getaffinity(0))

sshd = _sshd_fixture  # the loopback sshd of test_ssh_runner.py, started once for this module
needs_sshd = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None,
                                reason="OpenSSH server/client not installed (run scripts/setup-system.sh)")
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2 or CPUS[-1] == 0, reason="needs a second CPU to pin to")

# A fake adb whose "phone" is this machine, so the commands the runner builds really run (after
# conftest.FAKE_ADB_HEAD: logging, `-s`, `adb devices`).
LOCAL_ADB = """if args[0] == "push":
    if os.environ.get("FAKE_ADB_FULL"):
        print("adb: error: failed to copy '%s' to '%s': remote couldn't create file: No space left on device"
              % (args[1], args[2]), file=sys.stderr)
        sys.exit(1)
    shutil.copy(args[1], args[2])
    sys.exit(0)
if args[0] == "pull":
    shutil.copy(args[1], args[2])
    sys.exit(0)
if args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", args[1]]).returncode)
sys.exit(1)
"""


@pytest.fixture
def adb(tmp_path, monkeypatch):
    """The fake adb on PATH and a "phone" folder; returns (calls(), phone dir)."""
    from conftest import install_fake_adb

    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC")
    phone = tmp_path / "phone"
    phone.mkdir()
    return install_fake_adb(tmp_path, monkeypatch, LOCAL_ADB), phone


@pytest.fixture
def adb_v1(adb, monkeypatch):
    """The same fake adb speaking shell protocol v1: `adb shell` exits 0, stderr comes on stdout."""
    monkeypatch.setenv("FAKE_ADB_SHELL_V1", "1")
    return adb


def _remote(call: list[str]) -> list[str]:
    """The words of the command an `adb shell` call runs on the phone (inside the runner's
    exit-status wrapper)."""
    from edgecompress.targets.runners.adb import EXIT_MARKER

    words = shlex.split(call[-1])
    return words[4:] if words[:2] == ["sh", "-c"] and EXIT_MARKER in words[2] else words


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _phone_profile(phone: Path, big_cores: list[int] | None = None, **conn):
    """android-arm64 with the "phone" at `phone` and benchmark_model printing the fixture."""
    from edgecompress.targets import get_target

    prof = get_target("android-arm64")
    bm = _script(phone / "benchmark_model", f"cat '{FIXTURES / 'benchmark_model_pixel4_int8.txt'}'\n")
    c = {**prof.connection, "remote_dir": str(phone), "benchmark_model": str(bm), **conn}
    return replace(prof, connection=c, hardware={**prof.hardware, "big_cores": big_cores or [CPUS[0]]})


def _tflite_req(tmp_path, **kw):
    from edgecompress.targets.runners.local import BenchRequest

    art = tmp_path / "m-int8.tflite"
    art.write_bytes(b"TFL3 not a real model")
    return BenchRequest(artifact=art, runtime="litert", threads=4, runs=50, warmup=10, **kw)


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) has finished; only its parent has not read its status yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _gone(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def onnx_artifact(digits_spec, tmp_path_factory):
    from edgecompress.exporters import export

    return export(digits_spec, "onnx", "fp32", tmp_path_factory.mktemp("art"))


# ---- 1. adb: each run in its own folder; remote_dir itself is never removed ---------------------

def test_adb_removes_only_its_own_folder(adb, tmp_path):
    from edgecompress.targets.runners.adb import AdbRunner

    calls, phone = adb
    (phone / "keep.txt").write_text("the user's file")
    prof = _phone_profile(phone)
    for _ in range(2):
        res = AdbRunner().run(_tflite_req(tmp_path), prof)
        assert res["latency_ms"]["1"]["mean"] == pytest.approx(6.58312)
    shells = [_remote(c) for c in calls() if c[0] == "shell"]
    made = [w[-1] for w in shells if w[:2] == ["mkdir", "-p"]]
    removed = [w[-1] for w in shells if w[:1] == ["rm"]]
    assert len(set(made)) == 2 and removed == made  # one folder per run, and only that one removed
    assert all(Path(d).parent == phone and Path(d).name.startswith("edgecompress.") for d in made)
    assert str(phone) not in removed
    # the phone's own files stay; nothing of ours does
    assert sorted(p.name for p in phone.iterdir()) == ["benchmark_model", "keep.txt"]


# ---- 2. bench.py pinned to the big cores (adb and ssh) ------------------------------------------

def test_adb_bench_py_cpus_are_the_big_cores(adb, tmp_path):
    from edgecompress.targets.runners.adb import AdbDevice

    _, phone = adb
    prof = _phone_profile(phone, mode="bench.py")
    dev = AdbDevice(prof.connection, {"big_cores": [4, 5, 6, 7]}, "phone")
    for threads, want in ((1, "4"), (2, "4,5"), (8, "4,5,6,7")):
        req = replace(_tflite_req(tmp_path), threads=threads, cpus=list(range(threads)))
        (cmd,) = dev.commands(req)
        assert cmd[:2] == ["taskset", "f0"]
        assert cmd[cmd.index("--cpus") + 1] == want, threads  # never 0..n-1, the LITTLE cores


@needs_two_cpus
def test_adb_bench_py_runs_on_the_big_core(adb, onnx_artifact, tmp_path):
    """End to end through the fake phone: bench.py reports the CPUs it ran on."""
    from edgecompress.targets.runners.adb import AdbRunner
    from edgecompress.targets.runners.local import BenchRequest

    _, phone = adb
    big = CPUS[-1]
    prof = _phone_profile(phone, big_cores=[big], mode="bench.py", python=sys.executable)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    req = BenchRequest(artifact=Path(onnx_artifact.path), runtime="onnxruntime", threads=1, cpus=[0],
                       runs=3, warmup=1, inputs=tmp_path / "x.npy")
    res = AdbRunner().run(req, prof)
    assert res["cpus"] == [big]


def test_adb_bench_py_pushes_the_ir_bin(adb, tmp_path):
    """In bench.py mode an OpenVINO IR reached the phone without its .bin (only the .xml,
    bench.py and the inputs were pushed); ssh and qemu copy the format's sibling files."""
    from edgecompress.targets.runners.adb import AdbRunner
    from edgecompress.targets.runners.local import BenchRequest

    calls, phone = adb
    xml = tmp_path / "m-fp32.xml"
    xml.write_text("<net/>")
    (tmp_path / "m-fp32.bin").write_bytes(b"weights")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    # the phone's "python": fails as OpenVINO does without the .bin beside the .xml ($2)
    python = _script(tmp_path / "python", 'b="${2%.xml}.bin"; [ -f "$b" ] || { echo "Traceback (most recent call '
                     'last):" >&2; echo "RuntimeError: cannot open $b" >&2; exit 1; }\n'
                     'echo \'{"latency_ms": {"1": {"p50": 1.0}}, "memory_mb": {}, "runtime": {"name": "openvino"}}\'\n')
    req = BenchRequest(artifact=xml, runtime="openvino", runs=3, warmup=1, inputs=tmp_path / "x.npy")
    res = AdbRunner().run(req, _phone_profile(phone, mode="bench.py", python=str(python)))
    assert res["runtime"]["name"] == "openvino"
    pushed = sorted(Path(c[1]).name for c in calls() if c[0] == "push")
    assert pushed == ["bench.py", "m-fp32.bin", "m-fp32.xml", "x.npy"]


@needs_sshd
@needs_two_cpus
def test_ssh_pins_to_the_big_cores(sshd, onnx_artifact, tmp_path):
    from edgecompress.targets.runners.ssh import SshRunner

    big = CPUS[-1]
    prof = replace(_ssh_profile(sshd, tmp_path), hardware={"big_cores": [big]})
    req = replace(_ssh_req(onnx_artifact, tmp_path), cpus=None)  # nothing chosen: the big cores
    assert SshRunner().run(req, prof)["cpus"] == [big]
    # a choice other than the default is the caller's
    mine = replace(_ssh_req(onnx_artifact, tmp_path), cpus=[CPUS[0]], threads=2)
    assert SshRunner().run(mine, prof)["cpus"] == [CPUS[0]]


def test_default_cpus_follow_the_big_cores():
    from edgecompress.targets import get_target

    phone = get_target("android-arm64")
    assert phone.default_cpus(1) == [4] and phone.default_cpus(2) == [4, 5]
    assert phone.default_cpus(16) == [4, 5, 6, 7]  # never a LITTLE core
    assert replace(phone, hardware={}).default_cpus(2) == [0, 1]


# ---- 3. estimates use the requested threads ------------------------------------------------------

def test_estimate_uses_the_requested_threads(onnx_artifact):
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import EstimateRunner
    from edgecompress.targets.runners.local import BenchRequest

    rpi5 = get_target("rpi5")  # 4 big cores
    got = {}
    for threads in (1, 2, 4, 8):
        req = BenchRequest(artifact=Path(onnx_artifact.path), runtime="onnxruntime", threads=threads,
                           precision="fp32")
        got[threads] = EstimateRunner().run(req, rpi5)
    p50 = {t: r["latency_ms"]["1"]["p50"] for t, r in got.items()}
    assert p50[1] > p50[2] > p50[4]  # one thread is the slowest, as on the device
    assert p50[8] == p50[4]  # capped at the 4 cores there are
    assert [got[t]["runtime"]["settings"]["threads"] for t in (1, 2, 4, 8)] == [1, 2, 4, 4]
    assert got[8]["threads"] == 4 and got[8]["runtime"]["settings"]["threads_requested"] == 8
    assert got[2]["cpus"] == [0, 1] and got[8]["cpus"] == [0, 1, 2, 3]
    assert "threads_requested" not in got[2]["runtime"]["settings"]
    # p50 at 4 significant figures (not 1 us steps), and the throughput is of that same figure
    lat = got[1]["latency_ms"]["1"]
    assert lat["p50"] == float(f"{lat['p50']:.4g}") and lat["throughput_per_s"] == round(1000 / lat["p50"], 2)


def test_estimate_says_it_has_no_other_batch(onnx_artifact):
    """--batch 4 on an estimated target was dropped without a word while settings.batches listed 4."""
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import EstimateRunner
    from edgecompress.targets.runners.local import BenchRequest

    req = BenchRequest(artifact=Path(onnx_artifact.path), runtime="onnxruntime", threads=1, precision="fp32",
                       batches=(1, 4))
    lat = EstimateRunner().run(req, get_target("rpi5"))["latency_ms"]
    assert set(lat) == {"1", "4"} and "p50" in lat["1"]
    assert lat["4"] == {"error": "not estimated: the cost model is fit on batch-1 figures only"}


# ---- 4. the profile's command timeout bounds the benchmark, which dies with it ------------------

def _slow_benchmark(path: Path, marker: Path, parent: Path) -> Path:
    """A benchmark that never ends on its own: writes its pid to `marker` and the command line of
    what started it (the device's timeout(1)) to `parent`, then sleeps a minute."""
    return _script(path, f"echo $$ > '{marker}'\ntr '\\0' '\\n' < /proc/$PPID/cmdline > '{parent}'\n"
                         "exec sleep 60\n")


@needs_sshd
def test_ssh_benchmark_dies_at_the_profile_timeout(sshd, onnx_artifact, tmp_path):
    """The profile's command_timeout_s (not the request's longer limit) bounds the benchmark: it
    is the timeout(1) the benchmark runs under on the device, which kills it; the error names the
    artifact and the limit, and nothing is left running or on disk."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.ssh import SshRunner

    marker, parent = tmp_path / "pid", tmp_path / "parent"
    slow = _slow_benchmark(tmp_path / "slow-python", marker, parent)
    prof = _ssh_profile(sshd, tmp_path, python=str(slow), command_timeout_s=2)
    req = _ssh_req(onnx_artifact, tmp_path)
    assert req.timeout_s > 60  # the request's own limit would let it run out its minute
    name = re.escape(Path(onnx_artifact.path).name)
    with pytest.raises(ValidationError, match=rf"\({name}\): benchmark timed out after 2 s \(killed on the device\)$"):
        SshRunner().run(req, prof)
    # No wall-clock bound (flaky on a loaded machine): the runner says "killed on the device" only
    # for timeout(1)'s kill status, and this is the timeout(1) it ran under, at the profile's 2 s
    assert parent.read_text().split("\n")[:5] == ["timeout", "-s", "KILL", "2", str(slow)]
    assert _gone(int(marker.read_text()))  # not left running on the device
    assert list((tmp_path / "remote").iterdir()) == []


@needs_sshd
def test_ssh_benchmark_killed_without_timeout_on_device(sshd, onnx_artifact, tmp_path, monkeypatch):
    """A device without timeout(1): our own timeout fires and the cleanup kills the benchmark."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners import ssh

    probe = "timeout -s KILL 5 true"
    assert probe in ssh._GUARD
    monkeypatch.setattr(ssh, "_GUARD", ssh._GUARD.replace(probe, "false"))
    monkeypatch.setattr(ssh, "_GRACE_S", 0)
    marker = tmp_path / "pid"
    slow = _script(tmp_path / "slow-python", f"echo $$ > '{marker}'\nexec sleep 60\n")
    prof = _ssh_profile(sshd, tmp_path, python=str(slow), command_timeout_s=1, connect_timeout_s=2)
    with pytest.raises(ValidationError, match="benchmark timed out"):
        ssh.SshRunner().run(_ssh_req(onnx_artifact, tmp_path), prof)
    assert _gone(int(marker.read_text()))
    assert list((tmp_path / "remote").iterdir()) == []


@pytest.mark.parametrize("fake", ["adb", "adb_v1"])
def test_adb_benchmark_dies_at_the_profile_timeout(fake, request, tmp_path):
    """Also over shell protocol v1, where `adb shell` exits 0 even for the killed benchmark."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.adb import AdbRunner

    _, phone = request.getfixturevalue(fake)
    marker, parent = tmp_path / "pid", tmp_path / "parent"
    prof = _phone_profile(phone, command_timeout_s=2)
    bm = _slow_benchmark(phone / "benchmark_model", marker, parent)
    with pytest.raises(ValidationError,
                       match=r"\(m-int8\.tflite\): benchmark timed out after 2 s \(killed on the device\)$"):
        AdbRunner().run(_tflite_req(tmp_path), prof)
    # under the phone's timeout(1) at the profile's 2 s (taskset pins it, then execs it)
    argv = parent.read_text().split("\n")
    assert argv[:4] == ["timeout", "-s", "KILL", "2"] and str(bm) in argv, argv
    assert _gone(int(marker.read_text()))
    assert [p.name for p in phone.iterdir()] == ["benchmark_model"]  # its folder removed


# ---- 5. known_hosts / identity_file paths with spaces and % --------------------------------------

@needs_sshd
def test_ssh_paths_with_spaces_and_percent(sshd, onnx_artifact, tmp_path):
    from edgecompress.targets.runners.ssh import SshRunner

    kh = tmp_path / "known hosts %d" / "known_hosts"
    key = tmp_path / "my keys %h" / "id key"
    for src, dst in ((sshd["dir"] / "known_hosts", kh), (sshd["dir"] / "user_key", key)):
        dst.parent.mkdir()
        shutil.copyfile(src, dst)
    key.chmod(0o600)
    prof = _ssh_profile(sshd, tmp_path, known_hosts=str(kh), identity_file=str(key))
    SshRunner().preflight(prof)
    res = SshRunner().run(_ssh_req(onnx_artifact, tmp_path), prof)  # scp takes the same options
    assert res["latency_ms"]["1"]["p50"] > 0


def test_ssh_refuses_a_path_it_cannot_pass():
    from edgecompress.errors import ConfigError
    from edgecompress.targets.runners.ssh import SshTarget

    for key, value in (("known_hosts", '/tmp/a"b'), ("identity_file", "/home/${USER}/k")):
        with pytest.raises(ConfigError, match=rf"target pi: \[connection\] {key} = .*cannot be passed to ssh"):
            SshTarget({"host": "pi.local", key: value}, "pi")
    opts = SshTarget({"host": "pi", "known_hosts": "/a b/k%h"}, "pi").options()
    assert 'UserKnownHostsFile="/a b/k%%h"' in opts  # one word to ssh, no %-token


# ---- 6. a corrupt artifact on an estimated target ------------------------------------------------

def test_corrupt_onnx_on_estimated_target_is_one_line(onnx_artifact, tmp_path):
    from edgecompress.errors import InputFileError
    from edgecompress.targets import ValidateSettings, validate
    from edgecompress.targets.estimate import estimate_artifact
    from edgecompress.targets.profile import get_target

    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(Path(onnx_artifact.path).read_bytes()[:1000])
    with pytest.raises(InputFileError, match=r"corrupt.onnx: not a readable onnx file") as e:
        estimate_artifact(bad, "onnx", "fp32", get_target("rpi5"))
    assert "\n" not in str(e.value)
    art = replace(onnx_artifact, path=bad, sha256="")
    (m,) = validate([art], "rpi5", settings=ValidateSettings(rounds=1), progress=False)
    assert m.status == "failed" and "corrupt.onnx: not a readable onnx file" in m.error


# ---- 7. profile files checked table by table -----------------------------------------------------

BAD_PROFILES = [
    ("port = 22", 'port = "22x"', "[connection] port = '22x': must be an integer 1..65535"),
    ("port = 22", "port = true", "[connection] port = True: must be an integer"),
    ("command_timeout_s = 1800", 'command_timeout_s = "30 min"',
     "[connection] command_timeout_s = '30 min': must be a positive number"),
    ("connect_timeout_s = 10", "connect_timeout_s = 0",
     "[connection] connect_timeout_s = 0: must be a positive number"),
    ('host = ""', 'hostname = "127.0.0.1"', "[connection] hostname: unknown key (known: … ); did you mean 'host'?"),
    ('host = ""', 'host = ""\nserial = "R58"', "[connection] serial: runner ssh does not read it"),
    ('known_hosts = ""', 'known_hosts = ""\nstrict_host_key_checking = "no"',
     "[connection] strict_host_key_checking = 'no': must be one of 'yes', 'accept-new'"),
    ("memory_bandwidth_gbs = 17.1", "memory_bandwidth_gbs = 0",
     "[hardware] memory_bandwidth_gbs = 0: must be a positive number"),
    ("peak_int8_gops_per_core = 153.6", "peak_int8_gops_per_core = -153.6",
     "[hardware] peak_int8_gops_per_core = -153.6: must be a positive number"),
    ("big_cores = [0, 1, 2, 3]", 'big_cores = "0-3"', "[hardware] big_cores = '0-3': must be a non-empty list"),
    ("big_cores = [0, 1, 2, 3]", "big_cores = [2, 3, 4, 5]", "CPU 5 does not exist with cores = 4"),
    ("big_cores = [0, 1, 2, 3]", "big_cores = []", "[hardware] big_cores = []: must be a list of at least one CPU, "
     "e.g. [4, 5, 6, 7] (leave big_cores out when all cores are alike)"),
    ("big_cores = [0, 1, 2, 3]", 'big_cores = "[0, 1]"',
     "[hardware] big_cores = '[0, 1]': must be a non-empty list of distinct CPU numbers, e.g. [4, 5, 6, 7], "
     "written without quotes: big_cores = [0, 1]"),
    ("port = 22", 'port = "2222"', "[connection] port = '2222': must be an integer 1..65535, written without "
     "quotes: port = 2222"),
    ("command_timeout_s = 1800", 'command_timeout_s = "1e3"',
     "[connection] command_timeout_s = '1e3': must be a positive number, written without quotes: "
     "command_timeout_s = 1e3"),
    ("cores = 4", 'cores = "four"', "[hardware] cores = 'four': must be an integer >= 1"),
    ("clock_ghz = 2.4", "clock_gz = 2.4", "[hardware] clock_gz: unknown key (known: … ); did you mean 'clock_ghz'?"),
    # a descriptive fact (soc, ram_gb) is kept, but not under a near-miss of a key the code reads
    ("clock_ghz = 2.4", "clock_mhz = 2400", "[hardware] clock_mhz: unknown key (known: … ); did you mean 'clock_ghz'?"),
    ("big_cores = [0, 1, 2, 3]", "Big-Cores = [0, 1]",
     "[hardware] Big-Cores: unknown key (known: … ); did you mean 'big_cores'?"),
    ("memory_bandwidth_gbs = 17.1", "memory_bandwith_gbs = 17.1",
     "[hardware] memory_bandwith_gbs: unknown key (known: … ); did you mean 'memory_bandwidth_gbs'?"),
    ("cores = 4", "cores = 4\nbought = 2024-03-01", "[hardware] bought = datetime.date(2024, 3, 1): must be "
     "text, a number, true or false, or a list of them (a descriptive fact)"),
    ("cores = 4", "cores = 4\ngpu = { name = 'VideoCore VII' }", "[hardware] gpu = {'name': 'VideoCore VII'}: "
     "must be text, a number"),
    ('formats = ["onnx", "tflite"]', 'formats = ["onnx", "tfilte"]',
     "formats: unknown format 'tfilte' (known: … ); did you mean 'tflite'?"),
    # [audit21 #9] a format none of the runtimes runs was accepted, and its files "estimated" on a Pi
    ('formats = ["onnx", "tflite"]', 'formats = ["onnx", "tflite", "openvino"]',
     'formats lists openvino, which runs on openvino, but runtimes = ["onnxruntime", "litert"] does not include '
     'it (add "openvino" to runtimes if the device has it, else drop "openvino" from formats)'),
    ('runtimes = ["onnxruntime", "litert"]', 'runtimes = ["onnxruntime"]',
     'formats lists tflite, which runs on litert, but runtimes = ["onnxruntime"] does not include it'),
    ('runtimes = ["onnxruntime", "litert"]', 'runtimes = ["onnxruntime", "litrt"]',
     "runtimes: unknown runtime 'litrt' (known: … ); did you mean 'litert'?"),
    ('runner = "ssh"', 'runner = "SSH"', "unknown runner 'SSH' (known: … ); did you mean 'ssh'?"),
    ('isa = "aarch64"', 'isa = "aarch64"\ndescripton = "x"',
     "descripton: unknown key (known: … ); did you mean 'description'?"),
    ('clock_ghz = "Raspberry', 'clock_ghz = 2.4\nx = "Raspberry', "[sources] clock_ghz = 2.4: must be text"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_PROFILES, ids=[c[1].split("=")[0].strip()
                                                                        + str(i) for i, c in enumerate(BAD_PROFILES)])
def test_bad_profile_is_one_line_naming_file_table_and_key(tmp_path, old, new, message):
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target

    text = RPI5.read_text()
    assert old in text
    path = tmp_path / "my-device.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        get_target(str(path))
    msg = str(e.value)
    assert msg.startswith(f"target={str(path)!r}: ") and "\n" not in msg, msg  # from Python
    # " … " in a message: any text there (a list of known names), the parts in order
    assert re.search(".*".join(map(re.escape, message.split(" … "))), msg), msg


def test_a_profile_may_run_every_format_of_its_runtimes(tmp_path):
    """formats = ["*"]: every registered format one of the listed runtimes runs (x86-local), so a
    new format on an existing runtime validates there without an edit to the profile."""
    from edgecompress.targets import get_target

    text = RPI5.read_text()
    assert 'formats = ["onnx", "tflite"]' in text and 'runtimes = ["onnxruntime", "litert"]' in text
    path = tmp_path / "any.toml"
    path.write_text(text.replace('formats = ["onnx", "tflite"]', 'formats = ["*"]')
                    .replace('runtimes = ["onnxruntime", "litert"]', 'runtimes = ["onnxruntime"]'))
    assert get_target(str(path)).formats == ["onnx"]
    assert get_target("x86-local").formats == ["onnx", "openvino", "tflite"]


def test_bad_profile_through_the_cli(tmp_path):
    from conftest import run_cli

    path = tmp_path / "p.toml"
    path.write_text(RPI5.read_text().replace('host = ""', 'host = "pi.local"').replace("port = 22", 'port = "22x"'))
    r = run_cli("validate", str(tmp_path / "none.onnx"), "--target", str(path), "--out", str(tmp_path / "o"),
                timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: --target {path}: [connection] port = '22x'" in r.stderr


def test_shipped_and_readme_profiles_load(tmp_path):
    from edgecompress.targets import get_target, list_targets
    from edgecompress.targets.runners.estimate import runner_name_for

    assert set(list_targets()) == {p.stem for p in RPI5.parent.glob("*.toml")}
    # README: "copy rpi5.toml and set [connection] host"
    mine = tmp_path / "my-device.toml"
    mine.write_text(RPI5.read_text().replace('host = ""', 'host = "pi.local"'))
    prof = get_target(str(mine))
    assert prof.connection["host"] == "pi.local" and runner_name_for(prof) == "ssh"


def test_descriptive_hardware_facts_are_kept_and_reported(adb, tmp_path):
    """[hardware] may describe the device beyond the figures the code reads (soc, ram_gb): such
    facts load, and the report's description of the device a run was measured on carries them."""
    from edgecompress.exporters.base import Artifact, TensorInfo
    from edgecompress.report import Report, artifact_row
    from edgecompress.report.render import to_markdown
    from edgecompress.targets import ValidateSettings, get_target, validate

    facts = {"soc": "Snapdragon 8 Gen 2", "ram_gb": 8, "gpu_clock_ghz": 0.68, "l2_cache_kb": [512, 512],
             "npu": True, "serial": "from the profile"}
    path = tmp_path / "my-device.toml"
    path.write_text(RPI5.read_text().replace("cores = 4", 'cores = 4\nram_gb = 8\nsoc = "Snapdragon 8 Gen 2"\n'
                                             "gpu_clock_ghz = 0.68\nl2_cache_kb = [512, 512]\nnpu = true\n"
                                             'serial = "from the profile"', 1))
    prof = get_target(str(path))
    assert prof.hardware_facts() == facts
    assert prof.hardware["cores"] == 4 and prof.default_cpus(2) == [0, 1]  # the figures read as before

    _, phone = adb
    base = _phone_profile(phone)
    phone_prof = replace(base, hardware={**base.hardware, **facts})
    art = tmp_path / "m-int8.tflite"
    art.write_bytes(b"TFL3 not a real model")
    nhwc = [TensorInfo("x", [1, 8, 8, 1], layout="NHWC")]
    (m,) = validate([Artifact("tflite", "int8", art, "litert", "m", inputs=nhwc)], phone_prof,
                    settings=ValidateSettings(rounds=1), progress=False)
    assert m.status == "ok", m.error
    device = m.runtime["device"]
    assert device["transport"] == "adb" and device["serial"] == ""  # what ran wins over the profile's word
    assert {k: device[k] for k in facts if k != "serial"} == {k: v for k, v in facts.items() if k != "serial"}
    md = to_markdown(Report(model={"name": "m"}, target=phone_prof.name, artifacts=[artifact_row(m)]), None)
    line = next(ln for ln in md.splitlines() if "device measured on" in ln)
    assert "soc Snapdragon 8 Gen 2" in line and "ram_gb 8" in line, line


def test_profile_built_in_python_is_checked_too():
    from edgecompress.errors import ConfigError
    from edgecompress.targets.profile import TargetProfile

    with pytest.raises(ConfigError, match=r"^target box: \[connection\] port = '22x': must be an integer"):
        TargetProfile("box", "", "x86_64", "ssh", ["onnxruntime"], ["onnx"], connection={"port": "22x"})
    with pytest.raises(ConfigError, match=r"^target box: formats lists openvino, which runs on openvino, but "):
        TargetProfile("box", "", "x86_64", "ssh", ["onnxruntime"], ["onnx", "openvino"])
    # unknown names were skipped for a profile built in Python (a .toml refused them)
    with pytest.raises(ConfigError, match=r"^target box: formats: unknown format 'onxx' \(known: .*\); "
                                          r"did you mean 'onnx'\?$"):
        TargetProfile("box", "", "x86_64", "ssh", ["onnxruntime"], ["onxx"])
    with pytest.raises(ConfigError, match=r"^target box: runtimes: unknown runtime 'ort'"):
        TargetProfile("box", "", "x86_64", "ssh", ["ort"], [])
    assert TargetProfile("box", "", "x86_64", "ssh", ["onnxruntime"], ["*"]).formats == ["onnx"]


def test_zero_bandwidth_in_python_profile_is_refused_by_the_estimator(onnx_artifact):
    """A figure that slipped past the loader (changed after loading) is still no ZeroDivisionError."""
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target
    from edgecompress.targets.estimate import estimate_artifact

    prof = get_target("rpi5")
    prof.hardware["memory_bandwidth_gbs"] = 0
    with pytest.raises(ConfigError, match=r"\[hardware\] memory_bandwidth_gbs = 0 must be a positive number"):
        estimate_artifact(onnx_artifact.path, "onnx", "fp32", prof)


# ---- 8. device_attached honours [connection] adb ------------------------------------------------

def test_device_attached_uses_the_profiles_adb(adb, tmp_path, monkeypatch):
    from edgecompress.targets.runners.estimate import runner_name_for

    _, phone = adb
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no adb on PATH
    prof = _phone_profile(phone)
    assert runner_name_for(prof) == "estimate"
    prof = _phone_profile(phone, adb=str(tmp_path / "bin" / "adb"))
    assert runner_name_for(prof) == "adb"  # it was estimated although the phone is attached
    monkeypatch.delenv("FAKE_ADB_DEVICES")
    assert runner_name_for(prof) == "adb"  # asked once per profile: a command gets its profile once
    prof = _phone_profile(phone, adb=str(tmp_path / "bin" / "adb"))
    assert runner_name_for(prof) == "estimate"


# ---- 9. adb push errors read as a sentence -------------------------------------------------------

def test_adb_push_error_is_the_last_line(adb, tmp_path, monkeypatch):
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.adb import AdbRunner

    _, phone = adb
    monkeypatch.setenv("FAKE_ADB_FULL", "1")
    with pytest.raises(ValidationError) as e:
        AdbRunner().run(_tflite_req(tmp_path), _phone_profile(phone))
    msg = str(e.value)
    assert msg.endswith("remote couldn't create file: No space left on device)"), msg
    assert "[" not in msg and "'adb: error" not in msg  # no Python list repr


# ---- 10. every runner's preflight: one error before any work -------------------------------------

def test_preflight_unreachable_ssh_host(tmp_path):
    from test_ssh_runner import _free_port

    from edgecompress.errors import ValidationError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import preflight

    path = tmp_path / "pi.toml"
    path.write_text(RPI5.read_text().replace('host = ""', 'host = "127.0.0.1"')
                    .replace("port = 22", f"port = {_free_port()}").replace("connect_timeout_s = 10",
                                                                             "connect_timeout_s = 3"))
    with pytest.raises(ValidationError, match=r"[Cc]onnection refused") as e:
        preflight(get_target(str(path)))
    assert "\n" not in str(e.value)


def test_unreachable_device_exits_3_not_4(tmp_path, onnx_artifact):
    """An offline device is not a failed model: it exited 4, the code of a failed gate, so CI read
    "Pi offline" as "model regressed". Now 3 (as a missing runtime), for `validate` and `export`,
    with the one line naming the device and no report written."""
    from test_ssh_runner import _free_port

    from tests.conftest import ROOT, run_cli

    path = tmp_path / "pi.toml"
    path.write_text(RPI5.read_text().replace('host = ""', 'host = "127.0.0.1"')
                    .replace("port = 22", f"port = {_free_port()}").replace("connect_timeout_s = 10",
                                                                             "connect_timeout_s = 3"))
    val = run_cli("validate", str(onnx_artifact.path), "--target", str(path), "--out", str(tmp_path / "v"), cwd=ROOT)
    assert val.returncode == 3, val.stderr[-2000:]
    assert re.search(r"error: ssh \S*127\.0\.0\.1\S*: connecting failed: .*[Cc]onnection refused", val.stderr)
    assert not (tmp_path / "v" / "report.json").exists()
    exp = run_cli("export", "zoo:digits-cnn", "-f", "onnx", "--target", str(path), "--out", str(tmp_path / "e"),
                  cwd=ROOT)
    assert exp.returncode == 3 and "connecting failed" in exp.stderr, exp.stderr[-2000:]
    assert not (tmp_path / "e").exists()


def test_device_lost_mid_run_stops_validate(onnx_artifact, monkeypatch):
    """A device that drops during the run fails every artifact the same way: validate() stops at
    the DeviceError (exit 3) instead of reporting each artifact failed (exit 4), in the first
    round and in the latency rounds after it."""
    from edgecompress.errors import DeviceError
    from edgecompress.targets import ValidateSettings, validate
    from edgecompress.targets.runners.local import LocalRunner

    real, calls = LocalRunner.run, []

    def drops(self, req, profile=None, fail_at=1):
        calls.append(req)
        if len(calls) > fail_at:
            raise DeviceError("ssh pi@pi.local: copy to device failed: connection dropped")
        return real(self, req, profile)

    monkeypatch.setattr(LocalRunner, "run", lambda self, req, profile=None: drops(self, req, profile, 0))
    with pytest.raises(DeviceError, match="connection dropped"):
        validate([onnx_artifact], settings=ValidateSettings(runs=3, warmup=1, rounds=1), progress=False)
    calls.clear()
    monkeypatch.setattr(LocalRunner, "run", lambda self, req, profile=None: drops(self, req, profile, 1))
    with pytest.raises(DeviceError, match="connection dropped"):  # round 2 of 2
        validate([onnx_artifact], settings=ValidateSettings(runs=3, warmup=1, rounds=2), progress=False)
    assert len(calls) == 2


def test_preflight_adb(adb, monkeypatch):
    from edgecompress.errors import RuntimeMissingError, ValidationError
    from edgecompress.targets.runners.adb import AdbRunner
    from edgecompress.targets.runners.estimate import preflight

    _, phone = adb
    prof = _phone_profile(phone)
    assert preflight(prof) == "adb"
    (phone / "benchmark_model").unlink()
    with pytest.raises(RuntimeMissingError, match=r"benchmark_model not on the device"):
        preflight(prof)
    monkeypatch.setenv("FAKE_ADB_DEVICES", "OTHER")
    with pytest.raises(ValidationError, match=r"no device R58 attached"):
        AdbRunner().preflight(replace(prof, connection={**prof.connection, "serial": "R58"}))
    monkeypatch.delenv("FAKE_ADB_DEVICES")
    assert preflight(_phone_profile(phone)) == "estimate"  # no phone: estimated, and the estimate can run


def test_preflight_adb_on_shell_protocol_v1(adb_v1):
    """Old adb (shell protocol v1) exits 0 whatever the remote command did: a missing
    benchmark_model or python passed the preflight and every artifact failed later."""
    from edgecompress.errors import RuntimeMissingError
    from edgecompress.targets.runners.estimate import preflight

    _, phone = adb_v1
    prof = _phone_profile(phone)
    assert preflight(prof) == "adb"
    (phone / "benchmark_model").unlink()
    with pytest.raises(RuntimeMissingError) as e:
        preflight(prof)
    assert str(e.value) == (f"adb android-arm64: {phone / 'benchmark_model'} not on the device "
                            "(push LiteRT's benchmark_model there)")
    assert preflight(_phone_profile(phone, mode="bench.py", python=sys.executable)) == "adb"
    with pytest.raises(RuntimeMissingError, match=r"/no/python with numpy does not run on the device "
                                                  r"\(exit 127: .*not found\)$") as e:
        preflight(_phone_profile(phone, mode="bench.py", python="/no/python"))
    assert "\n" not in str(e.value) and "\r" not in str(e.value)


def test_adb_bench_py_on_shell_protocol_v1(adb_v1, onnx_artifact, tmp_path):
    """Over shell protocol v1 bench.py's result and its errors all arrive on stdout (with "\r\n"),
    and its exit status only through the runner's marker."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.adb import AdbRunner
    from edgecompress.targets.runners.local import BenchRequest

    _, phone = adb_v1
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    req = BenchRequest(artifact=Path(onnx_artifact.path), runtime="onnxruntime", threads=1, runs=3, warmup=1,
                       inputs=tmp_path / "x.npy")
    res = AdbRunner().run(req, _phone_profile(phone, mode="bench.py", python=sys.executable))
    assert res["latency_ms"]["1"]["p50"] > 0 and res["runtime"]["name"] == "onnxruntime"
    broken = _script(tmp_path / "broken-python", 'echo "Traceback (most recent call last):" >&2\n'
                                                  'echo "ValueError: the model is broken" >&2\nexit 3\n')
    with pytest.raises(ValidationError) as e:
        AdbRunner().run(req, _phone_profile(phone, mode="bench.py", python=str(broken)))
    assert str(e.value).endswith("benchmark failed (ValueError: the model is broken)"), str(e.value)
    assert [p.name for p in phone.iterdir()] == ["benchmark_model"]  # its folder removed


def test_adb_mkdir_failure_on_shell_protocol_v1(adb_v1, tmp_path):
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.adb import AdbRunner

    calls, phone = adb_v1
    (tmp_path / "a-file").write_text("not a folder")
    prof = _phone_profile(phone, remote_dir=str(tmp_path / "a-file"))
    with pytest.raises(ValidationError, match=r"^adb android-arm64: mkdir failed \(mkdir: .*a-file.*\)$"):
        AdbRunner().run(_tflite_req(tmp_path), prof)
    assert not any(c[0] == "push" for c in calls())  # stopped there


def test_preflight_qemu_without_rootfs(tmp_path, monkeypatch):
    from edgecompress.errors import RuntimeMissingError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import preflight

    monkeypatch.setenv("ARM64_ROOTFS", str(tmp_path / "no-rootfs"))
    with pytest.raises(RuntimeMissingError, match=r"qemu: no arm64 rootfs at .*no-rootfs"):
        preflight(get_target("arm64-qemu"))


def test_preflight_estimate_needs_hardware_figures(tmp_path):
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import preflight

    path = tmp_path / "est.toml"
    path.write_text(RPI5.read_text().replace("peak_int8_gops_per_core = 153.6\n", ""))
    prof = get_target(str(path))  # loads: the figure is needed only for an estimate
    with pytest.raises(ConfigError, match=r"\[hardware\] peak_int8_gops_per_core is needed for an estimate"):
        preflight(prof)
    assert preflight(get_target("rpi5")) == "estimate"


def test_validate_pins_to_the_profiles_big_cores(sshd, onnx_artifact, tmp_path):
    """validate() chose CPUs 0..n-1 for every runner: the LITTLE cores of a big.LITTLE board."""
    from edgecompress.targets import ValidateSettings, validate

    big = CPUS[-1]
    prof = replace(_ssh_profile(sshd, tmp_path), hardware={"big_cores": [big]})
    (m,) = validate([onnx_artifact], prof, settings=ValidateSettings(runs=2, warmup=0, rounds=1), progress=False)
    assert m.status == "ok" and m.settings["cpus"] == [big], (m.error, m.settings)


def test_local_runs_use_this_machines_cpus_whatever_the_profile_says(onnx_artifact, monkeypatch):
    """x86-local's [hardware] lists the VM it was measured on (big_cores [0, 1]); capping a local
    --threads 3 at its big cores would squeeze three threads onto fewer CPUs."""
    import importlib

    from edgecompress.targets import ValidateSettings, get_target

    vmod = importlib.import_module("edgecompress.targets.validate")  # the package re-exports validate()
    local = get_target("x86-local")
    prof = replace(local, hardware={**local.hardware, "big_cores": [0]})
    seen = []

    class Spy:
        def run(self, req, profile):
            seen.append(list(req.cpus))
            raise vmod.ValidationError("stop here")

    monkeypatch.setattr(vmod.RUNNERS, "get", lambda name, flag=None: Spy())
    monkeypatch.setattr(vmod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # a 4-CPU machine
    (m,) = vmod.validate([onnx_artifact], prof, settings=ValidateSettings(threads=3, rounds=1), progress=False)
    assert m.status == "failed" and seen == [[0, 1, 2]]
    # more threads than the machine gives us: refused before anything runs (it ran oversubscribed
    # and the report said 5 threads)
    seen.clear()
    with pytest.raises(vmod.ConfigError, match=r"^threads=5: this machine gives edgecompress 4 CPU\(s\); "
                                              r"use 4 or fewer$"):
        vmod.validate([onnx_artifact], prof, settings=ValidateSettings(threads=5, rounds=1), progress=False)
    assert seen == []


# ---- audit 22F: a named phone, threads beyond the device's cores, int8 on a core without SDOT ------

def test_a_named_phone_that_cannot_be_used_is_a_device_error(adb, monkeypatch):
    """A profile naming its phone (serial) was estimated, exit 0, when adb listed it offline or
    unauthorized: as for an ssh host, a named device that cannot be used stops the run (exit 3)."""
    from edgecompress.errors import DeviceError
    from edgecompress.targets.runners.estimate import preflight, runner_name_for

    _, phone = adb
    for state, hint in (("offline", "adb kill-server"), ("unauthorized", "USB-debugging prompt")):
        monkeypatch.setenv("FAKE_ADB_DEVICES", f"R58M123ABC:{state}")
        prof = _phone_profile(phone, serial="R58M123ABC")
        assert runner_name_for(prof) == "adb"
        with pytest.raises(DeviceError, match=rf"^adb android-arm64: phone R58M123ABC is {state} in "
                                              rf"`adb devices`; .*{hint}"):
            preflight(prof)


def test_an_unusable_phone_without_serial_is_estimated_with_a_note_and_asked_once(adb, monkeypatch, capsys):
    from edgecompress.targets.runners.estimate import runner_name_for

    calls, phone = adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC:unauthorized")
    prof = _phone_profile(phone)
    assert [runner_name_for(prof) for _ in range(4)] == ["estimate"] * 4
    assert sum(c == ["devices"] for c in calls()) == 1  # a hung adb was asked 4 times, 10 s each
    err = capsys.readouterr().err
    assert "note: adb android-arm64: phone R58M123ABC is unauthorized" in err and "estimating instead" in err


@pytest.mark.parametrize(("target", "limit"), [("rpi5", 4), ("android-arm64", 4)])
def test_threads_beyond_the_devices_cores_are_refused_on_every_runner(target, limit):
    """local refused --threads 3 on 2 CPUs; an estimate capped it without a word and a device ran
    4 threads on 2 pinned CPUs, reported as 4: one rule now."""
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target
    from edgecompress.targets.validate import ValidateSettings, check_threads

    prof = get_target(target)
    check_threads(prof, ValidateSettings(threads=limit))
    with pytest.raises(ConfigError, match=rf"^threads={limit + 1}: target {target} has {limit} big core\(s\) "
                                          rf"\(\[hardware\] big_cores\); use {limit} or fewer$"):
        check_threads(prof, ValidateSettings(threads=limit + 1))
    hw = {k: v for k, v in prof.hardware.items() if k != "big_cores"}  # all cores alike
    ssh = replace(prof, runner="ssh", connection={"host": "pi.local"}, hardware=hw)
    with pytest.raises(ConfigError, match=r"has \d+ core\(s\) \(\[hardware\] cores\)"):
        check_threads(ssh, ValidateSettings(threads=int(ssh.hardware["cores"]) + 1))


def test_int8_estimate_on_a_core_without_dot_product_gives_no_speed_up(onnx_artifact, digits_spec, digits_calib,
                                                                       tmp_path):
    """rpi4 (Cortex-A72, no SDOT): the Pixel 4's int8 efficiency times an assumed int8 peak made
    every int8 row 0.94x of fp32, and the one fp32 Pi 4 figure's error was quoted for it."""
    from edgecompress.exporters import export
    from edgecompress.report import Report
    from edgecompress.report.render import table_rows, to_markdown
    from edgecompress.targets import get_target, validate
    from edgecompress.targets.validate import ValidateSettings

    int8 = export(digits_spec, "onnx", "int8", tmp_path, digits_calib.take(slice(0, 64)))
    got = validate([onnx_artifact, int8], get_target("rpi4"), settings=ValidateSettings(runs=2, warmup=0),
                   progress=False)
    report = Report.from_measurements(got, model={"name": "m"}, target="rpi4", machine={}, versions={})
    rows = {r["precision"]: r for r in table_rows(report)}
    assert rows["fp32"]["speed-up"] == "1.00x" and rows["int8"]["speed-up"] == "—"
    md = to_markdown(report, None)
    assert "On rpi4 at fp32: -58.8 % on its 1 held-out figure" in md
    assert "No published rpi4 int8 figure checks it" in md and "so no int8 speed-up is given" in md
    pi5 = validate([onnx_artifact, int8], get_target("rpi5"), settings=ValidateSettings(runs=2, warmup=0),
                   progress=False)
    assert all("int8_unchecked" not in m.runtime["settings"] for m in pi5)  # Cortex-A76, SDOT: the fit holds


def test_gate_on_an_untimed_batch_is_refused_before_any_work():
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target
    from edgecompress.targets.gates import check_gates_measurable, parse_gates

    gates = parse_gates(["latency_by_batch.4.p50>0"])
    with pytest.raises(ConfigError, match=r"^fail_on='latency_by_batch.4.p50>0': batch 4 is not timed; "
                                          r"add 4 to ValidateSettings.batches$"):
        check_gates_measurable(gates, get_target("x86-local"), batches=(1,))
    check_gates_measurable(gates, get_target("x86-local"), batches=(1, 4))
    # an estimate's throughput is 1000 / its p50: the same figure, gateable as the p50 is
    check_gates_measurable(parse_gates(["latency_by_batch.1.throughput_per_s<100"]), get_target("rpi5"))


def test_a_gate_with_a_thousands_separator_names_the_whole_text():
    from edgecompress.errors import ConfigError
    from edgecompress.targets.gates import parse_gates

    with pytest.raises(ConfigError, match=r"^fail_on='size_bytes>1,000,000': a comma separates gates"):
        parse_gates(["size_bytes>1,000,000"])  # it quoted '000'
    assert [g.text for g in parse_gates(["size_bytes>1e6,latency_ms.p50>5"])] == ["size_bytes>1e6", "latency_ms.p50>5"]


def test_a_blank_ssh_host_is_a_profile_error(tmp_path):
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target

    path = tmp_path / "mypi.toml"
    path.write_text(RPI5.read_text().replace('host = ""', 'host = " "').replace('name = "rpi5"', 'name = "mypi"'))
    with pytest.raises(ConfigError, match=r"\[connection\] host = ' ': must be a host name without spaces"):
        get_target(str(path))  # it was a device "offline" (exit 3) in ssh's words


def test_a_local_profile_for_another_isa_is_refused(tmp_path):
    from edgecompress.errors import ConfigError
    from edgecompress.targets import get_target
    from edgecompress.targets.runners.estimate import preflight

    path = tmp_path / "loc.toml"
    path.write_text('name = "loc"\nisa = "aarch64"\nrunner = "local"\nruntimes = ["onnxruntime"]\n'
                    'formats = ["onnx"]\ndescription = "Raspberry Pi 5"\n')
    with pytest.raises(ConfigError, match=r"runner = \"local\" measures this machine \(\w+\), but isa = 'aarch64'"):
        preflight(get_target(str(path)))
    assert preflight(get_target("x86-local")) == "local"


def test_a_manifest_as_baseline_says_what_it_is(tmp_path):
    from edgecompress.errors import InputFileError
    from edgecompress.report import Report

    (tmp_path / "manifest.json").write_text('{"artifacts": []}')
    with pytest.raises(InputFileError, match=r"no 'model', 'target' keys \(an export's manifest\.json: pass the "
                                             r"report\.json beside it\)"):
        Report.load(tmp_path / "manifest.json")
