"""Figures for issue #5 (benchmarks/RESULTS-targets.md): ssh runner vs local runner on the same
artifact (a throwaway sshd on 127.0.0.1), and the estimator's calibration table.

Usage: .venv/bin/python benchmarks/bench_targets.py [--runs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def start_sshd(d: Path):
    from test_ssh_runner import SSHD  # same binary lookup as the tests

    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "cfg").write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
                           f"PidFile {d / 'pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
                           "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                           "StrictModes no\nUsePAM no\nSubsystem sftp /usr/lib/openssh/sftp-server\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-f", str(d / "cfg")])
    time.sleep(0.5)
    pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    import numpy as np

    from edgecompress.exporters import export
    from edgecompress.models import load_model
    from edgecompress.targets import estimate
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest, LocalRunner
    from edgecompress.targets.runners.ssh import SshRunner

    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        art = export(load_model("zoo:digits-cnn"), "onnx", "fp32", d / "art")
        np.save(d / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
        proc, port = start_sshd(d)
        try:
            prof = TargetProfile(name="loopback", description="", isa="x86_64", runner="ssh",
                                 runtimes=[], formats=[], connection={
                                     "host": "127.0.0.1", "port": port,
                                     "user": os.environ.get("USER", "root"),
                                     "identity_file": str(d / "user_key"),
                                     "known_hosts": str(d / "known_hosts"), "python": sys.executable})
            req = BenchRequest(artifact=Path(art.path), runtime="onnxruntime", runs=a.runs, warmup=30,
                               inputs=d / "x.npy", cpus=[0])
            res = {"local": [], "ssh": []}
            for _ in range(a.rounds):  # interleaved, so load changes hit both alike
                res["local"].append(LocalRunner().run(req)["latency_ms"]["1"]["p50"])
                t0 = time.perf_counter()
                res["ssh"].append(SshRunner().run(req, prof)["latency_ms"]["1"]["p50"])
                res.setdefault("ssh_wall_s", []).append(time.perf_counter() - t0)
        finally:
            proc.terminate()
    print(f"machine: {os.uname().machine}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    for k in ("local", "ssh"):
        v = res[k]
        print(f"{k:5s} p50 per round: {', '.join(f'{x * 1000:.1f} us' for x in v)}; "
              f"median {statistics.median(v) * 1000:.1f} us")
    print(f"ssh round wall time (copy + run + cleanup): {statistics.median(res['ssh_wall_s']):.2f} s")
    rows = estimate.calibration_report()
    print("\n| model | target | precision | published ms | estimate ms | error % | used for fit |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['target']} | {r['precision']} | {r['latency_ms']} | "
              f"{r['estimate_ms']} | {r['error_pct']:+.1f} | {'yes' if r['used_for_fit'] else 'no'} |")
    print(estimate.calibration_summary(rows))


if __name__ == "__main__":
    main()
