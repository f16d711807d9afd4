"""The ssh runner against a real OpenSSH server on 127.0.0.1 (free port, throwaway keys).

Needs Debian's openssh-server (scripts/setup-system.sh installs it); skipped with the reason when
sshd is absent. The "device" is this machine: its Python (this venv) is the device's runtime.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
pytestmark = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server/client not installed (run scripts/setup-system.sh as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
                 if Path(p).exists()), "internal-sftp")
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp {sftp}
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir sshd insists on
    check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"sshd cannot run here: {check.stderr.strip()[:200]}")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))  # noqa: SIM115
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip("sshd did not start listening")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    yield {"dir": d, "port": port}
    proc.terminate()
    proc.wait(timeout=10)


def _profile(sshd, tmp_path, **conn):
    from edgecompress.targets.profile import TargetProfile

    (tmp_path / "remote").mkdir(exist_ok=True)
    c = {"host": "127.0.0.1", "port": sshd["port"], "user": os.environ.get("USER") or "root",
         "identity_file": str(sshd["dir"] / "user_key"), "known_hosts": str(sshd["dir"] / "known_hosts"),
         "python": sys.executable, "remote_tmp": str(tmp_path / "remote"), "connect_timeout_s": 5,
         "command_timeout_s": 120}
    c.update(conn)
    return TargetProfile(name="loopback", description="", isa="x86_64", runner="ssh",
                         runtimes=["onnxruntime"], formats=["onnx"], connection=c)


@pytest.fixture(scope="module")
def onnx_artifact(digits_spec, tmp_path_factory):
    from edgecompress.exporters import export

    d = tmp_path_factory.mktemp("art")
    return export(digits_spec, "onnx", "fp32", d)


def _req(art, tmp_path, eval_data=None, artifact=None):
    """Times batch 1 on the eval inputs (or zeros); writes outputs only when eval data is given."""
    from edgecompress.targets.runners.local import BenchRequest

    inputs = tmp_path / "inputs.npy"
    np.save(inputs, eval_data.x[:64] if eval_data is not None else np.zeros((2, 1, 8, 8), np.float32))
    return BenchRequest(artifact=Path(artifact or art.path), runtime="onnxruntime", runs=20, warmup=2,
                        inputs=inputs, outputs=tmp_path / "out.npy" if eval_data is not None else None)


def test_ssh_runs_and_matches_local(sshd, onnx_artifact, digits_eval, tmp_path):
    from edgecompress.targets.runners.local import LocalRunner
    from edgecompress.targets.runners.ssh import SshRunner

    prof = _profile(sshd, tmp_path)
    res = SshRunner().run(_req(onnx_artifact, tmp_path, digits_eval), prof)
    remote_out = np.load(tmp_path / "out.npy")
    local = LocalRunner().run(_req(onnx_artifact, tmp_path, digits_eval))
    local_out = np.load(tmp_path / "out.npy")
    assert res["runtime"]["name"] == "onnxruntime" == local["runtime"]["name"]
    assert res["device"]["transport"] == "ssh"
    assert res["latency_ms"]["1"]["runs"] == 20 and res["latency_ms"]["1"]["p50"] > 0
    assert remote_out.shape == (64, 10)
    np.testing.assert_array_equal(remote_out, local_out)  # same runtime, same inputs: same bits
    assert list((tmp_path / "remote").iterdir()) == []  # remote temp dir cleaned up


def test_remote_arguments_are_quoted(sshd, onnx_artifact, tmp_path):
    """A hostile file name reaches the device as data, not as shell code."""
    from edgecompress.targets.runners.ssh import SshRunner

    evil_dir = tmp_path / "a b"
    evil_dir.mkdir()
    evil = evil_dir / "m;touch PWNED $(touch PWNED2).onnx"
    shutil.copyfile(onnx_artifact.path, evil)
    res = SshRunner().run(_req(onnx_artifact, tmp_path, artifact=evil), _profile(sshd, tmp_path))
    assert res["artifact"].endswith("m;touch PWNED $(touch PWNED2).onnx")
    assert not any(Path(p, n).exists() for p in (Path.home(), tmp_path, Path("/tmp"))
                   for n in ("PWNED", "PWNED2"))


def test_missing_runtime_on_device_is_one_clear_line(sshd, onnx_artifact, tmp_path):
    from edgecompress.errors import RuntimeMissingError
    from edgecompress.targets.runners.ssh import SshRunner

    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'onnxruntime'\")\n")
    prof = _profile(sshd, tmp_path, env={"PYTHONPATH": str(tmp_path / "shim")})
    with pytest.raises(RuntimeMissingError) as e:
        SshRunner().run(_req(onnx_artifact, tmp_path), prof)
    msg = str(e.value)
    assert "\n" not in msg and "runtime not installed" in msg and "onnxruntime" in msg
    assert f"127.0.0.1:{sshd['port']}" in msg
    assert list((tmp_path / "remote").iterdir()) == []  # cleaned up after the failure too


def test_dropped_connection_is_one_clear_line(sshd, onnx_artifact, tmp_path):
    """The device's 'python' kills its own sshd session mid-run: the link drops."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.ssh import SshRunner

    dropper = tmp_path / "python-that-drops"
    dropper.write_text("""#!/bin/sh
p=$PPID
while [ "$p" -gt 1 ]; do
  if [ "$(cat /proc/$p/comm)" = sshd ]; then kill -9 "$p"; exit 0; fi
  p=$(awk '{print $4}' /proc/$p/stat)
done
""")
    dropper.chmod(0o755)
    with pytest.raises(ValidationError) as e:
        SshRunner().run(_req(onnx_artifact, tmp_path), _profile(sshd, tmp_path, python=str(dropper)))
    msg = str(e.value)
    assert "\n" not in msg and "connection dropped" in msg and "benchmark" in msg, msg


def test_host_key_checking_is_on(sshd, onnx_artifact, tmp_path):
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.ssh import SshRunner

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd['port']} {pub[0]} {pub[1]}\n")
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    for kh in (wrong, empty):
        with pytest.raises(ValidationError, match="host key verification failed"):
            SshRunner().run(_req(onnx_artifact, tmp_path), _profile(sshd, tmp_path, known_hosts=str(kh)))


def test_unreachable_device_is_one_clear_line(onnx_artifact, tmp_path):
    from edgecompress.errors import ValidationError
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.ssh import SshRunner

    prof = TargetProfile(name="gone", description="", isa="x86_64", runner="ssh", runtimes=[],
                         formats=[], connection={"host": "127.0.0.1", "port": _free_port(),
                                                 "connect_timeout_s": 3})
    with pytest.raises(ValidationError, match=r"[Cc]onnection refused") as e:
        SshRunner().run(_req(onnx_artifact, tmp_path), prof)
    assert "\n" not in str(e.value)


def test_ssh_command_construction():
    from edgecompress.errors import ConfigError
    from edgecompress.targets.runners.ssh import SshTarget

    t = SshTarget({"host": "pi.local", "user": "pi", "port": 2222}, "rpi5")
    argv = t.ssh_argv(["python3", "/tmp/x y/bench.py", "$(rm -rf ~)"])
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-1] == "python3 '/tmp/x y/bench.py' '$(rm -rf ~)'"
    assert argv[argv.index("-p") + 1] == "2222" and "pi@pi.local" in argv
    with pytest.raises(ConfigError):
        SshTarget({"host": "x", "strict_host_key_checking": "no"}, "t")
    with pytest.raises(ConfigError, match="not attached"):
        SshTarget({"host": ""}, "rpi4")
