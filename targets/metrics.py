"""Accuracy and drift of an artifact's outputs against the fp32 PyTorch reference."""

from __future__ import annotations

import numpy as np

from edgecompress.errors import DataError, ValidationError


def classification_metrics(logits: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    if labels is None or logits.ndim != 2:
        return {}
    if labels.max(initial=0) >= logits.shape[1]:
        raise DataError(f"labels go up to class {int(labels.max())} but the model has "
                        f"{logits.shape[1]} outputs")
    top = np.argsort(-logits, axis=1)[:, :5]
    out = {"top1": float((top[:, 0] == labels).mean())}
    if logits.shape[1] >= 5:
        out["top5"] = float((top == labels[:, None]).any(1).mean())
    return out


def drift(reference: np.ndarray, outputs: np.ndarray, classes: bool = True) -> dict[str, float]:
    """Top-1 agreement (when the outputs are class scores: `classes`), mean cosine and max / mean
    absolute difference. An embedding's argmax means nothing, so encoders pass classes=False.

    Infinite scores (masked logits: -inf for the classes a model rules out) are allowed where the
    reference holds the same ±inf; cosine, max_abs and mean_abs are then computed on the positions
    finite on both sides (positions where both hold the same ±inf do not differ, and where only the
    reference is infinite an int8 file's large finite value says the same), so they stay finite. A
    row with no such position counts as cosine 1 and difference 0. Top-1 agreement compares the
    whole rows (argmax is well defined with ±inf). NaN on either side, or an artifact Inf the
    reference does not have, is refused (`check_finite_outputs`)."""
    ref, out = _rows(reference, outputs)
    check_finite_outputs(ref, "reference outputs", ref)  # its own ±inf is the model's answer; NaN is not
    check_finite_outputs(out, "artifact outputs", ref)
    both = np.isfinite(ref) & np.isfinite(out)
    ref_f, out_f = np.where(both, ref, 0.0), np.where(both, out, 0.0)
    nr, no = np.linalg.norm(ref_f, axis=1), np.linalg.norm(out_f, axis=1)
    # 1 only where both rows are zero: an all-zero output against a real one is 0, not "perfect"
    cos = np.where((nr == 0) & (no == 0), 1.0, (ref_f * out_f).sum(1) / np.maximum(nr * no, 1e-30))
    diff = np.abs(ref_f - out_f)
    d = {"cosine": float(cos.mean()), "cosine_min": float(cos.min()),
         "max_abs": float(diff.max(initial=0.0)), "mean_abs": float(diff.sum() / max(int(both.sum()), 1))}
    if classes and ref.shape[1] > 1:
        agree = int((ref.argmax(1) == out.argmax(1)).sum())
        d["top1_agreement"] = agree / len(ref)
        # How far a figure from these few samples can be from the truth: 98.1 % of 700 is
        # 97.0-98.9 %, so a 0.3 pt difference between two files is no ranking.
        d["top1_agreement_low95"], d["top1_agreement_high95"] = wilson_interval(agree, len(ref))
    return d


def _rows(reference: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64, one row per sample; a shape mismatch is one ValidationError."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    out = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if ref.shape != out.shape:
        raise ValidationError(f"artifact outputs have shape {out.shape}, reference {ref.shape}")
    return ref, out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion k / n (stays inside [0, 1] and is sane
    at k = n, where the normal approximation gives a zero-width interval)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends, and never excluding p: float rounding put the upper bound at k = n just
    # under 1 for 308 of n = 1..1000 (the plot's error bar then went negative and crashed the report)
    lo = 0.0 if k <= 0 else min(p, max(0.0, centre - half))
    hi = 1.0 if k >= n else max(p, min(1.0, centre + half))
    return (float(lo), float(hi))


def check_finite_outputs(outputs: np.ndarray, what: str = "artifact outputs",
                         reference: np.ndarray | None = None) -> None:
    """A NaN / Inf output is a broken artifact, not a figure: NaN rows read as class 0 on both
    sides (full agreement) and as cosine 1, and a bare NaN is not valid JSON. With the fp32
    `reference`, an Inf is fine where the reference holds the same one (masked logits); NaN, or
    an Inf where the reference is finite or of the other sign, still fails."""
    out = outputs.reshape(outputs.shape[0], -1)
    bad = np.isinf(out)
    if reference is not None:
        bad &= _rows(reference, outputs)[0] != out
    rows = (bad | np.isnan(out)).any(1)
    if rows.any():
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
        raise ValidationError(f"STS: {emb.shape[0]} embeddings for {n} pairs (expected {2 * n})")
    a, b = emb[:n], emb[n:]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"spearman": spearman(cos, scores)}


def task_metrics(outputs: np.ndarray, data) -> dict[str, float]:
    """The evaluation set's task metric: STS Spearman when it carries pair scores, else top-1/5."""
    if getattr(data, "metric", "") == "sts" and getattr(data, "pair_scores", None) is not None:
        return sts_metrics(outputs, data.pair_scores)
    return classification_metrics(outputs, data.y)
