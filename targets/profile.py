"""Target profiles: one TOML file each under targets/profiles/ (or a path the user passes).

Every table is checked key by key when a profile is loaded: a typo (`hostname` for `host`) was
silently ignored and the device silently estimated, and a wrong type (`port = "22x"`,
`big_cores = "0-3"`) failed much later as a traceback or, worse, as a wrong figure. Each bad value
is one ConfigError naming the file, the [table] and the key. [hardware] may also hold descriptive
facts about the device under names of its own (`soc = "..."`, `ram_gb = 8`): kept, and carried
into the report's description of the device a run was measured on; a name a typo away from a key
the code reads (`clock_gz`) is refused as that typo.
"""

from __future__ import annotations

import json
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError, InputFileError, did_you_mean, opt, say

PROFILE_DIR = Path(__file__).parent / "profiles"

# ---- what each table may hold -------------------------------------------------------------------
# A checker takes the value and returns None when it is fine, else what it must be.


def _int(low: int, high: int | None = None):
    def check(v: Any) -> str | None:
        # TOML true/false are Python bools, which are ints: refused (`port = true` is no port).
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
        return None if ok else (f"an integer {low}..{high}" if high is not None else f"an integer >= {low}")
    return check


def _positive(v: Any) -> str | None:
    # typeshed gives numbers.Real no comparison with int
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 and v != float("inf")  # type: ignore[operator]
    return None if ok else "a positive number"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else 'text in quotes (e.g. "...")'


def _host(v: Any) -> str | None:
    """ssh's host: "" (no device: estimated) or a name without spaces. A blank " " counted as a
    configured device and failed in ssh's words as an offline one (exit 3)."""
    if not isinstance(v, str):
        return _text(v)
    if v and (not v.strip() or any(c.isspace() for c in v)):
        return 'a host name without spaces (leave it "" to estimate)'
    return None


def _choice(*options: str):
    def check(v: Any) -> str | None:
        return None if v in options else f"one of {', '.join(repr(o) for o in options)}"
    return check


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _cpu_list(v: Any) -> str | None:
    if v == []:  # read as "no big cores" it would pin to nothing; leaving the key out means every core
        return "a list of at least one CPU, e.g. [4, 5, 6, 7] (leave big_cores out when all cores are alike)"
    ok = (isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)
          and len(set(v)) == len(v))
    return None if ok else "a non-empty list of distinct CPU numbers, e.g. [4, 5, 6, 7]"


def _fact(v: Any) -> str | None:
    """A descriptive [hardware] fact: what the report can show and write as JSON."""
    def plain(x: Any) -> bool:
        return isinstance(x, str | bool | int) or (isinstance(x, float) and math.isfinite(x))
    ok = plain(v) or (isinstance(v, list) and all(plain(x) for x in v))
    return None if ok else "text, a number, true or false, or a list of them (a descriptive fact)"


def _env(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(x, str | int | float) and not isinstance(x, bool)
                                     for x in v.values())
    return None if ok else 'a table of variables, e.g. env = { PYTHONPATH = "/opt/lib" }'


# The [connection] keys are declared by each runner (`connection_keys`, {key: check or None}, in
# targets/runners/*.py); these are what a profile switched between runners is checked against.
_UNDECLARED = object()


def _declared_keys(runner_name: str) -> Any:
    """The runner's [connection] schema {key: check}; None when it reads no [connection] (local,
    estimate); _UNDECLARED for a runner that does not say (a plugin), or an unknown one."""
    from edgecompress.targets.runners import RUNNERS

    runner = RUNNERS.get(runner_name) if runner_name in RUNNERS else None
    declared = getattr(runner, "connection_keys", _UNDECLARED)
    if isinstance(declared, dict):
        return {k: (v if callable(v) else (lambda _v: None)) for k, v in declared.items()}
    return None if declared is None else _UNDECLARED


def _any_connection() -> dict[str, Any]:
    """Every key some runner reads, with its check (runners that share a key check it alike)."""
    from edgecompress.targets.runners import RUNNERS

    keys: dict[str, Any] = {}
    for name, _ in RUNNERS:
        declared = _declared_keys(name)
        for key, check in (declared.items() if isinstance(declared, dict) else ()):
            keys.setdefault(key, check)
    return keys


# [hardware] keys the code reads or types; any other name is a descriptive fact (`_fact`), unless
# it is a typo away from one of these (`_misspelt`).
HARDWARE_KEYS: dict[str, Any] = {
    "cpu": _text, "cores": _int(1), "big_cores": _cpu_list, "clock_ghz": _positive,
    "peak_fp32_gops_per_core": _positive, "peak_int8_gops_per_core": _positive,
    "memory_bandwidth_gbs": _positive, "has_dotprod": _flag,
}


def _hint(name: str, known: list[str]) -> str:
    """"; did you mean 'x'?" for the closest known name (case aside: `SSH` means ssh), else "".
    Cutoff 0.5, lower than the registries' 0.75: a profile's keys are short, and `hostname` (0.67
    from `host`) is the slip to catch."""
    return did_you_mean(name, known, cutoff=0.5)


def _unknown(where: str, section: str, key: str, known: list[str], tail: str = "") -> ConfigError:
    return ConfigError(f"{where}: {section}{key}: unknown key (known: {', '.join(sorted(known))}{tail})"
                       + _hint(key, known))


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: the insertions, deletions and substitutions from a to b."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _misspelt(name: str, known: list[str]) -> bool:
    """Whether `name` is a typo of a known key (case, `_` and `-` aside, at most one edit per four
    letters): `clock_gz`, `Big-Cores`, `clock_mhz` are; `gpu`, `memory_gb`, `gpu_clock_ghz` are not."""
    def bare(s: str) -> str:
        return s.lower().replace("_", "").replace("-", "")
    return any(_edits(bare(name), bare(k)) <= len(bare(k)) // 4 for k in known)


def _as_written(value: str) -> Any:
    """What a quoted value would be written bare (`"2222"` -> 2222, `"[4, 5]"` -> [4, 5]), else None."""
    if "\n" in value or "#" in value:
        return None
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except (ValueError, KeyError):  # TOMLDecodeError is a ValueError
        return None


def _check_table(where: str, section: str, table: dict[str, Any], schema: dict[str, Any],
                 strict: bool = True, facts: bool = False) -> None:
    """Each key known to `schema` and its value of the right kind. An unknown key is refused when
    `strict`, or kept as a descriptive fact (`facts`) unless it is a typo of a known one."""
    for key, value in table.items():
        check = schema.get(key)
        if check is None:
            if facts and not _misspelt(key, list(schema)):
                check = _fact
            elif strict:
                tail = "; a descriptive fact needs a name unlike these" if facts else ""
                raise _unknown(where, f"[{section}] ", key, list(schema), tail)
            else:
                continue
        want = check(value)
        if want is not None:
            # TOML is typed and "2222" is text there; no other figure is read out of text, so say
            # what to write rather than accept it here alone.
            bare = _as_written(value) if isinstance(value, str) else None
            if bare is not None and not isinstance(bare, str) and check(bare) is None:
                want += f", written without quotes: {key} = {value.strip()}"
            raise ConfigError(f"{where}: [{section}] {key} = {value!r}: must be {want}")


def _check_names(where: str, key: str, values: list[str], known: list[str], what: str, failed: str = "") -> None:
    for v in values:
        if v not in known:
            # "runner: unknown runner 'x'" would say it twice
            label = "" if key == what else f"{key}: "
            raise ConfigError(f"{where}: {label}unknown {what} {v!r} (known: {', '.join(known)}{failed})"
                              + _hint(v, known))


@dataclass
class TargetProfile:
    name: str
    description: str
    isa: str
    runner: str  # local, ssh, adb, qemu, estimate
    runtimes: list[str]
    formats: list[str]
    connection: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""
    # The runner this profile resolved to (runners/estimate.runner_name_for), asked once per
    # profile: a hung `adb devices` was probed four times, 10 s each, before every command.
    resolved_runner: str | None = field(default=None, init=False, repr=False, compare=False)
    preflight_passed: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Here, not only in from_file: a profile built in Python reaches the same runners.
        self.check_tables()
        self.check_runtimes()

    def check_runtimes(self) -> None:
        """Each listed format is run by one of `runtimes` (its Format row's runtime): a Pi listing
        openvino without the runtime had OpenVINO files "estimated" on it (ConfigError)."""
        from edgecompress.exporters import FORMATS

        where = _target(self.path) if self.path else f"target {self.name}"
        if self.formats == ["*"]:  # as in a .toml: every format one of the runtimes runs
            self.formats = [n for n, f in FORMATS if f.runtime in self.runtimes]
        # from_file checked these already; a profile built in Python had unknown names skipped
        _check_names(where, "runtimes", self.runtimes, sorted({f.runtime for _, f in FORMATS}), "runtime")
        _check_names(where, "formats", self.formats, FORMATS.names(), "format", FORMATS.failed_note())
        for fmt in self.formats:
            runtime = FORMATS.get(fmt).runtime
            if runtime not in self.runtimes:
                raise ConfigError(f"{where}: formats lists {fmt}, which runs on {runtime}, but runtimes = "
                                  f"{json.dumps(self.runtimes)} does not include it (add \"{runtime}\" to "
                                  f"runtimes if the device has it, else drop \"{fmt}\" from formats)")

    def check_tables(self) -> None:
        """[connection], [hardware] and [sources]: known keys, types and ranges (ConfigError)."""
        where = _target(self.path) if self.path else f"target {self.name}"
        for key in ("connection", "hardware", "sources"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"{where}: {key} must be a table ([{key}])")
        schema = _declared_keys(self.runner)
        known = _any_connection()
        if isinstance(schema, dict):
            unread = [k for k in self.connection if k not in schema and k in known]
            if unread:  # another runner's key: the user meant something this runner does not do
                raise ConfigError(f"{where}: [connection] {unread[0]}: runner {self.runner} does not read "
                                  f"it (its keys: {', '.join(sorted(schema))})")
            _check_table(where, "connection", self.connection, schema)
        else:
            # local and estimate read none: a profile copied from a device's and switched to them
            # may keep that device's keys (checked like that device's), but a key no runner reads
            # is a typo; a runner that declares nothing may read keys of its own
            _check_table(where, "connection", self.connection, known, strict=schema is None)
        _check_table(where, "hardware", self.hardware, HARDWARE_KEYS, facts=True)
        cores, big = self.hardware.get("cores"), self.hardware.get("big_cores")
        if isinstance(cores, int) and big and max(big) >= cores:
            raise ConfigError(f"{where}: [hardware] big_cores = {big!r}: CPU {max(big)} does not exist with "
                              f"cores = {cores} (CPUs are numbered 0..{cores - 1})")
        for key, value in self.sources.items():
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: [sources] {key} = {value!r}: must be text naming the public "
                                  "source of the figure")

    @classmethod
    def from_file(cls, path: Path) -> TargetProfile:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputFileError(f"{_target(path)}: no such file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{_target(path)}: not UTF-8 text (a TOML profile expected)") from None
        except OSError as e:  # a directory, no permission
            raise InputFileError(f"{_target(path)}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{_target(path)}: invalid TOML ({e})") from e
        except RecursionError:  # `x = [[[[...]]]]`: tomllib recurses per level (a traceback)
            from edgecompress.fileio import NESTED_TOO_DEEPLY

            raise ConfigError(f"{_target(path)}: invalid TOML ({NESTED_TOO_DEEPLY})") from None
        where = _target(path)
        missing = [k for k in ("name", "isa", "runner", "runtimes", "formats") if k not in data]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
        # a profile's own keys: not `path` nor the state a run keeps (resolved_runner, preflight_passed,
        # init=False), which were listed as known and then failed TargetProfile(**data): a TypeError
        known = [n for n, f in cls.__dataclass_fields__.items() if f.init and n != "path"]
        for key in data:
            if key not in known:
                raise _unknown(where, "", key, known)
        for key in ("name", "isa", "description"):
            if key in data and not (isinstance(data[key], str) and (data[key].strip() or key == "description")):
                raise ConfigError(f"{where}: {key} = {data[key]!r}: must be non-empty text in quotes")
        from edgecompress.targets.runners import RUNNERS

        if not isinstance(data["runner"], str):
            raise ConfigError(f"{where}: runner = {data['runner']!r}: must be a runner name in quotes "
                              f"(known: {', '.join(RUNNERS.names())})")
        _check_names(where, "runner", [data["runner"]], RUNNERS.names(), "runner", RUNNERS.failed_note())
        for key in ("runtimes", "formats"):
            if not (isinstance(data[key], list) and data[key] and all(isinstance(v, str) for v in data[key])):
                raise ConfigError(f"{where}: {key} must be a list of names, e.g. {key} = [\"onnx\"]")
        from edgecompress.exporters import FORMATS

        # The format table is the one list of formats and of the runtimes that run them.
        _check_names(where, "runtimes", data["runtimes"], sorted({f.runtime for _, f in FORMATS}), "runtime")
        if data["formats"] == ["*"]:
            # every registered format one of its runtimes runs (x86-local): a new format on ONNX
            # Runtime, OpenVINO or LiteRT validates here without an edit to this profile
            data["formats"] = [n for n, f in FORMATS if f.runtime in data["runtimes"]]
        _check_names(where, "formats", data["formats"], FORMATS.names(), "format", FORMATS.failed_note())
        data.setdefault("description", "")
        data["path"] = str(path)
        return cls(**data)

    def check_formats(self, formats: list[str]) -> None:
        """Refuse, before any work, a format this device does not run (an estimate of it would
        read as if it did)."""
        foreign = sorted(set(formats) - set(self.formats))
        if foreign:
            drop = say("drop that --format", "drop it from formats", "drop it from export", "drop that -f")
            raise ConfigError(f"{_target(self.name)} runs {', '.join(self.formats)}; not {', '.join(foreign)} "
                              f"({drop}, or pick a target that lists it)")

    def hardware_facts(self) -> dict[str, Any]:
        """[hardware] beyond the keys the code reads: what the profile says about the device
        (`soc`, `ram_gb`), for the report's description of it."""
        return {k: v for k, v in self.hardware.items() if k not in HARDWARE_KEYS}

    def default_cpus(self, threads: int) -> list[int]:
        """The CPUs a run of `threads` threads is pinned to: the first `threads` big cores when the
        profile lists them (CPUs 0..n-1 are the LITTLE cores of a phone or an RK3588 board), else
        CPUs 0..threads-1. Never more CPUs than there are big cores."""
        big = [int(c) for c in self.hardware.get("big_cores") or []]
        return big[:max(threads, 1)] if big else list(range(max(threads, 1)))


def _target(name_or_path: str | Path) -> str:
    """The target as the caller named it: `--target NAME`, or `target='NAME'` from Python."""
    return opt("--target", "target", name_or_path, quoted=True)


def list_targets() -> dict[str, TargetProfile]:
    return {p.stem: TargetProfile.from_file(p) for p in sorted(PROFILE_DIR.glob("*.toml"))}


def get_target(name_or_path: str) -> TargetProfile:
    """A built-in profile by name, or a user's profile file by path."""
    if name_or_path.endswith(".toml"):
        return TargetProfile.from_file(Path(name_or_path))
    targets = list_targets()
    if name_or_path not in targets:
        raise ConfigError(f"{opt('--target', 'target', repr(name_or_path))}: unknown target "
                          f"(known: {', '.join(targets)}; or pass a profile .toml)"
                          # the registries' cutoff: at 0.5 `x86` would pick one of x86-edge / x86-local
                          + did_you_mean(name_or_path, targets))
    return targets[name_or_path]
