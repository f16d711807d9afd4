"""Target profiles: one TOML file each under targets/profiles/ (or a path the user passes)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError, InputFileError

PROFILE_DIR = Path(__file__).parent / "profiles"


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

    @classmethod
    def from_file(cls, path: Path) -> TargetProfile:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputFileError(f"--target {path}: no such file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--target {path}: not UTF-8 text (a TOML profile expected)") from None
        except OSError as e:  # a directory, no permission
            raise InputFileError(f"--target {path}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--target {path}: invalid TOML ({e})") from e
        missing = [k for k in ("name", "isa", "runner", "runtimes", "formats") if k not in data]
        if missing:
            raise ConfigError(f"--target {path}: missing key(s) {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"--target {path}: unknown key(s) {', '.join(unknown)}")
        from edgecompress.targets.runners import RUNNERS

        if data["runner"] not in RUNNERS.names():
            raise ConfigError(f"--target {path}: unknown runner {data['runner']!r} "
                              f"(known: {', '.join(RUNNERS.names())})")
        for key in ("connection", "hardware", "sources"):
            if not isinstance(data.get(key, {}), dict):
                raise ConfigError(f"--target {path}: {key} must be a table ([{key}])")
        for key in ("runtimes", "formats"):
            if not (isinstance(data[key], list) and data[key] and all(isinstance(v, str) for v in data[key])):
                raise ConfigError(f"--target {path}: {key} must be a list of names, e.g. {key} = [\"onnx\"]")
        data.setdefault("description", "")
        data["path"] = str(path)
        return cls(**data)

    def check_formats(self, formats: list[str]) -> None:
        """Refuse, before any work, a format this device does not run (an estimate of it would
        read as if it did)."""
        foreign = sorted(set(formats) - set(self.formats))
        if foreign:
            raise ConfigError(f"--target {self.name} runs {', '.join(self.formats)}; not {', '.join(foreign)} "
                              "(drop that --format, or pick a target that lists it)")


def list_targets() -> dict[str, TargetProfile]:
    return {p.stem: TargetProfile.from_file(p) for p in sorted(PROFILE_DIR.glob("*.toml"))}


def get_target(name_or_path: str) -> TargetProfile:
    """A built-in profile by name, or a user's profile file by path."""
    if name_or_path.endswith(".toml"):
        return TargetProfile.from_file(Path(name_or_path))
    targets = list_targets()
    if name_or_path not in targets:
        raise ConfigError(f"--target {name_or_path!r}: unknown target (known: {', '.join(targets)}; "
                          "or pass a profile .toml)")
    return targets[name_or_path]
