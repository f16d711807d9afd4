"""Named preprocessing presets: PIL image -> float32 CHW array (the model's input for one image).

A preset is built from the target size: an int (a square side) or `(height, width)`. A
non-square target is cut from the centred region of its own aspect ratio (the largest that fits,
then the preset's crop fraction of it) and resized to (width, height): the image is never
stretched, and the square path (the TF reference pipeline) is the special case aspect 1.

A preset is a callable; pass your own (any `Callable[[PIL.Image.Image], np.ndarray]`) from Python
where the named ones do not fit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgecompress.errors import ConfigError
from edgecompress.registry import Registry

Transform = Callable[[Image.Image], np.ndarray]
# a square side, or (height, width)
Size = int | tuple[int, int]
PRESETS: Registry[Callable[[Size], Transform]] = Registry("preprocessing preset")


def size_hw(size: Size) -> tuple[int, int]:
    """`size` as (height, width): an int is a square side. Anything else (0, a 3-tuple, a float) is
    refused naming it, not left to fail inside PIL on the first image."""
    try:
        parts = [size, size] if not isinstance(size, tuple | list) else list(size)
        # operator.index: any integer (a numpy shape entry too), never a float or a bool
        hw = [operator.index(v) for v in parts if not isinstance(v, bool)]
    except TypeError:
        hw = []
    if len(hw) != 2 or len(parts) != 2 or min(hw) < 1:
        raise ConfigError(f"image size {size!r}: a positive int (a square side) or (height, width)")
    return hw[0], hw[1]


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


def center_crop_fraction(im: Image.Image, fraction: float, hw: tuple[int, int] | None = None) -> Image.Image:
    """Centre crop of `fraction` x the largest centred region of `hw`'s aspect ratio (None: square,
    i.e. `fraction` x the short side), offsets rounded as TensorFlow does."""
    w, h = im.size
    th, tw = hw if hw is not None else (1, 1)
    # the largest region of aspect tw:th inside the image; for a square target exactly min(w, h)
    # on both axes, so square crops are the ones they always were
    cw = max(1, int(fraction * min(w, h * tw / th)))  # (a 1 px image: 0 px failed in PIL's resize)
    ch = max(1, int(fraction * min(h, w * th / tw)))
    left, top = (w - cw + 1) // 2, (h - ch + 1) // 2
    return im.crop((left, top, left + cw, top + ch))


@dataclass(frozen=True)
class EfficientNetLite:
    """Centre crop size/(size+32) of the short side (224/256 at 224), bicubic resize, RGB 0-255,
    then (x - 127) / 128.

    Matches the TF reference pipeline of EfficientNet-Lite (verified: top-1 86.9 % on the shared
    1000-image set, as published for these files). For (h, w): the crop has the target's aspect
    ratio and the fraction is min(h, w)/(min(h, w)+32), the 32 px margin taken on the short side
    as the square pipeline does.
    """

    size: Size = 224

    def __call__(self, im: Image.Image) -> np.ndarray:
        h, w = size_hw(self.size)
        im = center_crop_fraction(to_8_bit(im).convert("RGB"), min(h, w) / (min(h, w) + 32), (h, w))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        return ((np.asarray(im, np.float32) - 127.0) / 128.0).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class ImageNetMeanStd:
    """Centre crop 224/256 of the short side (the torchvision "resize to size*256/224, crop size"
    region), bilinear resize, scale to 0-1, mean/std. For (h, w): 224/256 of the largest centred
    region of the target's aspect ratio."""

    size: Size = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, im: Image.Image) -> np.ndarray:
        h, w = size_hw(self.size)
        im = center_crop_fraction(to_8_bit(im).convert("RGB"), 224 / 256, (h, w))
        im = im.resize((w, h), Image.Resampling.BILINEAR)
        a: np.ndarray = np.asarray(im, np.float32) / 255.0
        a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return a.transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class GrayUnit:
    """Grayscale, resize (no crop) to size x size or (h, w), scale to 0-1: one-channel models such
    as digits-cnn."""

    size: Size = 8

    def __call__(self, im: Image.Image) -> np.ndarray:
        h, w = size_hw(self.size)
        im = to_8_bit(im).convert("L").resize((w, h), Image.Resampling.BILINEAR)
        return (np.asarray(im, np.float32) / 255.0)[None].copy()


PRESETS.register("efficientnet-lite", EfficientNetLite)
PRESETS.register("imagenet", ImageNetMeanStd)
PRESETS.register("gray-unit", GrayUnit)


def get_transform(preset: str | Transform, size: Size) -> Transform:
    """A transform from a preset name (with the model's input size: an int or (h, w)) or a user
    callable, which is returned as it is."""
    if callable(preset):
        return preset
    h, w = size_hw(size)
    # a square size goes in as the int every preset has always taken (a plugin's may take no tuple)
    return PRESETS.get(preset, "--preprocess", "preprocess")(h if h == w else (h, w))
