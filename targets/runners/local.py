"""Local runner: each artifact runs in its own Python process via bench.py.

A separate process per artifact means a runtime crash or leak cannot take the CLI down, peak RSS
belongs to that artifact alone, and CPU affinity / thread pools are set before the runtime loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ValidationError
from edgecompress.targets.runners import RUNNERS

if TYPE_CHECKING:
    from edgecompress.exporters import Artifact
    from edgecompress.targets.validate import ValidateSettings

BENCH = Path(__file__).resolve().parent.parent / "bench.py"


@dataclass
class BenchRequest:
    """What to measure for one artifact; becomes bench.py's command line."""

    artifact: Path
    runtime: str
    threads: int = 1
    cpus: list[int] | None = None
    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    runs: int = 100
    inputs: Path | None = None
    outputs: Path | None = None
    precision_hint: str | None = None
    layout: str = "NCHW"
    eval_batch: int = 8
    timeout_s: float = 1800
    # not bench.py flags: the estimate runner costs this format's layers at this precision
    precision: str = ""
    format: str = ""

    @classmethod
    def for_artifact(cls, art: Artifact, settings: ValidateSettings, *, inputs: Path | None,
                     outputs: Path | None = None, cpus: list[int] | None = None) -> BenchRequest:
        """The request `validate` (and `edgecompress validate`'s reference run) makes for `art`,
        from its format's row: its runtime, fixed batch and fp32 hint."""
        from edgecompress.exporters import FORMATS
        from edgecompress.targets.validate import fixed_batch

        fmt = FORMATS.get(art.format)
        fixed = fixed_batch(art)
        pin_f32 = fmt.pins_fp32 and art.precision in ("fp32", "fp16")
        return cls(
            artifact=Path(art.path), runtime=fmt.runtime, threads=settings.threads, cpus=cpus,
            batches=settings.batches if fixed is None else (fixed,), warmup=settings.warmup,
            runs=settings.runs, inputs=inputs, outputs=outputs,
            precision_hint=settings.openvino_fp32_hint if pin_f32 else None,
            layout=art.inputs[0].layout if art.inputs and art.inputs[0].layout else "NCHW",
            eval_batch=fixed or settings.eval_batch, precision=art.precision, format=art.format)

    def argv(self, artifact: str | None = None, inputs: str | None = None,
             outputs: str | None = None) -> list[str]:
        args = [artifact or str(self.artifact), "--runtime", self.runtime,
                "--threads", str(self.threads), "--batches", ",".join(map(str, self.batches)),
                "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--layout", self.layout, "--eval-batch", str(self.eval_batch)]
        if self.cpus:
            args += ["--cpus", ",".join(map(str, self.cpus))]
        if self.inputs:
            args += ["--inputs", inputs or str(self.inputs)]
        if self.outputs:
            args += ["--outputs", outputs or str(self.outputs)]
        if self.precision_hint:
            args += ["--precision-hint", self.precision_hint]
        return args


def parse_bench_output(stdout: str, stderr: str, returncode: int, where: str) -> dict[str, Any]:
    """The JSON on bench.py's last stdout line, or a one-line error naming what failed."""
    if returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {returncode}"
        tb = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback (")), default=None)
        if tb is not None:
            # The exception and all of its message: ORT's names the problem on its second line
            # ("index: 2 Got: 224 Expected: 8") and ends with a generic "Please fix either ...".
            frames = [i for i in range(tb + 1, len(lines)) if lines[i].startswith('  File "')]
            start = (frames[-1] + 1) if frames else tb + 1
            while start < len(lines) and lines[start].startswith("    "):  # its code line, ^^^ marks
                start += 1
            if start < len(lines):
                last = " ".join(ln.strip() for ln in lines[start:])
        if "ModuleNotFoundError" in last or "No module named" in last:
            from edgecompress.errors import RuntimeMissingError

            raise RuntimeMissingError(f"{where}: runtime not installed ({last.strip()})")
        raise ValidationError(f"{where}: benchmark failed ({last.strip()[:400]})")
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValidationError(f"{where}: benchmark printed no result")


class LocalRunner:
    name = "local"
    connection_keys = None  # reads no [connection] (a device's keys may stay; other keys are typos)

    def run(self, req: BenchRequest, profile: Any = None) -> dict[str, Any]:
        cmd = [sys.executable, str(BENCH), *req.argv()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=req.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"{req.artifact}: benchmark timed out after {req.timeout_s:.0f} s") from None
        return parse_bench_output(proc.stdout, proc.stderr, proc.returncode, str(req.artifact))


RUNNERS.register("local", LocalRunner())
