"""Python API (audit 22D): passes on a .pt2 program and on layer-less models, lowrank that
factorizes nothing, multi-output models in fine-tuning and TFLite int8, Dataset / Recipe built in
Python. Every error is one line and an EdgeCompressError."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Small(nn.Module):
    """Conv -> BN -> ReLU -> mean -> Linear: something every pass can work on."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.b(self.c(x))).mean((2, 3)))


def _small() -> nn.Module:
    torch.manual_seed(0)
    return _Small().eval()


@pytest.fixture(scope="module")
def pt2_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    torch.export.save(torch.export.export(_small(), (torch.randn(1, 3, 8, 8),)), str(path))
    return edgecompress.load_model(str(path))


def _data(n: int = 8, side: int = 8):
    import numpy as np

    rng = np.random.default_rng(0)
    return edgecompress.Dataset(rng.standard_normal((n, 3, side, side)).astype("float32"), rng.integers(0, 10, n))


# --- 2: unstructured pruning of a model without Conv2d / Linear layers ---------------------------

def test_unstructured_prune_without_layers_is_one_config_error():
    class NoLayers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w

    # was: ValueError "torch.cat(): expected a non-empty list of Tensors" from torch's global ranking
    with pytest.raises(ConfigError,
                       match=r"^prune\.method unstructured: model NoLayers has no Linear / Conv1d / Conv2d"):
        edgecompress.prune(NoLayers(), method="unstructured", ratio=0.5, input_shape=(1, 4), progress=False)


# --- 3: passes on a .pt2 program ------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    pytest.param(lambda s: edgecompress.prune(s, ratio=0.5, progress=False), id="prune"),
    pytest.param(lambda s: edgecompress.prune(s, method="unstructured", ratio=0.5, progress=False),
                 id="prune-unstructured"),
    pytest.param(lambda s: edgecompress.lowrank(s, progress=False), id="lowrank"),
    pytest.param(lambda s: edgecompress.qat(s, {"epochs": 1}, data=_data(), progress=False), id="qat"),
    pytest.param(lambda s: edgecompress.resolution(s, size=4, progress=False), id="resolution"),
])
def test_restructuring_passes_refuse_a_pt2_program(pt2_spec, call, request):
    # were: "nothing pruned (... the classifier, ignored or tied layers)", an unchanged model with no
    # word (lowrank), torch's "Constraints violated (batch)" (qat) or "Guard failed" (resolution)
    name = request.node.callspec.id.split("-")[0]
    with pytest.raises(ConfigError, match=rf"^{name}: model small is an exported program \(small\.pt2\)") as e:
        call(pt2_spec)
    assert "\n" not in str(e.value) and "module:factory" in str(e.value)


def test_distill_still_fine_tunes_a_pt2_program(pt2_spec):
    out = edgecompress.distill(pt2_spec, epochs=1, data=_data(), progress=False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert not torch.equal(out.module(x), pt2_spec.module(x))  # its weights trained


def test_recipe_refuses_a_pt2_before_any_pass(pt2_spec, tmp_path):
    import numpy as np

    np.savez(tmp_path / "xy.npz", x=_data().x, y=_data().y)
    recipe = {"model": pt2_spec.source, "data": {"train": str(tmp_path / "xy.npz")},
              "passes": [{"distill": {"epochs": 1}}, {"lowrank": {}}], "options": {"progress": False}}
    with pytest.raises(ConfigError, match=r"passes\[1\]\.lowrank: model small is an exported program"):
        edgecompress.run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()  # refused before the distill pass trained


def test_pt2_macs_are_counted(pt2_spec):
    from edgecompress.models import count_params_macs

    params, macs = count_params_macs(pt2_spec)
    # as the eager model's (the hooks' counter saw no layer in the program: 0): conv 8*3*9 MACs
    # per output pixel on 8x8 + its bias, BatchNorm 2 per element, Linear 8*10 + its bias
    assert (params, macs) == count_params_macs(edgecompress.load_model(_small(), input_shape=(1, 3, 8, 8)))
    assert macs == (8 * 3 * 9 + 8) * 8 * 8 + 2 * 8 * 8 * 8 + 8 * 10 + 10


# --- 16: fine-tuning a model with several outputs -------------------------------------------------

class _TwoHeads(nn.Module):
    """A classifier of 10 classes and an auxiliary head of 3, as a tuple or (keys not sorted) a dict."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)
        self.aux = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.c(x)).mean((2, 3))
        if self.as_dict:  # key order, not sorted order: "z_logits" is the first output
            return {"z_logits": self.fc(y), "a_aux": self.aux(y)}
        return self.fc(y), self.aux(y)


def _two_heads(as_dict: bool) -> edgecompress.ModelSpec:
    torch.manual_seed(0)
    return edgecompress.load_model(_TwoHeads(as_dict).eval(), input_shape=(1, 3, 8, 8))


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_distill_trains_the_first_of_several_outputs(as_dict, capsys):
    spec = _two_heads(as_dict)
    data = _data(16)  # labels up to 9: the first output (10 classes), not the 3-way head
    # was: AttributeError "'tuple' object has no attribute 'shape'" ('dict' for the dict model)
    out = edgecompress.distill(spec, epochs=1, data=data, progress=False)
    assert "2 outputs; the KD loss is of the first" in capsys.readouterr().err
    assert out.module.fc.weight.shape == (10, 8)
    assert not torch.equal(out.module.fc.weight, spec.module.fc.weight)  # trained


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_qat_fine_tunes_a_model_of_several_outputs(as_dict):
    out = edgecompress.qat(_two_heads(as_dict), {"epochs": 1}, data=_data(16), progress=False)
    assert out.extra["quantized"] == "qat"
    with torch.no_grad():
        y = out.module(torch.randn(2, 3, 8, 8))
    first = next(iter(y.values())) if isinstance(y, dict) else y[0]
    assert first.shape == (2, 10)


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_prune_keeps_every_output_layer_whole(as_dict):
    # only the last Linear (aux) was kept whole: fc went from 10 outputs to 5 and taylor failed on
    # the tuple; both heads keep their outputs now, and Taylor ranks by the first output's loss
    for cfg in ({"ratio": 0.5}, {"ratio": 0.5, "importance": "taylor", "finetune_epochs": 1}):
        out = edgecompress.prune(_two_heads(as_dict), cfg, data=_data(16), progress=False)
        assert (out.module.fc.out_features, out.module.aux.out_features) == (10, 3)
        assert out.module.c.out_channels == 4


# --- 17: TFLite int8 of a model returning a dict --------------------------------------------------

def test_tflite_int8_of_a_dict_model(tmp_path):
    spec = _two_heads(as_dict=True)
    # was: TypeError "unsupported operand type(s) for -: 'float' and 'dict'" in the lowering check
    art = edgecompress.export(spec, "tflite", "int8", tmp_path, _data(16),
                              edgecompress.ExportOptions(progress=False))
    assert art.path.is_file()
    assert [o.shape for o in art.outputs] == [[1, 10], [1, 3]]  # the dict's key order


# --- 20: lowrank that factorizes nothing ----------------------------------------------------------

def test_lowrank_that_factorizes_nothing_says_why(capsys):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    out = edgecompress.lowrank(mlp, {"rank": 1000}, input_shape=(1, 64), progress=False)
    note = "lowrank: no layer factorized (rank 1000 saves no parameters in 0, 2)"
    assert out.extra["passes"][-1]["log"]["warnings"] == [note]  # was: [] and not a word
    assert f"note: {note}" in capsys.readouterr().err


def test_lowrank_names_min_saving_when_it_kept_the_layers():
    torch.manual_seed(0)
    layer = nn.Linear(100, 100)
    with torch.no_grad():  # rank 46: 46 * 200 = 9,200 of 10,000 weights, a saving of 8 % < 10 %
        layer.weight.copy_(torch.randn(100, 46) @ torch.randn(46, 100))
    out = edgecompress.lowrank(nn.Sequential(layer), {"rank": 46}, input_shape=(1, 100), progress=False)
    (note,) = out.extra["passes"][-1]["log"]["warnings"]
    assert note.startswith("lowrank: no layer factorized (rank 46 saves less than min_saving 0.1 of the weights of 0")
    assert "lowrank.min_saving" in note


# --- 22: Dataset(x=<list>) ------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "what"), [
    ({"x": "samples"}, "x"),
    ({"x": {"input_ids": [[1, 2, 3]]}}, "input_ids"),
    ({"x": "array", "y": [0, 1, 2, 3]}, "y"),
])
def test_dataset_of_lists_is_refused_when_built(kwargs, what):
    import numpy as np

    x = np.zeros((4, 3, 8, 8), np.float32)
    kwargs = {k: (x if v == "array" else [x[i] for i in range(4)] if v == "samples" else v)
              for k, v in kwargs.items()}
    # was accepted, then AttributeError "'list' object has no attribute 'shape'" from len(),
    # reference_outputs and validate (only export said it in one line)
    with pytest.raises(ConfigError, match=rf"^in-memory Dataset: {what} must be numpy arrays, got list \(np\.stack"):
        edgecompress.Dataset(**kwargs)


def test_dataset_still_takes_tensors():
    ds = edgecompress.Dataset(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert len(ds) == 4 and ds.y.dtype.kind == "i"


# --- 10: Recipe(...) built in Python ----------------------------------------------------------------

def test_recipe_built_in_python_fails_in_one_line():
    # was: pydantic_core.ValidationError over four lines
    with pytest.raises(ConfigError, match=r"^Recipe: options\.runs: Input should be a valid integer$"):
        edgecompress.Recipe(model="zoo:digits-cnn", options={"runs": "5"})
    with pytest.raises(ConfigError, match=r"^Recipe: bogus: unknown key$"):
        edgecompress.Recipe(model="zoo:digits-cnn", bogus=1)
    r = edgecompress.Recipe(model="zoo:digits-cnn", input_shape=(1, 1, 8, 8), options={"runs": 5})
    assert r.input_shape == [1, 1, 8, 8] and r.options.runs == 5


def test_parse_recipe_keeps_its_own_words():
    from edgecompress.recipe import parse_recipe

    # model_validate goes through Recipe.__init__ too: the source names the error, not "Recipe"
    with pytest.raises(ConfigError, match=r"^recipe x\.yaml: options\.runs: Input should be a valid integer$"):
        parse_recipe({"model": "zoo:digits-cnn", "options": {"runs": "5"}}, "recipe x.yaml")
    with pytest.raises(ConfigError, match=r"^recipe: 1: not a key of a recipe"):
        parse_recipe({"model": "zoo:digits-cnn", 1: 2})
