"""ONNX artifacts carry no per-node debug metadata: no source paths, same bytes wherever the code lives.

torch.onnx's dynamo exporter writes each node's stack trace (absolute paths and lines of the user's
source), FX node text and module hierarchy into `metadata_props`: 65 % of a small QAT int8 file,
the build machine's layout shipped in the app's model, and another sha256 for the same weights
when the source sat in another folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# A digits-like model (1x8x8 in, 10 classes), written to two folders as a user's source file.
SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Net()
'''


def _build_from(folder: Path):
    folder.mkdir(parents=True)
    (folder / "netsrc.py").write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("netsrc", folder / "netsrc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build()


def _node_metadata(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path))
    keys = [p.key for n in m.graph.node for p in n.metadata_props]
    keys += [p.key for f in m.functions for n in f.node for p in n.metadata_props]
    return keys


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_bytes_do_not_depend_on_where_the_source_lives(tmp_path, precision):
    from edgecompress.data import load_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.models import load_model

    calib = load_data(np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))
    files = []
    for where in ("src-a", "elsewhere/src-b"):
        spec = load_model(_build_from(tmp_path / where), input_shape=(1, 1, 8, 8))
        art = export(spec, "onnx", precision, tmp_path / f"out-{where.replace('/', '-')}", calib,
                     ExportOptions(calib_method="minmax", progress=False))
        files.append(Path(art.path))
    a, b = (f.read_bytes() for f in files)
    assert _node_metadata(files[0]) == []
    assert str(tmp_path).encode() not in a and b"netsrc.py" not in a and b"stack_trace" not in a
    assert a == b
