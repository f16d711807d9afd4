"""Data for a model: what the user gave (a path, a DataSpec, samples in memory) or the model's
default, loaded the way the model takes it and checked against its inputs. Used by the pipeline
and by every compression pass (which must not import the pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.data.datasets import DataLike, Dataset, DataSpec, load_data
from edgecompress.data.presets import Transform
from edgecompress.errors import DataError, say

if TYPE_CHECKING:
    from edgecompress.models import ModelSpec


def resolve_data(spec: ModelSpec, data: DataLike | None, purpose: str,
                 progress: bool = True) -> Dataset | None:
    """A Dataset from what the user gave, else from the zoo entry's default, else None.

    `purpose`: "calibration", "train" or "evaluation" (which default to take; names errors).
    Whatever the source, the samples are checked against the model's input (dtype, shape), and a
    Dataset built in memory gets the checks files get on loading (finite values, labels).
    """
    if data is not None and not isinstance(data, (str, Path, DataSpec, Dataset)):
        from edgecompress.data.datasets import from_memory

        data = from_memory(data, f"{purpose} data")  # an array, a tensor, (x, y), a DataLoader
    if data is None:
        default = spec.default_eval if purpose == "evaluation" else spec.default_calib
        data = default() if default else None
        if data is None:
            return None
    from edgecompress.data.datasets import check_in_memory, match_model

    if isinstance(data, Dataset):
        ds = data
        check_in_memory(ds, f"{purpose} data {ds.source}")
    else:
        if spec.is_text:  # text encoders: tokenize with the model's tokenizer
            from edgecompress.data.text import load_text_for

            text = data if isinstance(data, DataSpec) else str(data)  # a Path: AttributeError in load_text
            return load_text_for(spec, text, "calibration" if purpose == "train" else purpose)
        if spec.takes_integers:
            _refuse_images(spec, data, purpose)
        preprocess = spec.preprocess or "efficientnet-lite"
        ds = load_for_input(data if isinstance(data, DataSpec) else str(data), spec.input_shape, preprocess,
                            purpose, progress)
    match_model(ds, spec.input_shape, spec.inputs[0].dtype, f"{purpose} data {ds.source}",
                spec.extra.get("vocab_size"), spec.extra.get("input_vocab"), {i.name: i.dtype for i in spec.inputs})
    _check_inputs_fed(spec, ds, purpose)
    return ds


def load_for_input(data: str | DataSpec, shape: Sequence[Any], preprocess: str | Transform, purpose: str,
                   progress: bool = True) -> Dataset:
    """`data` read for a model input of `shape` (batch first): image files preprocessed at its
    (height, width) (224 px for a shape that is no image). For a channels-last input (N, H, W, C)
    a named preset's (C, H, W) samples are turned to (H, W, C); a transform of your own gives what
    it gives, and tensor files are taken as they are (match_model checks both)."""
    from edgecompress.exporters.base import image_layout
    from edgecompress.models.spec import image_hw

    hw = image_hw(shape)
    ds = load_data(data, preprocess, hw or 224, purpose, progress)
    if hw is None or image_layout(shape) == "NCHW" or callable(preprocess) or ds.reload is None \
            or isinstance(ds.x, dict):
        return ds  # (reload is set only for data read from image files)
    if ds.x.shape[1:] == (shape[3], *hw):
        # without `reload`: Dataset.at_side reads (N, C, H, W), and the resolution pass, its user,
        # refuses channels-last models
        return Dataset(np.ascontiguousarray(ds.x.transpose(0, 2, 3, 1)), ds.y, ds.source, ds.names)
    return ds


def _check_inputs_fed(spec: ModelSpec, ds: Dataset, purpose: str) -> None:
    """A model of several inputs needs a dict of arrays, one per input (what the tokenizer gives a
    text encoder); a file holds one input array. A two-input .onnx got its first input fed and
    failed in ONNX Runtime with a traceback ("Required inputs (['z']) are missing")."""
    names = [i.name for i in spec.inputs]
    where = f"{purpose} data {ds.source}"
    if len(names) > 1 and not isinstance(ds.x, dict):
        feed = say("--calib/--eval feed single-input models",
                   "pass a Dataset whose x is a dict of arrays keyed by input name",
                   "data.train / data.calib / data.eval arrays feed single-input models")
        raise DataError(f"{where}: model {spec.name} takes {len(names)} inputs ({', '.join(names)}) and the data "
                        f"gives one array; {feed}")
    if spec.onnx_path is not None and isinstance(ds.x, dict):  # ONNX Runtime takes these names as they are
        missing = [n for n in names if n not in ds.x]
        if missing:
            raise DataError(f"{where}: gives no array for input(s) {', '.join(missing)} of {spec.onnx_path} "
                            f"(its keys: {', '.join(ds.x)})")


def _refuse_images(spec: ModelSpec, data: str | Path | DataSpec, purpose: str) -> None:
    """[audit #27] A model of integer ids reads its data from .npy / .npz arrays of ids: an image
    folder or labels CSV would be decoded (every image) only to be refused as float samples."""
    from edgecompress.data.datasets import TENSOR_SUFFIXES

    path = Path(data.path if isinstance(data, DataSpec) else DataSpec.parse(str(data)).path).expanduser()
    if path.suffix.lower() in TENSOR_SUFFIXES or not path.exists():  # (a missing path: load_data says so)
        return
    what = "an image folder" if path.is_dir() else f"a {path.suffix or 'extensionless'} file"
    raise DataError(f"{purpose} data {path}: {what}, but model {spec.name} takes {spec.inputs[0].dtype} ids "
                    f"{tuple(spec.input_shape)}; give a .npy / .npz of integer ids (N, "
                    f"{', '.join(map(str, spec.input_shape[1:]))})")
