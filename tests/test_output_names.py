"""Audit finding #18: a model of several outputs has one set of output names in every format.

load_model names the outputs from what the model returns (a dict's keys, `output`, `output_1`, ...
for a tuple) and the input after forward()'s parameter (`image` here); the ONNX, OpenVINO and
TFLite files (fp32 and int8) carry exactly those names, in the model's order, and their I/O
contract says the same. Read back from the files here, each fed by that input name.
(tests/test_input_names.py: the inputs of other models, and several inputs.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError
from edgecompress.exporters import ExportOptions, export
from edgecompress.models import ModelSpec, load_model
from edgecompress.models.spec import InputSpec, output_names_from

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ExportOptions(progress=False)
SIZES = {"logits": 10, "embedding": 6}  # different sizes: a swapped output shows in its shape


class _Heads(nn.Module):
    """Conv -> mean -> a 10-way classifier and a 6-wide embedding; as a tuple, or as a dict whose
    key order is not sorted order ("logits" first), so a format that sorted names would show."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.cls = nn.Linear(8, 10)
        self.emb = nn.Linear(8, 6)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        f = torch.relu(self.c(image)).mean((2, 3))
        if self.as_dict:
            return {"logits": self.cls(f), "embedding": self.emb(f)}
        return self.cls(f), self.emb(f)


def _module(as_dict: bool) -> nn.Module:
    torch.manual_seed(0)
    return _Heads(as_dict).eval()


EXPECTED = {"tuple": ["output", "output_1"], "dict": ["logits", "embedding"]}
INPUT = "image"  # _Heads.forward's parameter: the input's name in every file
SHAPES = {"tuple": [10, 6], "dict": [10, 6]}  # per output, in order


@pytest.fixture(scope="module")
def calib() -> edgecompress.Dataset:
    rng = np.random.default_rng(0)
    return edgecompress.Dataset(rng.standard_normal((16, 3, 8, 8)).astype("float32"), rng.integers(0, 10, 16))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module", params=["tuple", "dict"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def spec(kind: str) -> ModelSpec:
    return load_model(_module(kind == "dict"), input_shape=(1, 3, 8, 8), name=f"heads-{kind}")


def _torch_outputs(spec: ModelSpec, x: np.ndarray) -> list[np.ndarray]:
    assert spec.module is not None
    with torch.no_grad():
        y = spec.module(torch.from_numpy(x))
    return [t.numpy() for t in (y.values() if isinstance(y, dict) else y)]


def test_load_model_names_the_outputs(spec: ModelSpec, kind: str) -> None:
    assert spec.output_names == EXPECTED[kind]
    assert [i.name for i in spec.inputs] == [INPUT]


# --- reading each format back -------------------------------------------------------------------

# Each reader opens a file in its own runtime, feeds `x` under the input name INPUT (a file naming
# its input otherwise fails there), and returns the output names in the file's order and the
# values under each name.

def _onnx_outputs(path: Path, x: np.ndarray, input_name: str = INPUT) -> tuple[list[str], list[np.ndarray]]:
    import onnx
    import onnxruntime as ort

    names = [o.name for o in onnx.load(str(path)).graph.output]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    values = sess.run(names, {input_name: x})  # by name: a wrong name fails here
    return names, [np.asarray(v) for v in values]


def _openvino_outputs(path: Path, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    assert all(len(p.get_names()) == 1 for p in model.outputs)  # one name each, not the converter's too
    names = [p.get_any_name() for p in model.outputs]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled({INPUT: x})
    return names, [np.asarray(res[compiled.output(n)]) for n in names]


def _tflite_outputs(path: Path, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """The output tensors' names (in the file's output order), checked against the signature
    runner's keys, and the values the runner returns under each name, as float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    details = it.get_output_details()
    names = [d["name"] for d in details]
    runner = it.get_signature_runner()
    # the signature key of each output tensor, in the file's output order
    key_of = {d["index"]: k for k, d in runner.get_output_details().items()}
    assert [key_of[d["index"]] for d in details] == names
    (inp,) = it.get_input_details()
    feed = x.transpose(0, 2, 3, 1)  # NHWC
    scale, zp = inp["quantization"]
    if inp["dtype"] == np.int8:
        feed = np.clip(np.round(feed / scale + zp), -128, 127)
    res = runner(**{INPUT: feed.astype(inp["dtype"])})
    values = []
    for d in details:
        v = res[d["name"]].astype(np.float32)
        scale, zp = d["quantization"]
        values.append((v - zp) * scale if d["dtype"] == np.int8 else v)
    return names, values


READERS = {"onnx": _onnx_outputs, "openvino": _openvino_outputs, "tflite": _tflite_outputs}


def input_names(fmt: str, path: Path) -> list[str]:
    """The file's input names in its order, as its own runtime reports them; for a .tflite the
    input tensors' names, checked against the signature keys of those tensors."""
    if fmt == "onnx":
        import onnxruntime as ort

        return [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        assert all(len(p.get_names()) == 1 for p in model.inputs)  # one name each
        return [p.get_any_name() for p in model.inputs]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    details = it.get_input_details()
    key_of = {d["index"]: k for k, d in it.get_signature_runner().get_input_details().items()}
    assert [key_of[d["index"]] for d in details] == [d["name"] for d in details]
    return [d["name"] for d in details]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_every_format_carries_the_names_in_order(
    spec: ModelSpec, kind: str, fmt: str, precision: str, calib: edgecompress.Dataset, x: np.ndarray,
    tmp_path: Path,
) -> None:
    art = export(spec, fmt, precision, tmp_path, calib if precision == "int8" else None, QUIET)
    names, values = READERS[fmt](art.path, x)
    assert names == EXPECTED[kind]
    assert [o.name for o in art.outputs] == names  # the I/O contract is the file's
    assert input_names(fmt, art.path) == [i.name for i in art.inputs] == [INPUT]
    # the values behind each name are that output's: the shapes, and near PyTorch's
    assert [v.shape[-1] for v in values] == SHAPES[kind]
    want = _torch_outputs(spec, x)
    tol = 1e-4 if precision == "fp32" else 0.25 * max(float(np.abs(w).max()) for w in want)
    for got, ref in zip(values, want, strict=True):
        assert np.abs(got.reshape(ref.shape) - ref).max() <= tol


def test_a_qat_model_keeps_the_names(calib: edgecompress.Dataset, x: np.ndarray, tmp_path: Path) -> None:
    """The QAT route exports its own Q/DQ graph (ONNX), and OpenVINO converts that QDQ file."""
    spec = load_model(_module(True), input_shape=(1, 3, 8, 8))
    q = edgecompress.qat(spec, {"epochs": 1}, data=calib, progress=False)
    for fmt in ("onnx", "openvino"):
        art = export(q, fmt, "int8", tmp_path, options=QUIET)
        assert art.details["quantization"]["source"] == "qat"
        names, values = READERS[fmt](art.path, x)
        assert names == [o.name for o in art.outputs] == ["logits", "embedding"]
        assert input_names(fmt, art.path) == [INPUT]
        assert [v.shape[-1] for v in values] == [10, 6]


# --- naming rules -------------------------------------------------------------------------------

def test_nested_and_keyed_outputs_get_key_paths() -> None:
    t = torch.zeros(1)
    y = {"heads": {"cls": t, "box": t}, "aux": (t, t), "none": None}
    assert output_names_from(y) == ["heads.cls", "heads.box", "aux.0", "aux.1"]
    assert output_names_from([t, t, t]) == ["output", "output_1", "output_2"]
    assert output_names_from(t) == ["output"]
    assert output_names_from({"a b": t, "ok": t}) == ["a_b", "ok"]  # a space is no tensor-name character
    assert output_names_from((t, t), ["scores"]) == ["scores", "output_1"]  # given names first


def test_given_names_are_kept_for_the_first_outputs() -> None:
    spec = load_model(_module(True), input_shape=(1, 3, 8, 8), output_names=["scores"])
    assert spec.output_names == ["scores", "embedding"]
    again = load_model(spec, output_names=["a", "b"])  # a relabelled copy
    assert again.output_names == ["a", "b"] and spec.output_names == ["scores", "embedding"]


def test_a_pt2_program_keeps_its_dict_keys(tmp_path: Path) -> None:
    path = tmp_path / "heads.pt2"
    torch.export.save(torch.export.export(_module(True), (torch.randn(1, 3, 8, 8),)), str(path))
    assert load_model(str(path)).output_names == ["logits", "embedding"]


def test_a_hand_built_spec_names_its_other_outputs_alike(tmp_path: Path, x: np.ndarray) -> None:
    """A ModelSpec built without load_model names its first output only: torch.onnx named the
    second after its node ("linear_1"), OpenVINO "output_1"."""
    spec = ModelSpec("hand", _module(False), [InputSpec((1, 3, 8, 8))])  # its input: "input", as it says
    art = export(spec, "onnx", "fp32", tmp_path, options=QUIET)
    names, values = _onnx_outputs(art.path, x, "input")
    assert names == ["output", "output_1"] and [v.shape[-1] for v in values] == [10, 6]


def test_an_output_named_like_an_inner_onnx_value(tmp_path: Path, x: np.ndarray) -> None:
    """torch.onnx names inner values after their nodes ("relu", "mean"): an output taking such a
    name (a dict key) moves the inner value aside, so the file holds each value name once."""
    import onnx

    class Keys(_Heads):
        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            f = torch.relu(self.c(image)).mean((2, 3))
            return {"relu": self.cls(f), "mean": self.emb(f)}

    torch.manual_seed(0)
    spec = load_model(Keys(True).eval(), input_shape=(1, 3, 8, 8))
    art = export(spec, "onnx", "fp32", tmp_path, options=QUIET)
    model = onnx.load(str(art.path))
    onnx.checker.check_model(model, full_check=True)
    produced = [o for n in model.graph.node for o in n.output]
    assert len(produced) == len(set(produced))
    names, values = _onnx_outputs(art.path, x)
    assert names == ["relu", "mean"] and [v.shape[-1] for v in values] == [10, 6]
    for got, ref in zip(values, _torch_outputs(spec, x), strict=True):
        assert np.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize(("names", "match"), [
    (["a", "a"], r"^model \w+: output name 'a' is given to outputs 0 and 1 \(\['a', 'a'\]\); each output needs"),
    (["a,b"], r"^model \w+: output 0 name 'a,b' is not a valid tensor name"),
    (["image"], r"^model \w+: output 0 name 'image' is also an input's name"),
    (["a", "b", "c"], r"^model \w+: 3 output names \['a', 'b', 'c'\] for its 2 output\(s\) \['output', 'output_1'\]"),
    ("logits", r"^output_names='logits': a list of names, one per output"),
])
def test_bad_names_are_refused_in_one_line(names: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        load_model(_module(False), input_shape=(1, 3, 8, 8), output_names=names)
    assert "\n" not in str(e.value)


def test_a_duplicate_from_the_dict_keys_is_refused() -> None:
    class Clash(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a b": x, "a_b": x + 1}  # "a b" becomes "a_b"

    with pytest.raises(ConfigError, match=r"^model Clash: output name 'a_b' is given to outputs 0 and 1"):
        load_model(Clash(), input_shape=(1, 4))


def test_export_refuses_duplicates_of_a_hand_built_spec_before_any_work(tmp_path: Path) -> None:
    spec = ModelSpec("hand", _module(False), [InputSpec((1, 3, 8, 8))], output_names=["y", "y"])
    with pytest.raises(ConfigError, match=r"^onnx export of hand: output name 'y' is given to outputs 0 and 1"):
        export(spec, "onnx", "fp32", tmp_path / "o", options=QUIET)
    assert not (tmp_path / "o").exists()


class _WithNone(_Heads):
    """_Heads with a None between its outputs (an aux head that is off at inference)."""

    def forward(self, image: torch.Tensor) -> Any:
        f = torch.relu(self.c(image)).mean((2, 3))
        if self.as_dict:
            return {"logits": self.cls(f), "aux": None, "embedding": self.emb(f)}
        return self.cls(f), None, self.emb(f)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_a_none_output_is_left_out_of_every_format(fmt: str, kind: str, x: np.ndarray, tmp_path: Path) -> None:
    """A None among the outputs is no output: load_model names the tensors only, and every format's
    file holds them (torch.onnx dropped the None; OpenVINO and litert-torch refused the model in
    their own words: "Couldn't get TorchScript module by tracing", "contained a None item")."""
    torch.manual_seed(0)
    spec = load_model(_WithNone(kind == "dict").eval(), input_shape=(1, 3, 8, 8), name=f"none-{kind}")
    assert spec.output_names == EXPECTED[kind]
    art = export(spec, fmt, "fp32", tmp_path, None, QUIET)
    names, values = READERS[fmt](art.path, x)
    assert names == [o.name for o in art.outputs] == EXPECTED[kind]
    assert spec.module is not None
    with torch.no_grad():
        y = spec.module(torch.from_numpy(x))
    want = [t.numpy() for t in (y.values() if isinstance(y, dict) else y) if t is not None]
    for got, ref in zip(values, want, strict=True):
        assert np.abs(got.reshape(ref.shape) - ref).max() <= 1e-4


# --- a None among the outputs, quantized ---------------------------------------------------------

class _DigitsWithNone(nn.Module):
    """The trained digits CNN returning `(logits, None)` (an aux head off at inference), so int8
    files can be held to the float model's answers (argmax agreement) on real digits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(image), None


@pytest.fixture(scope="module")
def digits_none(digits_spec: ModelSpec) -> ModelSpec:
    import copy

    assert digits_spec.module is not None
    net = copy.deepcopy(digits_spec.module).eval()  # (the session's spec stays as it is)
    return load_model(_DigitsWithNone(net).eval(), input_shape=(1, 1, 8, 8), name="digits-none")


@pytest.fixture(scope="module")
def digits_x(digits_eval: edgecompress.Dataset) -> np.ndarray:
    return np.asarray(digits_eval.x[:48], dtype=np.float32)


def _agreement(fmt: str, path: Path, x: np.ndarray, spec: ModelSpec) -> float:
    """Top-1 agreement of the file (one sample at a time: a .tflite takes batch 1) with the float
    model on `x`; the file must hold exactly one output, the logits."""
    assert spec.module is not None
    got = []
    for i in range(len(x)):
        names, values = READERS[fmt](path, x[i:i + 1])
        assert names == ["output"] and len(values) == 1  # the None left out
        got.append(values[0].reshape(1, 10))
    with torch.no_grad():
        y = spec.module(torch.from_numpy(x))
    assert isinstance(y, tuple) and y[1] is None
    return float((np.concatenate(got).argmax(1) == y[0].numpy().argmax(1)).mean())


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_a_none_output_quantizes_to_int8(fmt: str, digits_none: ModelSpec, digits_calib: edgecompress.Dataset,
                                         digits_x: np.ndarray, tmp_path: Path) -> None:
    """fp32 of such a model was tested (above); int8 goes through each format's calibration too."""
    assert digits_none.output_names == ["output"]
    art = export(digits_none, fmt, "int8", tmp_path, digits_calib, QUIET)
    assert [o.name for o in art.outputs] == ["output"]
    assert _agreement(fmt, art.path, digits_x, digits_none) >= 0.95


@pytest.mark.parametrize(("backend", "formats"), [("x86", ("onnx", "openvino")), ("litert", ("tflite",))])
def test_a_none_output_through_qat(backend: str, formats: tuple[str, ...], digits_none: ModelSpec,
                                   digits_calib: edgecompress.Dataset, digits_x: np.ndarray, tmp_path: Path) -> None:
    """QAT of such a model, exported by each format its backend lowers. litert: the QAT graph kept the
    None, and litert-torch refused it ("contained a None item"); the PTQ route stripped it already."""
    q = edgecompress.qat(digits_none, {"epochs": 1, "backend": backend, "calib_samples": 64}, data=digits_calib,
                         progress=False)
    assert q.output_names == ["output"]
    for fmt in formats:
        art = export(q, fmt, "int8", tmp_path / fmt, options=QUIET)
        if fmt == "tflite":  # the QAT graph lowered as it is, not a PTQ of its float weights
            assert art.details["calibration"]["method"].startswith("none: ranges learned in qat")
        else:
            assert art.details["quantization"]["source"] == "qat"
        assert _agreement(fmt, art.path, digits_x, digits_none) >= 0.95
