"""What every remote runner (ssh, adb in bench.py mode, qemu) stages for one benchmark: the files
to copy into a folder on the device and bench.py's command line with their paths there."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgecompress.targets.runners.local import BENCH

if TYPE_CHECKING:
    from edgecompress.targets.runners.local import BenchRequest


@dataclass(frozen=True)
class Staged:
    files: list[Path]  # local files to copy into the remote folder
    siblings: list[Path]  # those of them that are the artifact's sibling files
    argv: list[str]  # bench.py's arguments, with the paths in the remote folder
    bench: str  # bench.py in the remote folder
    outputs: str | None  # where bench.py writes the outputs there (None: none asked for)

    def command(self, python: str) -> list[str]:
        return [python, self.bench, *self.argv]


def staged(req: BenchRequest, remote_dir: str) -> Staged:
    """bench.py, the artifact, its format's sibling files (an IR's .bin) and the inputs, all into
    `remote_dir`. The caller adjusts `req` first (cpus, runs); its argv is taken as it is."""
    from edgecompress.exporters.api import sibling_files

    art = Path(req.artifact)
    siblings = sibling_files(art, req.runtime)
    files = [BENCH, art, *siblings, *([Path(req.inputs)] if req.inputs else [])]
    outputs = f"{remote_dir}/outputs.npy" if req.outputs else None
    argv = req.argv(artifact=f"{remote_dir}/{art.name}",
                    inputs=f"{remote_dir}/{Path(req.inputs).name}" if req.inputs else None,
                    outputs=outputs)
    return Staged(files, siblings, argv, f"{remote_dir}/{BENCH.name}", outputs)


def time_limit(req: BenchRequest, command_timeout: float | None) -> int:
    """The benchmark's limit in whole seconds: the request's, capped by the profile's
    command_timeout_s when it sets one (that bounded only the copies before)."""
    limit = min(req.timeout_s, command_timeout) if command_timeout else req.timeout_s
    return max(1, math.ceil(limit))
