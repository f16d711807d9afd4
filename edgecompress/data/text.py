"""Text data for encoders: sentence files and STS sentence-pair files, tokenized for the model.

- A text file (`.txt`, or anything not tab-separated): one sentence per line, blank lines skipped.
- An STS TSV (STS Benchmark layout): score (0-5) in column 5, the two sentences in columns 6 and 7
  (1-based); split on tabs *without* csv quoting (some lines carry extra columns).
  `PATH[start:stop]` selects pairs. The Dataset holds the 2N sentences as rows (all first
  sentences, then all second sentences) and `pair_scores` the N gold scores; `metric = "sts"`
  tells targets/metrics.py to report Spearman x100 of cos(emb_a, emb_b) vs the gold scores.

Lengths: `length="fixed"` pads/truncates every row to the model's sequence length (what a pinned
OpenVINO / TFLite input needs); `length="longest"` pads to the longest row of the set rounded up to
a multiple of 8 (dynamic-axis ONNX / PyTorch; less padding to run through).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.data.datasets import Dataset, DataSpec
from edgecompress.errors import DataError, InputFileError

if TYPE_CHECKING:
    from edgecompress.models import ModelSpec


@dataclass
class TextDataset(Dataset):
    """Tokenized sentences; for STS pairs also the gold scores (rows i and N+i form pair i)."""

    sentences: list[str] = field(default_factory=list)
    pair_scores: np.ndarray | None = None
    metric: str = ""  # "sts" when pair_scores is set; read by targets.metrics.task_metrics


def read_sts(path: str | Path, start: int | None = None,
             stop: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences_a, sentences_b, scores) of an STS-Benchmark-style TSV."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path}: cannot read ({e})") from e
    a, b, scores = [], [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise DataError(f"{path}:{lineno}: expected >= 7 tab-separated columns, got {len(cols)}")
        try:
            scores.append(float(cols[4]))
        except ValueError:
            if lineno == 1:  # a header line
                continue
            raise DataError(f"{path}:{lineno}: score {cols[4]!r} is not a number") from None
        a.append(cols[5].strip())
        b.append(cols[6].strip())
    sl = slice(start, stop)
    a, b, s = a[sl], b[sl], np.asarray(scores[sl], dtype=np.float64)
    if not a:
        raise DataError(f"{path}: no sentence pairs in the selected range")
    return a, b, s


def read_lines(path: str | Path, start: int | None = None, stop: int | None = None) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path}: cannot read ({e})") from e
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][slice(start, stop)]
    if not lines:
        raise DataError(f"{path}: no sentences in the selected range")
    return lines


def is_sts_file(path: str | Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            first = next((ln for ln in f if ln.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return len(first.split("\t")) >= 7


def get_tokenizer(name_or_path: str | Path) -> Any:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def tokenize(sentences: list[str], tokenizer: Any, seq_len: int,
             length: str = "fixed") -> dict[str, np.ndarray]:
    """input_ids / attention_mask as int64 arrays, (N, seq_len) or (N, longest rounded to 8)."""
    if length not in ("fixed", "longest"):
        raise DataError(f"text length mode {length!r}: use 'fixed' or 'longest'")
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)
    if length == "longest":
        used = int(mask.sum(1).max())
        keep = min(seq_len, -(-used // 8) * 8)
        ids, mask = ids[:, :keep], mask[:, :keep]
    return {"input_ids": np.ascontiguousarray(ids), "attention_mask": np.ascontiguousarray(mask)}


def load_text(spec: DataSpec | str, tokenizer: Any, seq_len: int = 128, length: str = "fixed",
              purpose: str = "data") -> TextDataset:
    """A sentence file or an STS TSV -> TextDataset (see module doc)."""
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise InputFileError(f"{purpose} data {path}: no such file")
    if isinstance(tokenizer, str | Path):
        tokenizer = get_tokenizer(tokenizer)
    if is_sts_file(path):
        a, b, scores = read_sts(path, spec.start, spec.stop)
        sentences = a + b
        x = tokenize(sentences, tokenizer, seq_len, length)
        return TextDataset(x, None, str(spec), [], sentences=sentences, pair_scores=scores,
                           metric="sts")
    sentences = read_lines(path, spec.start, spec.stop)
    return TextDataset(tokenize(sentences, tokenizer, seq_len, length), None, str(spec), [],
                       sentences=sentences)


def load_text_for(spec: ModelSpec, data: DataSpec | str, purpose: str = "data",
                  length: str | None = None) -> TextDataset:
    """Tokenize `data` with `spec`'s tokenizer at `spec`'s sequence length."""
    tok = spec.extra.get("tokenizer")
    if not tok:
        raise DataError(f"{purpose} data: model {spec.name} carries no tokenizer (spec.extra['tokenizer'])")
    seq_len = int(spec.extra.get("seq_len") or spec.inputs[0].shape[-1])
    if length is None:
        # Calibration: pad to the longest sentence of the set, so activation ranges are not
        # dominated by padding tokens; evaluation: the model's length (latency at the contract).
        length = "longest" if purpose == "calibration" else spec.extra.get("text_length", "fixed")
    return load_text(data, tok, seq_len, length, purpose)
