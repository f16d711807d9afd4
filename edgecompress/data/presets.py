"""Named preprocessing presets: PIL image -> float32 CHW array (the model's input for one image).

A preset is a callable; pass your own (any `Callable[[PIL.Image.Image], np.ndarray]`) from Python
where the named ones do not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgecompress.registry import Registry

Transform = Callable[[Image.Image], np.ndarray]
PRESETS: Registry[Callable[[int], Transform]] = Registry("preprocessing preset")


def to_8_bit(im: Image.Image) -> Image.Image:
    """A 16-bit image (PNG / TIFF modes I;16*, or I holding 16-bit values) as 8-bit grayscale, its
    top byte: PIL's own conversion to L / RGB clips at 255, so a depth map or a medical frame
    became a white image without a word. A float image has no pixel scale to read: refused. (The
    presets call it; a transform of your own gets the image as it was read.)"""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"a {im.mode} image with values outside 0..65535; save it as 8- or 16-bit")
        return Image.fromarray((a >> 8).astype(np.uint8), mode="L")
    if im.mode == "F":
        raise ValueError("a floating-point (mode F) image has no pixel scale; save it as 8- or 16-bit")
    return im


def center_crop_fraction(im: Image.Image, fraction: float) -> Image.Image:
    """Square centre crop of `fraction` x the short side, offsets rounded as TensorFlow does."""
    w, h = im.size
    c = int(fraction * min(w, h))
    left, top = (w - c + 1) // 2, (h - c + 1) // 2
    return im.crop((left, top, left + c, top + c))


@dataclass(frozen=True)
class EfficientNetLite:
    """Centre crop 224/256 of the short side, bicubic resize, RGB 0-255, then (x - 127) / 128.

    Matches the TF reference pipeline of EfficientNet-Lite (verified: top-1 86.9 % on the shared
    1000-image set, as published for these files).
    """

    size: int = 224

    def __call__(self, im: Image.Image) -> np.ndarray:
        im = center_crop_fraction(to_8_bit(im).convert("RGB"), self.size / (self.size + 32))
        im = im.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return ((np.asarray(im, np.float32) - 127.0) / 128.0).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class ImageNetMeanStd:
    """Resize the short side to size*256/224 (bilinear), centre crop, scale to 0-1, mean/std."""

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, im: Image.Image) -> np.ndarray:
        im = center_crop_fraction(to_8_bit(im).convert("RGB"), 224 / 256)
        im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
        a: np.ndarray = np.asarray(im, np.float32) / 255.0
        a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return a.transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class GrayUnit:
    """Grayscale, resize to size x size, scale to 0-1: one-channel models such as digits-cnn."""

    size: int = 8

    def __call__(self, im: Image.Image) -> np.ndarray:
        im = to_8_bit(im).convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return (np.asarray(im, np.float32) / 255.0)[None].copy()


PRESETS.register("efficientnet-lite", EfficientNetLite)
PRESETS.register("imagenet", ImageNetMeanStd)
PRESETS.register("gray-unit", GrayUnit)


def get_transform(preset: str | Transform, size: int) -> Transform:
    """A transform from a preset name (with the model's input size) or a user callable."""
    if callable(preset):
        return preset
    return PRESETS.get(preset, "--preprocess", "preprocess")(size)
