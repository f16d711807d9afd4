"""One set of input names across ONNX, OpenVINO and TFLite, as tests/test_output_names.py does for
outputs: an input is named after the model's forward() parameter (`pixels`, `input_ids`), and the
.onnx, the OpenVINO IR and the .tflite (its input tensor and its signature key; litert-torch
named them `serving_default_args_0:0` / `args_0`) carry that name, in the model's order; report.json
records it. Each file is opened and fed by name in its own runtime here.

Also the first output (audit note on `reference_outputs`): the reference is the first tensor in the
order the exporters lay the outputs out, down nested tuples and dicts, and a result no exporter
takes is refused in one line by load_model and reference_outputs alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ModelLoadError
from edgecompress.exporters import ExportOptions, export
from edgecompress.models import load_model
from edgecompress.models.spec import first_output, input_names_from
from tests.conftest import run_cli
from tests.test_output_names import input_names

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ExportOptions(progress=False)
FORMATS = ("onnx", "openvino", "tflite")


class Pixels(nn.Module):
    """A conv classifier whose forward() names its input `pixels`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c(pixels)).mean((2, 3)))


def pixels_net() -> nn.Module:
    """A factory for the CLI (`tests.test_input_names:pixels_net`)."""
    return Pixels().eval()


# --- naming rules -------------------------------------------------------------------------------

def test_inputs_are_named_after_forward_parameters(tmp_path: Path) -> None:
    class Args(nn.Module):
        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return xs[0]

    class Odd(nn.Module):
        def forward(self, größe: torch.Tensor, /, mask: torch.Tensor) -> torch.Tensor:
            return größe * mask

    assert input_names_from(Pixels()) == ["pixels"]
    assert input_names_from(Args(), 2) == ["input", "input_1"]  # no parameter names them
    assert input_names_from(Odd(), 3) == ["gr__e", "mask", "input_2"]  # a tensor name's characters only
    # every loader of a module names it so: an nn.Module, a factory, a .pt2 (the traced parameter's name)
    assert [i.name for i in load_model(Pixels(), input_shape=(1, 3, 8, 8)).inputs] == ["pixels"]
    assert [i.name for i in load_model("tests.test_input_names:pixels_net", input_shape=(1, 3, 8, 8)).inputs] \
        == ["pixels"]
    path = tmp_path / "p.pt2"
    torch.export.save(torch.export.export(Pixels(), (torch.randn(1, 3, 8, 8),)), str(path))
    assert [i.name for i in load_model(str(path)).inputs] == ["pixels"]
    assert [i.name for i in load_model("zoo:digits-cnn").inputs] == ["x"]  # DigitsCNN.forward(self, x)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_format_takes_the_forward_parameter_name(precision: str, tmp_path: Path) -> None:
    """Fed by that name in each runtime (a wrong name fails there), the same values come out."""
    import onnxruntime as ort
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    calib = edgecompress.Dataset(rng.standard_normal((8, 3, 8, 8)).astype("float32"))
    spec = load_model(Pixels(), input_shape=(1, 3, 8, 8))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert spec.module is not None
    with torch.no_grad():
        want = spec.module(torch.from_numpy(x)).numpy()
    for fmt in FORMATS:
        art = export(spec, fmt, precision, tmp_path, calib if precision == "int8" else None, QUIET)
        assert input_names(fmt, art.path) == [i.name for i in art.inputs] == ["pixels"], fmt
        if fmt == "onnx":
            got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
        elif fmt == "openvino":
            got = ov.Core().compile_model(str(art.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"pixels": x})[0]
        else:
            it = Interpreter(model_path=str(art.path))
            (d,) = it.get_input_details()
            feed = x.transpose(0, 2, 3, 1)
            scale, zp = d["quantization"]
            if d["dtype"] == np.int8:
                feed = np.clip(np.round(feed / scale + zp), -128, 127)
            (out,) = it.get_signature_runner()(pixels=feed.astype(d["dtype"])).values()
            scale, zp = it.get_output_details()[0]["quantization"]
            got = (out.astype(np.float32) - zp) * scale if out.dtype == np.int8 else out
        tol = 1e-4 if precision == "fp32" else 0.25 * float(np.abs(want).max())
        assert np.abs(np.asarray(got) - want).max() <= tol, fmt


def test_report_json_records_the_input_name(tmp_path: Path) -> None:
    """The I/O contract in report.json, read from each file, holds the same input name."""
    out = tmp_path / "out"
    proc = run_cli("export", "tests.test_input_names:pixels_net", "--input-shape", "1,3,8,8", "-f", "onnx",
                   "-f", "openvino", "-f", "tflite", "--no-validate", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "report.json").read_text())["artifacts"]
    assert sorted(r["format"] for r in rows) == sorted(FORMATS)
    assert [[i["name"] for i in r["io"]["inputs"]] for r in rows] == [["pixels"]] * 3


# --- several inputs -----------------------------------------------------------------------------

def test_a_text_encoder_keeps_its_two_names_in_order(tmp_path: Path) -> None:
    """input_ids and attention_mask, distinct and in forward()'s order in every file; fed by name
    with padding in the mask, so two swapped inputs would change the result."""
    import onnxruntime as ort
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    from tests.test_transformers import _save_tiny

    spec = load_model(str(_save_tiny(tmp_path / "tiny")), input_shape="1,16")
    assert [i.name for i in spec.inputs] == input_names_from(spec.module, 2) == ["input_ids", "attention_mask"]
    ids = np.zeros((1, 16), np.int64)
    ids[0, :6] = [2, 6, 7, 9, 17, 3]  # [CLS] a man is playing [SEP], then padding
    mask = (ids > 0).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    assert spec.module is not None
    with torch.no_grad():
        want = spec.module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        unmasked = spec.module(torch.from_numpy(ids), torch.ones_like(torch.from_numpy(mask))).numpy()
    assert np.abs(unmasked - want).max() > 1e-2  # the mask matters: a swapped or dropped one shows
    for fmt in FORMATS:
        art = export(spec, fmt, "fp32", tmp_path, options=QUIET)
        assert input_names(fmt, art.path) == [i.name for i in art.inputs] == ["input_ids", "attention_mask"], fmt
        if fmt == "onnx":
            got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        elif fmt == "openvino":
            got = ov.Core().compile_model(str(art.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feed)[0]
        else:
            runner = Interpreter(model_path=str(art.path)).get_signature_runner()
            (got,) = runner(**{k: v.astype(np.int32) for k, v in feed.items()}).values()
        assert np.abs(np.asarray(got) - want).max() < 1e-4, fmt


# --- the first output: reference_outputs --------------------------------------------------------

class Nested(nn.Module):
    """Returns ({"logits": a, "aux": b}, c): three outputs, the first inside a dict in a tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        y = self.fc(x)
        return {"logits": y, "aux": y[:, :2] * 3}, y.sum(1, keepdim=True)


def test_reference_is_the_first_output_the_files_carry(tmp_path: Path) -> None:
    """reference_outputs took `y[0]` of the tuple: the dict, and crashed on `.float()`. It is the
    first tensor the exporters lay out ("0.logits"), so the ONNX file agrees with it exactly."""
    rng = np.random.default_rng(0)
    data = edgecompress.Dataset(rng.standard_normal((6, 6)).astype("float32"), rng.integers(0, 5, 6))
    spec = load_model(Nested(), input_shape=(1, 6))
    assert spec.output_names == ["0.logits", "0.aux", "output_2"]
    ref = edgecompress.reference_outputs(spec, data, progress=False)
    with torch.no_grad():
        logits = Nested()(torch.from_numpy(data.x))[0]["logits"].numpy()
    assert ref.shape == (6, 5) and np.allclose(ref, logits, atol=1e-6)
    art = export(spec, "onnx", "fp32", tmp_path, options=QUIET)
    (m,) = edgecompress.validate(art, eval_data=data, reference=ref, progress=False,
                                 settings=edgecompress.ValidateSettings(rounds=1))
    assert m.status == "ok", m.error
    assert m.drift["top1_agreement"] == 1.0 and m.drift["cosine"] > 0.9999


class _Box:
    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class Boxed(nn.Module):
    def forward(self, x: torch.Tensor) -> _Box:
        return _Box(x * 2)


class WithInt(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return x * 2, 3


@pytest.mark.parametrize(("model", "what"), [(Boxed, "an object of type _Box among its outputs"),
                                                (WithInt, "an object of type int among its outputs")])
def test_a_result_no_exporter_takes_is_refused_alike(model: type[nn.Module], what: str) -> None:
    """Each exporter refused such a model in its own words (or crashed) and reference_outputs
    raised AttributeError / compared the wrong thing: load_model and reference_outputs now give
    one line, the same."""
    data = edgecompress.Dataset(np.ones((2, 4), np.float32))
    with pytest.raises(ModelLoadError, match=rf"^model {model.__name__} returns {what}") as at_load:
        load_model(model(), input_shape=(1, 4))
    with pytest.raises(ModelLoadError) as at_reference:
        edgecompress.reference_outputs(model(), data, progress=False)
    assert str(at_reference.value) == str(at_load.value) and "\n" not in str(at_load.value)


def test_first_output_follows_the_flattening_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert first_output(({"logits": a, "aux": b}, c)) is a
    assert first_output({"x": None, "y": [b, a]}) is b  # None is no output
    assert first_output(c) is c
    with pytest.raises(ModelLoadError, match="returns no tensor"):
        first_output((None,))


# --- input_names= -------------------------------------------------------------------------------

def test_input_names_are_the_files_names(tmp_path: Path) -> None:
    """load_model(input_names=...) renames the input in every format, read back by each runtime;
    outputs keep theirs, and a ModelSpec is relabelled the same way."""
    spec = load_model(Pixels(), input_shape=(1, 3, 8, 8), input_names=["image"], output_names=["logits"])
    assert [i.name for i in spec.inputs] == ["image"]
    for fmt in FORMATS:
        art = export(spec, fmt, "fp32", tmp_path, options=QUIET)
        assert input_names(fmt, art.path) == [i.name for i in art.inputs] == ["image"], fmt
    again = load_model(spec, input_names=["img"])
    assert [i.name for i in again.inputs] == ["img"] and [i.name for i in spec.inputs] == ["image"]


@pytest.mark.parametrize("batch", ["dynamic", "fixed"])
def test_input_names_of_a_pt2_are_the_files_names(batch: str, tmp_path: Path) -> None:
    """A .pt2 (ExportedProgram) renamed with input_names= / output_names=, at a dynamic batch and at
    torch.export's fixed batch 1 (`ExportedModule`): each format's file carries the names, read back
    and fed by them in its own runtime, with PyTorch's values."""
    from tests.test_output_names import INPUT, READERS

    path = tmp_path / "p.pt2"
    dyn = ({0: torch.export.Dim("batch")},) if batch == "dynamic" else None
    example = (torch.randn(2 if dyn else 1, 3, 8, 8),)  # a batch of 1 specializes a dynamic one
    torch.export.save(torch.export.export(Pixels().eval(), example, dynamic_shapes=dyn), str(path))
    spec = load_model(str(path), input_names=[INPUT], output_names=["logits"])
    assert [i.name for i in spec.inputs] == [INPUT] and spec.output_names == ["logits"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert spec.module is not None
    with torch.no_grad():
        want = spec.module(torch.from_numpy(x)).numpy()
    for fmt in FORMATS:
        art = export(spec, fmt, "fp32", tmp_path / fmt, options=QUIET)
        assert input_names(fmt, art.path) == [i.name for i in art.inputs] == [INPUT], fmt
        names, (got,) = READERS[fmt](art.path, x)
        assert names == [o.name for o in art.outputs] == ["logits"], fmt
        assert np.abs(got.reshape(want.shape) - want).max() <= 1e-4, fmt


def test_input_names_are_checked(tmp_path: Path) -> None:
    from edgecompress.errors import ConfigError

    def refused(match: str, ref: object = None, **kw: object) -> None:
        with pytest.raises(ConfigError, match=match):
            load_model(ref if ref is not None else Pixels(), input_shape=(1, 3, 8, 8), **kw)

    refused(r"input_names='image': a list of names", input_names="image")
    refused(r"2 name\(s\) for the 1 input\(s\)", input_names=["a", "b"])
    refused(r"not a valid tensor name", input_names=["-x"])
    refused(r"'logits' is also an input's name", input_names=["logits"], output_names=["logits"])
    spec = load_model(Pixels(), input_shape=(1, 3, 8, 8))
    path = export(spec, "onnx", "fp32", tmp_path, options=QUIET).path
    onnx_spec = load_model(str(path))
    for ref in (str(path), onnx_spec):
        with pytest.raises(ConfigError, match=r"ONNX model, whose inputs keep the names in its file \(\['pixels'\]\)"):
            load_model(ref, input_names=["image"])
