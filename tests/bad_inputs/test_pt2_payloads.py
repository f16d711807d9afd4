"""Bad-input catalogue, untrusted `.pt2` archives (issue #7).

torch 2.13's `torch.export.load` runs code from an archive: pickled weights/constants
(`torch.load(weights_only=False)`), sample inputs it retries with weights_only=False, and symbolic
shape expressions it passes to `sympy.sympify` (eval). Each malicious archive below is a real
`torch.export.save` output with one member replaced by a payload that creates a marker file.
`edgecompress` must refuse it in one line naming the file, exit 2, write nothing, and the marker
must not exist. The last test shows the payloads are live: with EDGECOMPRESS_TRUST_PT2=1 (the
user's explicit trust) torch runs them.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


class _Payload:
    """Unpickling it calls open(path, "w"): creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled(marker: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy zip `src` to `dst`, replacing the members whose name ends with a key of `replace`."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zo.writestr(info, data)


def _member(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if n.endswith(suffix))


def _set_exprs(doc, value: str) -> int:
    n = 0
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "expr_str":
                doc[k] = value
                n += 1
            else:
                n += _set_exprs(v, value)
    elif isinstance(doc, list):
        n += sum(_set_exprs(v, value) for v in doc)
    return n


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    import torch

    d = tmp_path_factory.mktemp("pt2")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3),)), d / "plain.pt2")
    batch = torch.export.Dim("batch")
    dyn = torch.export.export(model, (torch.randn(2, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(dyn, d / "dynamic.pt2")
    out = {"plain": d / "plain.pt2", "dynamic": d / "dynamic.pt2"}

    # 1. sample inputs: torch tries weights_only=True, then falls back to weights_only=False
    out["inputs"] = d / "inputs.pt2"
    _rewrite(d / "plain.pt2", out["inputs"], {"data/sample_inputs/model.pt": _pickled(d / "marker-inputs")})
    # 2. a weight marked use_pickle: torch.load(weights_only=False)
    cfg_name = _member(d / "plain.pt2", "model_weights_config.json")
    with zipfile.ZipFile(d / "plain.pt2") as z:
        cfg = json.loads(z.read(cfg_name))
    first = next(iter(cfg["config"]))
    cfg["config"][first]["use_pickle"] = True
    weight_file = cfg["config"][first]["path_name"]
    out["weights"] = d / "weights.pt2"
    _rewrite(
        d / "plain.pt2",
        out["weights"],
        {
            "model_weights_config.json": json.dumps(cfg).encode(),
            f"data/weights/{weight_file}": _pickled(d / "marker-weights"),
        },
    )
    # 3. a symbolic shape expression: sympy.sympify evaluates it
    graph_name = _member(d / "dynamic.pt2", "models/model.json")
    with zipfile.ZipFile(d / "dynamic.pt2") as z:
        doc = json.loads(z.read(graph_name))
    code = f"__import__('pathlib').Path('{d / 'marker-expr'}').touch()"
    assert _set_exprs(doc, f"Symbol('s31', positive=True, integer=True) + 0*len(str({code}))") > 0
    out["expr"] = d / "expr.pt2"
    _rewrite(d / "dynamic.pt2", out["expr"], {"models/model.json": json.dumps(doc).encode()})
    return out


CASES = [
    ("pickled-sample-inputs", "inputs", "marker-inputs", "model.pt (pickle beyond plain tensors)"),
    ("pickled-weight", "weights", "marker-weights", "(pickled, in model_weights_config.json)"),
    ("eval-in-shape-expression", "expr", "marker-expr", "expression"),
]


@pytest.mark.parametrize("case_id,key,marker,fragment", CASES, ids=[c[0] for c in CASES])
def test_untrusted_pt2_is_refused_without_running_it(archives, tmp_path, case_id, key, marker, fragment):
    path = archives[key]
    out = tmp_path / "out"
    proc = run_cli("export", str(path), "-f", "onnx", "--no-validate", "--out", str(out), cwd=ROOT)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert f"MODEL {path}: refused" in lines[0] and fragment in lines[0], lines[0]
    assert "EDGECOMPRESS_TRUST_PT2=1" in lines[0]
    assert not (path.parent / marker).exists(), f"{case_id}: the payload ran"
    assert not (out.exists() and list(out.rglob("*")))


def test_ordinary_pt2_still_loads(archives):
    from edgecompress.models import load_model

    spec = load_model(str(archives["dynamic"]))
    assert spec.inputs[0].shape == (1, 3)
    # a payload-free archive with a fixed batch of 1 passes the safety check and loads, its
    # module running other batches one sample at a time
    import torch

    plain = load_model(str(archives["plain"]))
    assert plain.extra["fixed_batch"] == 1
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(plain.module(x), torch.cat([plain.module(x[i:i + 1]) for i in range(4)]))


def test_trust_flag_lets_torch_load_it_and_the_payload_is_live(archives, monkeypatch):
    """With the user's explicit trust the archive goes to torch.export.load, which runs the
    payload: proof that the refusal above is what stops it."""
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models import load_model

    marker = archives["inputs"].parent / "marker-inputs"
    assert not marker.exists()
    monkeypatch.setenv("EDGECOMPRESS_TRUST_PT2", "1")
    with pytest.raises(EdgeCompressError):  # torch then fails on what the payload returned
        load_model(str(archives["inputs"]))
    assert marker.exists()
    marker.unlink()
