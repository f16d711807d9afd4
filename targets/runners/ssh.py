"""SSH runner: copy the artifact + bench.py to the device, run it there, read the JSON back.

Uses the system `ssh` / `scp` (OpenSSH) as subprocesses, so the user's ssh config, agent and keys
work as usual. Safety:
- host-key checking is ON (`StrictHostKeyChecking=yes`, BatchMode): an unknown or changed host key
  is an error, never a prompt or a silent accept. `known_hosts` in the profile may point at a file.
- every remote argument is quoted with shlex.quote (the remote side runs a shell);
- every step has a timeout (ConnectTimeout + a per-command timeout + ServerAlive keep-alives, so a
  dropped link is noticed within ~15 s);
- the remote temporary directory (mktemp -d) is removed in a `finally`, also after failures;
- the benchmark dies with its timeout on the device too (`timeout -s KILL`, and its pid is killed
  before the cleanup): a benchmark left running after its files were deleted kept the device busy.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgecompress.errors import ConfigError, DeviceError, RuntimeMissingError, ValidationError
from edgecompress.targets.profile import _choice, _env, _host, _int, _positive, _text
from edgecompress.targets.runners import RUNNERS
from edgecompress.targets.runners._remote import staged, time_limit
from edgecompress.targets.runners.local import parse_bench_output

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.local import BenchRequest

# Runs the benchmark on the device: `sh -c GUARD sh DIR SECONDS CMD...`. Its pid goes to DIR/pid
# (the cleanup kills it if we gave up on it), and `timeout -s KILL` ends it at SECONDS where the
# device has a timeout(1) that takes that syntax (coreutils, busybox >= 1.30, toybox). A child of
# sh, not exec'd: killed by a signal itself, the session's process made ssh exit 255 ("failed"),
# while sh's `wait` turns it into exit status 137.
_GUARD = ('d=$1 t=$2; shift 2; '
          'if timeout -s KILL 5 true >/dev/null 2>&1; then timeout -s KILL "$t" "$@" & else "$@" & fi; '
          'echo $! > "$d/pid"; wait $!')
# Kills what _GUARD started (timeout(1) leads its own process group: -pid takes the benchmark
# too; without timeout(1) the pid is the benchmark), then removes the directory.
_KILL_AND_REMOVE = ('p=$(cat "$1/pid" 2>/dev/null) && '
                    '{ kill -s KILL -- "-$p" 2>/dev/null || kill -s KILL "$p" 2>/dev/null; }; rm -rf -- "$1"')
_KILLED = (124, 137)  # timeout(1)'s exit status: 124 (TERM), 128 + 9 (KILL)
_GRACE_S = 10  # our own timeout is the device's + the connect time + this


def ssh_config_value(value: str, what: str) -> str:
    """A path as one `-o Key=value` argument: ssh splits an unquoted value on whitespace (a
    known_hosts path with a space failed as "host key verification failed") and expands %-tokens
    and ${VAR} in it."""
    if '"' in value or "${" in value:
        raise ConfigError(f"[connection] {what} = {value!r}: a path with '\"' or '${{' cannot be passed to "
                          "ssh; move the file")
    return '"' + value.replace("\\", "\\\\").replace("%", "%%") + '"'


class SshTarget:
    """How to reach one device; built from a profile's [connection] table."""

    def __init__(self, conn: dict[str, Any], name: str = "") -> None:
        self.host = str(conn.get("host") or "")
        if not self.host:
            raise ConfigError(f"target {name}: [connection] host is empty (the device is not attached)")
        self.user = str(conn.get("user") or "")
        self.port = int(conn.get("port") or 22)
        self.identity = str(conn.get("identity_file") or "")
        self.known_hosts = str(conn.get("known_hosts") or "")
        # Refused here, before any connection, with the profile named.
        for key, value in (("known_hosts", self.known_hosts), ("identity_file", self.identity)):
            if value:
                try:
                    ssh_config_value(value, key)
                except ConfigError as e:
                    raise ConfigError(f"target {name}: {e}") from None
        self.python = str(conn.get("python") or "python3")
        self.env = {str(k): str(v) for k, v in (conn.get("env") or {}).items()}
        self.connect_timeout = max(1, math.ceil(float(conn.get("connect_timeout_s") or 10)))  # ssh takes whole seconds
        self.command_timeout = float(conn.get("command_timeout_s") or 900)
        self.command_timeout_set = bool(conn.get("command_timeout_s"))
        self.remote_tmp = str(conn.get("remote_tmp") or "/tmp")
        # Only "yes" (default) or "accept-new" (first contact pins the key); never "no".
        self.host_key_policy = str(conn.get("strict_host_key_checking") or "yes")
        if self.host_key_policy not in ("yes", "accept-new"):
            raise ConfigError(f"target {name}: strict_host_key_checking must be 'yes' or 'accept-new'")
        self.where = f"ssh {self.user + '@' if self.user else ''}{self.host}:{self.port}"

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={self.host_key_policy}",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={ssh_config_value(self.known_hosts, 'known_hosts')}"]
        if self.identity:
            # -o IdentityFile, not -i: `-i` checks the raw path before %-expansion, so no spelling
            # of a path holding '%' worked there.
            opts += ["-o", f"IdentityFile={ssh_config_value(self.identity, 'identity_file')}",
                     "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_argv(self, remote_args: list[str]) -> list[str]:
        """ssh command line; the remote command is one string of shell-quoted words."""
        return ["ssh", *self.options(), "-p", str(self.port), "--", self.dest,
                " ".join(shlex.quote(a) for a in remote_args)]

    def scp_argv(self, sources: list[str], dest: str) -> list[str]:
        return ["scp", "-q", *self.options(), "-P", str(self.port), "--", *sources, dest]

    def remote(self, path: str) -> str:
        # scp (SFTP mode) takes the remote path literally; the destination host prefix is ours.
        return f"{self.dest}:{path}"

    def _run(self, argv: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"{self.where}: {what} timed out after {timeout:.0f} s") from None
        except FileNotFoundError:
            raise RuntimeMissingError(f"{argv[0]} not found: install the OpenSSH client") from None
        if proc.returncode == 255:  # ssh's own failure: connection, auth or host key
            raise DeviceError(f"{self.where}: {what} failed: {_ssh_reason(proc.stderr)}")
        return proc

    def run(self, remote_args: list[str], what: str, timeout: float | None = None):
        return self._run(self.ssh_argv(remote_args), what, timeout or self.command_timeout)

    def copy_to(self, local: list[Path], remote_dir: str, timeout: float | None = None) -> None:
        proc = self._run(self.scp_argv([str(p) for p in local], self.remote(remote_dir + "/")),
                         "copy to device", timeout or self.command_timeout)
        if proc.returncode != 0:
            raise ValidationError(f"{self.where}: copy to device failed: {_ssh_reason(proc.stderr)}")

    def copy_from(self, remote_path: str, local: Path, timeout: float | None = None) -> None:
        proc = self._run(self.scp_argv([self.remote(remote_path)], str(local)),
                         "copy from device", timeout or self.command_timeout)
        if proc.returncode != 0:
            raise ValidationError(f"{self.where}: copy from device failed: {_ssh_reason(proc.stderr)}")


def _ssh_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return "host key verification failed (add the device's key to known_hosts; checking stays on)"
    if "closed by remote host" in text or "Broken pipe" in text or "Connection reset" in text \
            or "Timeout, server" in text:
        return f"connection dropped ({lines[-1] if lines else 'no message'})"
    return lines[-1][:240] if lines else "ssh exited with status 255"


class SshRunner:
    name = "ssh"
    # What SshTarget reads from [connection]; profile.py checks a profile's table against it.
    connection_keys: ClassVar[dict[str, Any]] = {
        "host": _host, "user": _text, "port": _int(1, 65535), "identity_file": _text, "known_hosts": _text,
        "python": _text, "env": _env, "connect_timeout_s": _positive, "command_timeout_s": _positive,
        "remote_tmp": _text, "strict_host_key_checking": _choice("yes", "accept-new"),
    }

    def attached(self, profile: TargetProfile) -> bool:
        """A host is configured (no login: an unreachable one is the preflight's error)."""
        return bool(profile.connection.get("host"))

    def preflight(self, profile: TargetProfile) -> None:
        """[issue #7] Reach the device once before any export, so an unreachable or refusing
        device fails in seconds with one line and nothing written (DeviceError, exit 3)."""
        t = SshTarget(profile.connection, profile.name)
        try:
            proc = t.run([t.python, "-c", "pass"], "connecting", timeout=t.connect_timeout + 20)
        except DeviceError:
            raise
        except ValidationError as e:  # a time-out while connecting: the device, not a model
            raise DeviceError(str(e)) from None
        if proc.returncode != 0:
            raise DeviceError(f"{t.where}: {t.python} does not run on the device "
                                  f"(exit {proc.returncode}: {_ssh_reason(proc.stderr)})")

    def run(self, req: BenchRequest, profile: TargetProfile | None = None) -> dict[str, Any]:
        if profile is None:
            raise ConfigError("ssh runner: needs a target profile with a [connection] table")
        t = SshTarget(profile.connection, profile.name)
        if req.cpus is None:
            # CPUs 0..n-1 are the LITTLE cores of a big.LITTLE board; the profile's big cores are
            # what its figures describe (validate() passes them; a caller's own choice is kept)
            req = replace(req, cpus=profile.default_cpus(req.threads))
        limit = time_limit(req, t.command_timeout if t.command_timeout_set else None)
        art = Path(req.artifact)
        proc = t.run(["mktemp", "-d", f"{t.remote_tmp.rstrip('/')}/edgecompress.XXXXXXXX"],
                     "creating a remote temp dir", timeout=t.connect_timeout + 20)
        rdir = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
        if not rdir.startswith(t.remote_tmp.rstrip("/") + "/edgecompress."):
            raise DeviceError(f"{t.where}: could not create a temp dir ({_ssh_reason(proc.stderr)})")
        finished = False  # the benchmark returned: nothing of ours can still run on the device
        try:
            stage = staged(req, rdir)
            t.copy_to(stage.files, rdir)
            env = [f"{k}={v}" for k, v in t.env.items()]
            cmd = (["env", *env] if env else []) + stage.command(t.python)
            start = time.monotonic()
            # The device's timeout fires first; ours (later by the connect time) covers a device
            # without timeout(1) or a hung link, and the cleanup below then kills the benchmark.
            proc = t.run(["sh", "-c", _GUARD, "sh", rdir, str(limit), *cmd], "benchmark",
                         timeout=limit + t.connect_timeout + _GRACE_S)
            finished = True
            if proc.returncode in _KILLED and time.monotonic() - start >= limit - 1:
                raise ValidationError(f"{t.where} ({art.name}): benchmark timed out after {limit} s "
                                      "(killed on the device)")
            result = parse_bench_output(proc.stdout, proc.stderr, proc.returncode,
                                        f"{t.where} ({art.name})")
            if stage.outputs and req.outputs:
                t.copy_from(stage.outputs, Path(req.outputs))
                result["outputs"] = str(req.outputs)
            result["device"] = {"transport": "ssh", "host": t.host, "port": t.port,
                                "python": t.python}
            return result
        finally:
            # Clean up even after a failure; a dead link makes this fail too, which we ignore. The
            # kill only when the benchmark did not return: its pid could be another process's now.
            cleanup = ["rm", "-rf", "--", rdir] if finished else ["sh", "-c", _KILL_AND_REMOVE, "sh", rdir]
            with contextlib.suppress(ValidationError):
                t.run(cleanup, "cleanup", timeout=t.connect_timeout + 20)


RUNNERS.register("ssh", SshRunner())
