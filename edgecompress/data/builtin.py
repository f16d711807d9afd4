"""Small data sets the project builds itself, with no download.

- digits: scikit-learn's 8x8 digits, split 1347 train / 450 test (see models/digits.py).
- photo-crops: 224 px crops of the two photos scikit-learn ships (china.jpg, flower.jpg), the
  fallback for ImageNet models when ../shared/data is absent: the first CALIB_CROPS calibrate, the
  other crops evaluate (other random crops, so the evaluation never scores a calibration input).
  Unlabelled: they give drift against fp32, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CROPS_VERSION = 2  # v2: 228 crops, 128 to calibrate + 100 to evaluate (v1: 128, evaluated on 0-99)
CALIB_CROPS = 128
EVAL_CROPS = 100


def photo_crops(n: int = CALIB_CROPS + EVAL_CROPS, size: int = 224, seed: int = 0) -> np.ndarray:
    """`n` random square crops (scale, position, flip) of sklearn's sample photos, preprocessed
    with the efficientnet-lite preset."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from edgecompress.data.presets import EfficientNetLite

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    pre = EfficientNetLite(size)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        side = int(rng.uniform(0.25, 1.0) * min(w, h))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = pre(crop)
    return out


def photo_crops_npz() -> Path:
    from edgecompress.paths import cached_file

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, x=photo_crops())

    return cached_file(f"photo-crops-v{CROPS_VERSION}.npz", write, "the photo crops")
