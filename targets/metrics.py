"""Accuracy and drift of an artifact's outputs against the fp32 PyTorch reference."""

from __future__ import annotations

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    if labels is None or logits.ndim != 2:
        return {}
    if labels.max(initial=0) >= logits.shape[1]:
        from edgecompress.errors import DataError

        raise DataError(f"labels go up to class {int(labels.max())} but the model has "
                        f"{logits.shape[1]} outputs")
    top = np.argsort(-logits, axis=1)[:, :5]
    out = {"top1": float((top[:, 0] == labels).mean())}
    if logits.shape[1] >= 5:
        out["top5"] = float((top == labels[:, None]).any(1).mean())
    return out


def drift(reference: np.ndarray, outputs: np.ndarray, classes: bool = True) -> dict[str, float]:
    """Top-1 agreement (when the outputs are class scores: `classes`), mean cosine and max / mean
    absolute difference. An embedding's argmax means nothing, so encoders pass classes=False."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    out = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if ref.shape != out.shape:
        from edgecompress.errors import ValidationError

        raise ValidationError(f"artifact outputs have shape {out.shape}, reference {ref.shape}")
    for name, arr in (("artifact outputs", out), ("reference outputs", ref)):
        check_finite_outputs(arr, name)
    nr, no = np.linalg.norm(ref, axis=1), np.linalg.norm(out, axis=1)
    # 1 only where both rows are zero: an all-zero output against a real one is 0, not "perfect"
    cos = np.where((nr == 0) & (no == 0), 1.0, (ref * out).sum(1) / np.maximum(nr * no, 1e-30))
    d = {"cosine": float(cos.mean()), "cosine_min": float(cos.min()),
         "max_abs": float(np.abs(ref - out).max()), "mean_abs": float(np.abs(ref - out).mean())}
    if classes and ref.shape[1] > 1:
        agree = int((ref.argmax(1) == out.argmax(1)).sum())
        d["top1_agreement"] = agree / len(ref)
        # How far a figure from these few samples can be from the truth: 98.1 % of 700 is
        # 97.0-98.9 %, so a 0.3 pt difference between two files is no ranking.
        d["top1_agreement_low95"], d["top1_agreement_high95"] = wilson_interval(agree, len(ref))
    return d


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion k / n (stays inside [0, 1] and is sane
    at k = n, where the normal approximation gives a zero-width interval)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def check_finite_outputs(outputs: np.ndarray, what: str = "artifact outputs") -> None:
    """A NaN / Inf output is a broken artifact, not a figure: NaN rows read as class 0 on both
    sides (full agreement) and as cosine 1, and a bare NaN is not valid JSON."""
    rows = ~np.isfinite(outputs.reshape(outputs.shape[0], -1)).all(1)
    if rows.any():
        from edgecompress.errors import ValidationError

        raise ValidationError(f"{what}: {int(rows.sum())} of {len(rows)} samples hold NaN or Inf "
                              f"(first: sample {int(rows.argmax())})")


# ---- task metrics: chosen by the evaluation set (an STS set carries pair scores) -------------

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def sts_metrics(embeddings: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Rows i and N+i of `embeddings` are the two sentences of pair i: Spearman x100 of their
    cosine similarity vs the gold `scores` (the STS-Benchmark convention). Stored as a fraction,
    like top-1 (reports print x100)."""
    n = len(scores)
    emb = embeddings.reshape(embeddings.shape[0], -1).astype(np.float64)
    if emb.shape[0] != 2 * n:
        from edgecompress.errors import ValidationError

        raise ValidationError(f"STS: {emb.shape[0]} embeddings for {n} pairs (expected {2 * n})")
    a, b = emb[:n], emb[n:]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"spearman": spearman(cos, scores)}


def task_metrics(outputs: np.ndarray, data) -> dict[str, float]:
    """The evaluation set's task metric: STS Spearman when it carries pair scores, else top-1/5."""
    if getattr(data, "metric", "") == "sts" and getattr(data, "pair_scores", None) is not None:
        return sts_metrics(outputs, data.pair_scores)
    return classification_metrics(outputs, data.y)
