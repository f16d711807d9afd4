"""The README's build-step example runs as written (with this checkout's venv)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_step_example_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- build-example:[^>]*-->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README: the build-example block is gone"
    script = block.group(1).replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines()]
    assert [row[0] for row in rows] == ["digits-cnn-int8.onnx", "digits-cnn-int8.tflite"], r.stdout
    for name, size, agreement in rows:
        assert (tmp_path / "build" / "model" / name).stat().st_size == int(size)
        assert float(agreement) >= 0.97
