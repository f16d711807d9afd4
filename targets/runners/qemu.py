"""qemu runner: run an artifact on the real aarch64 kernels of its runtime, under qemu-user.

The "device" is an arm64 Debian root filesystem (`scripts/arm64-rootfs.sh`, default
`.cache/arm64-rootfs`) with a venv holding the aarch64 wheels of numpy, onnxruntime and
ai-edge-litert. The artifact, bench.py and the inputs are copied into a fresh directory under the
rootfs's /tmp, bench.py runs there with the chroot's python (`chroot` + the binfmt_misc handler for
aarch64, i.e. qemu-aarch64-static), and the JSON and outputs are read back.

What it proves: the artifact loads and runs on arm64 builds of the runtime and its outputs agree
with the x86 run. What it does NOT give: a device latency. Under emulation every instruction is
translated, so the figures say nothing about a Raspberry Pi or a phone: results carry
`latency_kind = "emulated"`, and reports print them as "(emulated, not a device figure)".
Runs are few (`runs`/`warmup` in the profile's [connection], default 3/1) for the same reason.

/proc is mounted inside a private mount namespace (`unshare --mount`) for the one command, so
nothing stays mounted on the host after a run, even after a crash.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgecompress.errors import RuntimeMissingError, ValidationError
from edgecompress.targets.profile import _env, _int, _positive, _text
from edgecompress.targets.runners import RUNNERS
from edgecompress.targets.runners._remote import staged
from edgecompress.targets.runners.local import parse_bench_output

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOTFS = REPO / ".cache" / "arm64-rootfs"
READY_STAMP = ".edgecompress-ready"  # written last by scripts/arm64-rootfs.sh
_SETUP_HINT = "run `make arm64-check` or `sudo scripts/arm64-rootfs.sh` to build it"


def rootfs_path(profile: TargetProfile | None = None) -> Path:
    """The rootfs: ARM64_ROOTFS, else the profile's connection.rootfs, else .cache/arm64-rootfs."""
    conn = profile.connection if profile is not None else {}
    raw = os.environ.get("ARM64_ROOTFS") or str(conn.get("rootfs") or "") or str(DEFAULT_ROOTFS)
    path = Path(raw)
    return path if path.is_absolute() else REPO / path


def rootfs_ready(rootfs: Path | None = None) -> bool:
    return (Path(rootfs or DEFAULT_ROOTFS) / READY_STAMP).is_file()


def _binfmt_ready() -> bool:
    try:
        return Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text().startswith("enabled")
    except OSError:
        return False


class QemuRunner:
    name = "qemu"
    # What run() reads from [connection]; profile.py checks a profile's table against it.
    connection_keys: ClassVar[dict[str, Any]] = {
        "rootfs": _text, "python": _text, "runs": _int(1), "warmup": _int(0), "command_timeout_s": _positive,
        "env": _env,
    }

    def check(self, rootfs: Path) -> None:
        """A one-line, actionable error for every missing piece."""
        if not rootfs_ready(rootfs):
            raise RuntimeMissingError(f"qemu: no arm64 rootfs at {rootfs} (stamp {READY_STAMP} missing); "
                                      f"{_SETUP_HINT}")
        if os.geteuid() != 0:
            raise RuntimeMissingError("qemu: chroot into the arm64 rootfs needs root")
        if not _binfmt_ready():
            raise RuntimeMissingError("qemu: no enabled binfmt_misc handler for aarch64 "
                                      "(/proc/sys/fs/binfmt_misc/qemu-aarch64); " + _SETUP_HINT)
        for tool in ("chroot", "unshare"):
            if shutil.which(tool) is None:
                raise RuntimeMissingError(f"qemu: `{tool}` not found (util-linux / coreutils)")

    def preflight(self, profile: TargetProfile) -> None:
        """Before any work: the rootfs, root and the aarch64 binfmt handler are there (each missing
        piece failed every artifact's row, after the work, with the same error)."""
        self.check(rootfs_path(profile))

    def run(self, req: BenchRequest, profile: TargetProfile | None = None) -> dict[str, Any]:
        conn = profile.connection if profile is not None else {}
        rootfs = rootfs_path(profile)
        self.check(rootfs)
        python = str(conn.get("python") or "/opt/venv/bin/python")
        runs = max(1, min(req.runs, int(conn.get("runs") or 3)))
        warmup = max(0, min(req.warmup, int(conn.get("warmup") or 1)))
        timeout = float(conn.get("command_timeout_s") or req.timeout_s)
        art = Path(req.artifact)
        if not art.is_file():
            raise ValidationError(f"{art}: no such artifact")
        tmp_root = rootfs / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        host_dir = Path(tempfile.mkdtemp(prefix="edgecompress.", dir=tmp_root))
        inner = "/tmp/" + host_dir.name  # the same directory, as seen inside the chroot
        try:
            # runs / warmup capped: emulation is ~10-100x slower
            stage = staged(replace(req, runs=runs, warmup=warmup), inner)
            for f in stage.files:
                if f.is_file() or f not in stage.siblings:  # a missing one fails at load, in the runtime's words
                    shutil.copy2(f, host_dir / f.name)
            env = ["PATH=/opt/venv/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8",
                   *(f"{k}={v}" for k, v in (conn.get("env") or {}).items())]
            inner_cmd = ["/usr/bin/env", "-i", *env, *stage.command(python)]
            script = ('set -e; mount -t proc proc "$1/proc"; r="$1"; shift; '
                      'exec chroot "$r" "$@"')
            cmd = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                   "sh", str(rootfs), *inner_cmd]
            where = f"qemu-aarch64 ({art.name})"
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise ValidationError(f"{where}: timed out after {timeout:.0f} s under emulation") from None
            result = parse_bench_output(proc.stdout, proc.stderr, proc.returncode, where)
            arch = result.get("machine", {}).get("arch")
            if arch != "aarch64":
                raise ValidationError(f"{where}: bench.py ran on {arch!r}, not aarch64 (rootfs {rootfs})")
            if stage.outputs and req.outputs:
                shutil.copy2(host_dir / "outputs.npy", Path(req.outputs))
                result["outputs"] = str(req.outputs)
            # Never a device figure: the validator and the reports read this field.
            result["latency_kind"] = "emulated"
            # Peak RSS is qemu's (translator included): kept aside, not reported as device memory.
            result["emulator_memory_mb"] = result.get("memory_mb", {})
            result["memory_mb"] = {}
            result["device"] = {"transport": "qemu-user", "rootfs": str(rootfs), "python": python,
                                "note": "latency and memory are of the emulator on this host, "
                                        "not of any arm64 device",
                                "command": " ".join(shlex.quote(c) for c in cmd)}
            return result
        finally:
            shutil.rmtree(host_dir, ignore_errors=True)


RUNNERS.register("qemu", QemuRunner())
