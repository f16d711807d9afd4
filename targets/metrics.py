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


def drift(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Top-1 agreement (classifiers), mean cosine and max / mean absolute difference."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    out = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if ref.shape != out.shape:
        from edgecompress.errors import ValidationError

        raise ValidationError(f"artifact outputs have shape {out.shape}, reference {ref.shape}")
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, (ref * out).sum(1) / np.maximum(denom, 1e-30), 1.0)
    d = {"cosine": float(cos.mean()), "cosine_min": float(cos.min()),
         "max_abs": float(np.abs(ref - out).max()), "mean_abs": float(np.abs(ref - out).mean())}
    if ref.shape[1] > 1:
        d["top1_agreement"] = float((ref.argmax(1) == out.argmax(1)).mean())
    return d
