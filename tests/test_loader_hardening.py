"""Loading the user's own models (audit C): each bad .onnx / factory / checkpoint / shape is refused
in one line naming what and where, before any work; the CLI rows check exit 2, no traceback and
nothing left in --out. Factories are defined here (`tests.test_loader_hardening:NAME`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import DataError, InputFileError, InputShapeError, ModelLoadError
from edgecompress.models import load_model
from tests.conftest import ROOT, run_cli, save_onnx  # tests.: the CLI imports this module as a factory

HERE = "tests.test_loader_hardening"


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def mlp() -> nn.Module:
    return Mlp()


def scripted() -> nn.Module:
    return torch.jit.script(Mlp())


def traced() -> nn.Module:
    return torch.jit.trace(Mlp().eval(), torch.randn(1, 16))


def exits() -> nn.Module:  # what a factory that runs argparse on edgecompress's argv ends in
    sys.exit("factory quit")


def argparsed() -> nn.Module:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, required=True)
    return nn.Linear(ap.parse_args().width, 3)


# --- tiny hand-built ONNX files --------------------------------------------------------------

def _onnx_mlp(path: Path, batch: int | str = "N", dims: tuple = (16,), external: bool = False,
              second_input: bool = False, custom_op: bool = False) -> Path:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    w = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"])]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [batch, *dims])]
    if second_input:
        inputs.append(h.make_tensor_value_info("z", T.FLOAT, [batch, 3]))
        nodes.append(h.make_node("Add", ["a", "z"], ["y"]))
    elif custom_op:
        nodes.append(h.make_node("FooOp", ["a"], ["y"], domain="com.example"))
    else:
        nodes.append(h.make_node("Relu", ["a"], ["y"]))
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, [batch, 3])],
                     [nh.from_array(w, "W")])
    opsets = [h.make_opsetid("", 17), *([h.make_opsetid("com.example", 1)] if custom_op else [])]
    m = h.make_model(g, opset_imports=opsets)
    save_onnx(m, path, external)
    return path


def _cli_refuses(tmp_path: Path, *args: str, fragment: str, cwd: Path = ROOT) -> str:
    """Run `export ARGS --out OUT`: exit 2, exactly one `error:` line holding `fragment`, no
    traceback, and nothing in OUT."""
    out = tmp_path / "out"
    proc = run_cli("export", *args, "--no-progress", "--out", str(out), cwd=cwd)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(errors) == 1 and fragment in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() or not list(out.rglob("*"))
    return errors[0]


# --- #3 external data -----------------------------------------------------------------------

def test_onnx_external_data_missing_or_truncated_is_refused(tmp_path):
    path = _onnx_mlp(tmp_path / "ext.onnx", external=True)
    data = tmp_path / "ext.onnx.data"
    full = data.read_bytes()
    data.write_bytes(full[:40])
    with pytest.raises(InputFileError, match=r"ext.onnx.data is truncated \(40 bytes, the tensors need 192\)"):
        load_model(str(path))
    data.unlink()
    _cli_refuses(tmp_path, str(path), "-f", "onnx", "--no-validate",
                 fragment=f"its weights are kept in the external data file {data}, which is missing")


def test_onnx_external_data_found_beside_the_model_from_any_folder(tmp_path, monkeypatch):
    """The checker was given the proto and looked for the data file in the working directory: a
    complete model was refused as "not a valid ONNX model" unless run from its own folder."""
    path = _onnx_mlp(tmp_path / "ext.onnx", external=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_model(str(path))
    assert spec.onnx_path == path and spec.input_shape == (1, 16)


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    import onnx

    sub = tmp_path / "sub"
    sub.mkdir()
    path = _onnx_mlp(tmp_path / "ext.onnx", external=True)
    m = onnx.load(str(path), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../ext.onnx.data"
    onnx.save(m, str(sub / "escape.onnx"))
    with pytest.raises(InputFileError, match=r"external data location '\.\./ext\.onnx\.data' is outside"):
        load_model(str(sub / "escape.onnx"))


# --- #7 inputs checked at load time, ONNX Runtime failures in one line ---------------------------

def test_onnx_fixed_batch_other_than_1_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="input 'x' has a fixed batch of 4; export it with a dynamic batch"):
        load_model(str(_onnx_mlp(tmp_path / "b4.onnx", batch=4)))
    spec = load_model(str(_onnx_mlp(tmp_path / "b1.onnx", batch=1)))  # batch 1: fed per sample
    assert spec.extra == {"fixed_batch": 1}


def test_onnx_two_inputs_refused_when_data_is_fed(tmp_path):
    from edgecompress.data import Dataset
    from edgecompress.pipeline import onnx_reference, resolve_data

    path = _onnx_mlp(tmp_path / "two.onnx", second_input=True)
    spec = load_model(str(path))  # no data needed (export without validation): loads
    np.savez(tmp_path / "two.npz", x=np.ones((4, 16), np.float32), z=np.ones((4, 3), np.float32))
    _cli_refuses(tmp_path, str(path), "-f", "onnx", "--eval", str(tmp_path / "two.npz"),
                 fragment="two.npz: model two takes 2 inputs (x, z) and the data gives one array")
    # from Python, a dict keyed by input name feeds both; one missing is named
    rng = np.random.default_rng(0)
    both = Dataset({"x": rng.standard_normal((4, 16)).astype(np.float32),
                    "z": rng.standard_normal((4, 3)).astype(np.float32)})
    ds = resolve_data(spec, both, "evaluation", progress=False)
    assert onnx_reference(path, ds).shape == (4, 3)
    with pytest.raises(DataError, match=r"gives no array for input\(s\) z"):
        resolve_data(spec, Dataset({"x": both.x["x"]}), "calibration", progress=False)


def test_onnx_reference_failures_are_one_line(tmp_path):
    from edgecompress.data import Dataset
    from edgecompress.pipeline import onnx_reference

    good = _onnx_mlp(tmp_path / "m.onnx")
    with pytest.raises(InputFileError, match=r"^model '.*m.onnx': ONNX Runtime cannot run it on .*InvalidArgument"):
        onnx_reference(good, Dataset(np.ones((2, 15), np.float32)))  # what a graph failing on shapes gives


def test_onnx_custom_op_is_refused_at_load(tmp_path):
    # it was copied as an artifact and failed at validation (exit 4, no node named), or without
    # --eval only in the benchmark
    from edgecompress.errors import ExportError

    custom = _onnx_mlp(tmp_path / "custom.onnx", custom_op=True)
    with pytest.raises(ExportError, match=r"^model '.*custom.onnx': node '\(unnamed\)' is op com.example:FooOp, which "
                                          r"ONNX Runtime .* does not implement on CPU"):
        load_model(str(custom))
    out = tmp_path / "out"
    proc = run_cli("export", str(custom), "-f", "onnx", "-f", "openvino", "--no-progress", "--out", str(out))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:")).endswith(
        "or from its PyTorch source") and not out.exists()
    # a com.microsoft op ONNX Runtime has (what its quantizer writes) and a model-local function load
    import onnx
    from onnx import helper as h
    m = onnx.load(str(custom))
    m.graph.node[1].CopyFrom(h.make_node("FusedGemm", ["a", "Wb"], ["y"], domain="com.microsoft"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.eye(3, dtype=np.float32), "Wb"))
    m.opset_import.append(h.make_opsetid("com.microsoft", 1))
    onnx.save(m, str(tmp_path / "ms.onnx"))
    load_model(str(tmp_path / "ms.onnx"))
    f = h.make_function("com.example", "FooOp", ["i"], ["o"], [h.make_node("Relu", ["i"], ["o"])],
                        [h.make_opsetid("", 17)])
    m = onnx.load(str(custom))
    m.functions.append(f)
    onnx.save(m, str(tmp_path / "fn.onnx"))
    load_model(str(tmp_path / "fn.onnx"))


# --- #11 --input-shape against the file's static dimensions -------------------------------------

def test_onnx_input_shape_checked_against_the_file(tmp_path):
    path = _onnx_mlp(tmp_path / "m.onnx")
    with pytest.raises(InputShapeError, match=r"^input_shape=\(1, 15\): .*m.onnx fixes dimension 1 of input 'x' to 16"):
        load_model(str(path), "1,15")
    with pytest.raises(InputShapeError, match=r"^input_shape=\(1, 16, 1\): .*takes input 'x' of rank 2 \[N, 16\]"):
        load_model(str(path), "1,16,1")
    assert load_model(str(path), "1,16").input_shape == (1, 16)
    seq = _onnx_mlp(tmp_path / "seq.onnx", dims=("L", 16))  # a symbolic dimension takes any size
    assert load_model(str(seq), "1,7,16").input_shape == (1, 7, 16)


# --- #9 TorchScript factories, MACs counting -------------------------------------------------

@pytest.mark.parametrize("factory,kind", [("scripted", "RecursiveScriptModule"), ("traced", "TopLevelTracedModule")])
def test_torchscript_factory_is_refused(factory, kind):
    with pytest.raises(ModelLoadError, match=rf"{factory}\(\) returned a TorchScript module \({kind}\); pass the "
                                             "eager nn.Module"):
        load_model(f"{HERE}:{factory}", "1,16")


def test_torchscript_module_from_python_is_refused():
    with pytest.raises(ModelLoadError, match="the model is a TorchScript module"):
        load_model(torch.jit.script(Mlp()), (1, 16))


def test_macs_count_failure_does_not_stop_an_export(tmp_path, monkeypatch):
    import torch_pruning as tp

    from edgecompress.models import count_params_macs
    from edgecompress.pipeline import ExportJob, run_export

    def broken(*_a, **_k):
        raise RuntimeError("register_forward_hook is not supported\non ScriptModules")

    monkeypatch.setattr(tp.utils, "count_ops_and_params", broken)
    spec = load_model(mlp(), (1, 16), name="mlp")
    with pytest.raises(ModelLoadError, match=r"model mlp: cannot count its parameters and MACs \(RuntimeError: "
                                             r"register_forward_hook is not supported\)$"):
        count_params_macs(spec)
    report, _paths = run_export(ExportJob(model=spec, formats=[("onnx", "fp32")], out_dir=tmp_path / "out",
                                          do_validate=False, progress=False))
    assert report.model["macs"] == 0 and report.model["params"] == 16 * 8 + 8 + 8 * 3 + 3
    assert (tmp_path / "out" / "mlp-fp32.onnx").is_file()


# --- #15 --weights mismatch ----------------------------------------------------------------------

def test_weights_mismatch_names_both_sides_and_the_fix(tmp_path):
    sd = Mlp().state_dict()
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "prefixed.pt")
    torch.save({"model": sd, "epoch": 3}, tmp_path / "nested.pt")
    torch.save({k: v for k, v in sd.items() if k != "fc2.bias"}, tmp_path / "missing.pt")
    torch.save({**sd, "fc1.weight": torch.zeros(8, 15)}, tmp_path / "size.pt")

    def refusal(name: str) -> str:
        with pytest.raises(ModelLoadError) as e:
            load_model(f"{HERE}:mlp", "1,16", tmp_path / name)
        assert "\n" not in str(e.value)
        return str(e.value)

    msg = refusal("prefixed.pt")
    assert "4 missing key(s) ('fc1.weight', 'fc1.bias', 'fc2.weight', ...)" in msg, msg
    assert "4 unexpected key(s) ('module.fc1.weight', 'module.fc1.bias', 'module.fc2.weight', ...)" in msg, msg
    assert "keys carry the prefix 'module.': strip it" in msg, msg
    msg = refusal("nested.pt")
    assert "2 unexpected key(s) ('model', 'epoch')" in msg and "under key 'model'" in msg, msg
    assert refusal("missing.pt").endswith("does not match the model: 1 missing key(s) ('fc2.bias')")
    assert "size mismatch for fc1.weight" in refusal("size.pt")


# --- #16 sys.exit in a factory or its module --------------------------------------------------

def test_factory_calling_sys_exit_is_one_line(tmp_path):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    line = _cli_refuses(tmp_path, f"{HERE}:exits", "--input-shape", "1,16", "-f", "onnx",
                        fragment=f"MODEL {HERE}:exits: calling exits() called sys.exit('factory quit')")
    assert "a factory must return the nn.Module" in line
    # argparse's usage and error lines are held back: its error rides on our one line
    proc = run_cli("export", f"{HERE}:argparsed", "--input-shape", "1,16", "--no-progress",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "sys.exit(2) after printing 'cli.py: error: the following arguments are required: --width'" \
        in proc.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModelLoadError, match=r"importing module 'exits_on_import' called sys.exit\(3\)"):
            load_model("exits_on_import:build", "1,16")
    finally:
        sys.path.remove(str(tmp_path))


# --- #17 two-input .pt2 ------------------------------------------------------------------------

def test_two_input_pt2_says_what_is_supported(tmp_path):
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    torch.export.save(torch.export.export(Two(), (torch.ones(1, 2), torch.ones(1, 2))), tmp_path / "two.pt2")
    with pytest.raises(ModelLoadError) as e:
        load_model(str(tmp_path / "two.pt2"))
    msg = str(e.value)
    assert "takes 2 inputs" in msg and "several inputs only for Hugging Face text encoders" in msg, msg
    assert "use module:factory" not in msg  # a factory takes one --input-shape: no way out there


# --- #18 --input-shape batch -------------------------------------------------------------------

def test_input_shape_batch_other_than_1_is_refused(tmp_path):
    _cli_refuses(tmp_path, f"{HERE}:mlp", "--input-shape", "2,16", "-f", "onnx",
                 fragment="--input-shape 2,16: the first dimension is the batch and must be 1")
    with pytest.raises(InputShapeError, match=r"to time batch 4 pass ValidateSettings\(batches=\(1, 4\)\), "
                                              r"with input_shape=\(1, 16\)$"):
        load_model(Mlp(), (4, 16))
    with pytest.raises(InputShapeError, match="the first dimension is the batch"):
        load_model(str(_onnx_mlp(tmp_path / "m.onnx")), "3,16")
    with pytest.raises(InputShapeError, match=r"give it first, e\.g\. \(1, 16\)"):
        load_model(f"{HERE}:mlp", "16")
