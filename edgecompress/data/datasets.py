"""Calibration and evaluation data: image folders, labelled CSVs, .npy/.npz tensors.

Everything loads into one in-memory `Dataset` (model-ready float32 arrays plus optional labels):
calibration and evaluation sets are hundreds to a few thousand samples, and every backend (ORT,
NNCF, LiteRT, PyTorch) can then be fed the very same arrays, which is what makes drift comparable.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from edgecompress.data.presets import Size, Transform, get_transform, size_hw
from edgecompress.errors import DataError, InputFileError, opt, say

if TYPE_CHECKING:
    import torch
    import torch.utils.data

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TENSOR_SUFFIXES = {".npy", ".npz"}


# What `load_data` (and every `data=` / calib / eval parameter that goes through it) takes: a
# Dataset as it is, a path or DataSpec to read, or samples in memory for `from_memory` (an array or
# tensor, an `(x, y)` pair, a torch map-style Dataset, an iterable of batches such as a DataLoader).
# A string: torch is imported for type checkers only.
DataLike: TypeAlias = (
    "Dataset | DataSpec | str | Path | np.ndarray | torch.Tensor | tuple[Any, Any]"
    " | torch.utils.data.Dataset[Any] | Iterable[Any]"
)


def _as_numpy(a: Any) -> Any:
    """A torch tensor as a numpy array (detached, on the CPU); anything else as it is."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        return a.detach().cpu().numpy()
    return a


@dataclass
class Dataset:
    """Model-ready inputs `x` (N, ...) float32, optional integer labels `y`, and where they came from.

    `x` may be a dict of named arrays for multi-input models (e.g. input_ids + attention_mask).
    `reload(size)`, set for image files, preprocesses the same samples again at another size, a
    square side or (height, width) (see `at_side`).
    """

    x: np.ndarray | dict[str, np.ndarray]
    y: np.ndarray | None = None
    source: str = "in-memory Dataset"  # what errors name (a bare "" read "labels of  go up to ...")
    names: list[str] = field(default_factory=list)
    reload: Callable[[Size], Dataset] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # torch tensors (a DataLoader's batches) as numpy, as every backend takes them: a Tensor was
        # accepted here and refused only at export ("x must be numpy arrays, got Tensor")
        if isinstance(self.x, dict):
            self.x = {k: _as_numpy(v) for k, v in self.x.items()}
        else:
            self.x = _as_numpy(self.x)
        if self.y is not None:
            self.y = _as_numpy(self.y)
        # a list of samples was accepted here and failed later with raw AttributeErrors (len(),
        # reference_outputs, validate); the export path's check (check_in_memory), made at once
        for what, a in [*(self.x.items() if isinstance(self.x, dict) else [("x", self.x)]), ("y", self.y)]:
            if a is not None and not isinstance(a, np.ndarray):
                from edgecompress.errors import ConfigError

                raise ConfigError(f"{self.source}: {what} must be numpy arrays, got {type(a).__name__} "
                                  "(np.stack(samples) makes one of a list of samples)")

    def __getstate__(self) -> dict:
        # `reload` is a closure over the loader: a pickled Dataset (the isolated export child's
        # calibration set) travels without it
        return {**self.__dict__, "reload": None}

    def __len__(self) -> int:
        first = next(iter(self.x.values())) if isinstance(self.x, dict) else self.x
        return int(first.shape[0])

    def take(self, index: slice | np.ndarray) -> Dataset:
        x = {k: v[index] for k, v in self.x.items()} if isinstance(self.x, dict) else self.x[index]
        y = None if self.y is None else self.y[index]
        names = list(np.asarray(self.names, dtype=object)[index]) if self.names else []
        parent = self.reload
        reload = None if parent is None else (lambda side: parent(side).take(index))
        return Dataset(x, y, self.source, names, reload)

    def at_side(self, side: Size) -> Dataset:
        """The same samples as (N, C, H, W) images of `side` (a square side, or (height, width)),
        in the same order.

        Image files are decoded and preprocessed again at that size (what a deployed low-resolution
        model gets). Tensors, which cannot be, are resized (antialiased bicubic) and the source
        says so: resampling an already resampled image blurs it (EfficientNet-Lite0 at 176 px:
        79.6 % top-1 on resized tensors, 82.6 % on the files; benchmarks/RESULTS-compress.md).
        """
        hw = size_hw(side)
        if isinstance(self.x, dict) or self.x.ndim != 4:
            raise DataError(f"data {self.source}: samples of shape {self._shape()} are not images (N, C, H, W)")
        if self.x.shape[2:] == hw:
            return self
        if self.reload is not None:
            # the int for a square side, as the presets (and a plugin's) have always been given it
            out = self.reload(hw[0] if hw[0] == hw[1] else hw)
            if len(out) != len(self):
                raise DataError(f"data {self.source}: reloading at {_px(hw)} gave {len(out)} samples, not {len(self)}")
            if not isinstance(out.x, dict) and out.x.ndim == 4 and out.x.shape[2:] == hw:
                return out
            # a transform of your own gets no side (Image -> array) and gave its own: the model
            # at `side` was fine-tuned on samples of the old one without a word
            return out._resized(hw, "your transform ignores the side; resized")
        return self._resized(hw, "resized")

    def _resized(self, hw: tuple[int, int], how: str) -> Dataset:
        import torch

        if isinstance(self.x, dict) or self.x.ndim != 4:
            raise DataError(f"data {self.source}: samples of shape {self._shape()} are not images (N, C, H, W)")
        x = self.x
        chunks = [resize_square(torch.from_numpy(np.ascontiguousarray(x[i : i + 64])), hw).numpy()
                  for i in range(0, len(self), 64)]
        return Dataset(np.concatenate(chunks), self.y, f"{self.source} ({how} to {hw[0]}x{hw[1]})", self.names)

    def _shape(self) -> tuple[int, ...]:
        return tuple(np.asarray(self.x).shape[1:]) if not isinstance(self.x, dict) else ()

    def batches(self, batch_size: int = 32, desc: str | None = None,
                progress: bool = True) -> Iterator[np.ndarray | dict[str, np.ndarray]]:
        """Yield input batches, with a progress bar when `desc` is given."""
        n = len(self)
        starts = range(0, n, batch_size)
        if desc and progress:
            from edgecompress.progress import bar

            starts = bar(starts, desc=desc, unit="batch", total=math.ceil(n / batch_size), leave=False)
        for s in starts:
            yield self.take(slice(s, s + batch_size)).x


def _px(hw: tuple[int, int]) -> str:
    """A size as messages say it: "16 px" for a square, "24x32 px" (h x w) otherwise."""
    return f"{hw[0]} px" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]} px"


def resize_square(x: torch.Tensor, side: Size) -> torch.Tensor:
    """An (N, C, H, W) torch tensor resized to side x side, or to (height, width) for a pair
    (bicubic; antialiased when shrinking)."""
    import torch.nn.functional as F

    hw = size_hw(side)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bicubic", antialias=True, align_corners=False)


@dataclass
class DataSpec:
    """Where data lives and which slice of it to use; resolved by `load_data`.

    `path` is a folder of images (labelled by a `labels.csv` inside it, by `labels`, or by
    sub-folders), a CSV `filename,class_index[,...]`, or a `.npy` / `.npz` file. `start:stop`
    select rows in file order (e.g. the first 300 for calibration, the rest for evaluation).
    """

    path: str
    start: int | None = None
    stop: int | None = None
    labels: str | None = None

    def __post_init__(self) -> None:
        # DataSpec(5) and DataSpec(p, start="a") reached pathlib's and slice()'s TypeError when read
        from edgecompress.errors import ConfigError

        if isinstance(self.path, Path):  # a Path is a path: kept as text, as parse() gives it
            self.path = str(self.path)
        if not isinstance(self.path, str):
            raise ConfigError(f"DataSpec: path must be a str or Path, got {type(self.path).__name__}")
        for key in ("start", "stop"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
                raise ConfigError(f"DataSpec: {key} must be an integer row index or None, got {value!r:.40}")
            setattr(self, key, None if value is None else int(value))  # a numpy integer as an int
        if self.labels is not None and not isinstance(self.labels, str | Path):
            raise ConfigError(f"DataSpec: labels must be a path to a labels CSV, got {type(self.labels).__name__}")

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """`PATH` or `PATH[start:stop]` (the CLI form)."""
        m = re.fullmatch(r"(.+?)\[(-?\d*):(-?\d*)\]", text.strip(), flags=re.DOTALL)
        if not m:
            return cls(text.strip())
        start, stop = (int(v) if v else None for v in m.group(2, 3))
        return cls(m.group(1).strip(), start, stop)  # [issue #7] stripped like a bare PATH (fuzz)

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.path
        return f"{self.path}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


def check_finite(x: np.ndarray, where: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(x.shape[0], -1).any(1).argmax())
        raise DataError(f"{where}: sample {bad} contains NaN or Inf")


def as_float32(x: np.ndarray, where: str) -> np.ndarray:
    """Finite float samples as float32, or a DataError naming the first sample a float64 value of
    which float32 cannot hold (the cast turned it into Inf, refused as "contains NaN or Inf" of a
    file that holds none, after numpy's overflow warning)."""
    if x.dtype.itemsize > 4:
        big = (np.abs(x) > np.finfo(np.float32).max).reshape(len(x), -1).any(1)
        if big.any():
            i = int(big.argmax())
            raise DataError(f"{where}: sample {i} holds a value beyond float32's range "
                            f"({float(np.abs(x[i]).max()):.3g}); the models take float32")
    return x.astype(np.float32, copy=False)


# The largest class index a label may be: labels are int64 from here on (a larger one in a labels CSV
# was an OverflowError traceback; in a uint64 .npz 'y' it wrapped to a negative index)
_MAX_LABEL = int(np.iinfo(np.int64).max)


def check_labels(y: np.ndarray, n: int, where: str, key: str = "y") -> None:
    """Class indices: one integer >= 0 per sample (the range above is checked against the model)."""
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise DataError(f"{where}: '{key}' must be {n} integer labels, one per sample "
                        f"(got shape {y.shape}, dtype {y.dtype})")
    if len(y) and y.min() < 0:  # as the labels CSV: a class index is >= 0
        raise DataError(f"{where}: '{key}' holds a negative class index ({int(y.min())}); "
                        "labels are class indices 0..N-1")
    if len(y) and int(y.max()) > _MAX_LABEL:  # uint64 labels became negative in the int64 cast
        raise DataError(f"{where}: '{key}' holds class index {int(y.max())}, beyond int64; labels are class "
                        "indices 0..N-1")


def check_in_memory(ds: Dataset, where: str) -> None:
    """What loading from a file checks, for a Dataset built in Python: a NaN sample trained a model
    into all-NaN weights (and calibrated ranges to NaN), wrong labels failed deep inside torch."""
    from edgecompress.errors import ConfigError

    arrays = ds.x.values() if isinstance(ds.x, dict) else [ds.x]
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise ConfigError(f"{where}: x must be numpy arrays, got {type(a).__name__}")
        if a.dtype.kind == "f":
            check_finite(a, where)
    if ds.y is not None:
        check_labels(np.asarray(ds.y), len(ds), where)


def match_model(ds: Dataset, input_shape: Sequence[int], dtype: str, where: str,
                vocab_size: int | None = None, input_vocab: Mapping[str, int] | None = None,
                input_dtypes: Mapping[str, str] | None = None) -> None:
    """The samples against a single-input model: a float dtype for a float input (float64 becomes
    float32 in place), integers for an integer input (token / class ids, cast in place to the
    model's integer type; below `vocab_size` when the model's first layer is an nn.Embedding of that
    many rows), the sample shape. Multi-input (dict) sets (the tokenizer's or the caller's) are
    checked input by input (`match_inputs`) against `input_dtypes` (each input's dtype by name) and
    `input_vocab` (an .onnx of several inputs: the rows of the table each input indexes), and their
    `input_ids` against `vocab_size`."""
    if isinstance(ds.x, dict):
        bounds = dict(input_vocab or {})
        if vocab_size is not None and "input_ids" in ds.x:
            # a text encoder's (models/hf.py) word ids index its vocabulary; its masks and token
            # types do not, so the bound goes to that input only
            bounds.setdefault("input_ids", int(vocab_size))
        ds.x = match_inputs(ds.x, input_dtypes or {}, where, bounds)
        return
    # [issue #7] integer / complex tensors for a float model would be cast silently (or crash a
    # runtime): a wrong-dtype file is refused here, naming it.
    if dtype.startswith("float") and ds.x.dtype != np.float32:
        if ds.x.dtype.kind != "f":
            raise DataError(f"{where}: dtype {ds.x.dtype} does not match the model input ({dtype}); save "
                            "preprocessed float32 arrays")
        ds.x = as_float32(ds.x, where)  # float64 from numpy defaults: the runtimes take float32
    elif dtype.startswith(("int", "uint")):
        ds.x = as_ids(ds.x, dtype, where, vocab_size)
    expected, got = tuple(input_shape[1:]), tuple(ds.x.shape[1:])
    if got != expected:
        side = say("", "; or the data's side: Dataset.at_side(N) for images", "")  # Python only
        raise DataError(f"{where}: samples have shape {got} but the model takes {expected} (check "
                        f"{opt('--input-shape', 'input_shape')} / {opt('--preprocess', 'preprocess')}{side})")


def match_inputs(x: Mapping[str, np.ndarray], dtypes: Mapping[str, str], where: str,
                 input_vocab: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """A dict of arrays by input name (a model of several inputs), each as its input takes it
    (`dtypes`: each input's dtype by name; an input not in it is left as it is). An integer input
    (ids, masks) takes integer or bool arrays, cast to its type (int32 ids for an int64 input,
    a bool mask), ids that type cannot hold refused, and ids below its table's rows where
    `input_vocab` bounds it; a float32 input takes floats, float64 as float32. One-line DataError
    naming the input otherwise.

    Why cast rather than refuse: a single input's ids are cast this way (`as_ids`), tokenizers and
    np.savez give int32 as readily as int64, and the cast of an integer that fits is exact; fed as
    they were, ONNX Runtime refused int32 ids mid-calibration ("Unexpected input data type. Actual:
    (tensor(int32)), expected: (tensor(int64))") while OpenVINO took them. Why float arrays are
    refused for an integer input, integral values or not: as for a single input of ids (`as_ids`),
    a float array there is more often the wrong array (features, an image) than ids, OpenVINO
    truncated a 0.5 mask to 0 without a word, and one astype on the caller's side says they are ids."""
    out = dict(x)
    for name, a in x.items():
        want, bound = dtypes.get(name, ""), (input_vocab or {}).get(name)
        at = f"{where}: input {name!r}"
        if want.startswith(("int", "uint")):
            out[name] = as_ids(a.astype(np.dtype(want)) if a.dtype.kind == "b" else a, want, at, bound)
        elif want == "float32":  # (a float16 input's data is left as it is)
            if a.dtype.kind != "f":
                raise DataError(f"{at}: dtype {a.dtype} but the model takes {want} samples for it (save "
                                "preprocessed float32 arrays)")
            out[name] = as_float32(a, at)
        elif bound is not None:  # (no dtype known: the bound checked, nothing cast)
            as_ids(a, str(a.dtype) if a.dtype.kind in "iu" else "int64", at, bound)
    return out


def as_ids(x: np.ndarray, dtype: str, where: str, vocab_size: int | None = None) -> np.ndarray:
    """Integer samples as `dtype` (int64 / int32), or a one-line DataError: float samples (images,
    features) for a model of integer ids, ids that `dtype` cannot hold, or ids outside the model's
    embedding table (0 .. vocab_size-1), which ORT and LiteRT refuse mid-run and OpenVINO turns into
    zeros without a word. [audit #27]"""
    if x.dtype.kind not in "iu":
        raise DataError(f"{where}: dtype {x.dtype} but the model takes {dtype} ids (token / class indices); save "
                        "them as integers (x.astype(np.int64))")
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        info = np.iinfo(np.dtype(dtype))
        if lo < info.min or hi > info.max:
            raise DataError(f"{where}: holds ids from {lo} to {hi}, beyond what {dtype} holds")
        if vocab_size is not None and (lo < 0 or hi >= vocab_size):
            bad = lo if lo < 0 else hi
            row = int(((x < 0) | (x >= vocab_size)).reshape(len(x), -1).any(1).argmax())
            raise DataError(f"{where}: sample {row} holds id {bad}, outside the model's embedding table of "
                            f"{vocab_size} rows (ids 0..{vocab_size - 1})")
    return x.astype(np.dtype(dtype), copy=False)


def _note_short_range(spec: DataSpec, n: int, what: str) -> None:
    """PATH[0:1000] of a 40-image folder read 40 samples, as a Python slice does, without a word:
    whoever sized a calibration set by the range learned it only from the report's sample count."""
    if spec.stop is not None and spec.stop > n:
        print(f"note: {what} {spec}: the source holds {n} rows; the range stops at {n}", file=sys.stderr)


def _fmt_slice(sl: slice) -> str:
    return f"{'' if sl.start is None else sl.start}:{'' if sl.stop is None else sl.stop}"


def _load_tensors(path: Path, sl: slice, spec: DataSpec | None = None, what: str = "data") -> Dataset:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                xkey = "x" if "x" in keys else ("inputs" if "inputs" in keys else None)
                if xkey is None:
                    xkey = next((k for k in keys if k not in ("y", "labels")), None)
                if xkey is None:
                    raise DataError(f"{path}: .npz holds no input array (expected key 'x')")
                x = z[xkey]
                ykey = "y" if "y" in keys else ("labels" if "labels" in keys else None)
                y = z[ykey] if ykey else None
                if x.ndim == 0:  # [issue #7] found by tests/test_fuzz.py: IndexError before
                    raise DataError(f"{path}: holds no samples ('{xkey}' is a 0-d array)")
                if y is not None and ykey is not None:  # y is there exactly when ykey is
                    check_labels(y, len(x), str(path), ykey)
                n_all = len(x)
                x = x[sl]
                y = y[sl].astype(np.int64) if y is not None else None
        else:
            x = np.load(path, allow_pickle=False)
            if x.ndim == 0:  # [issue #7] a scalar file: no sample axis to slice
                raise DataError(f"{path}: holds no samples (a 0-d array)")
            n_all = len(x) if x.ndim else 0
            x, y = x[sl], None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # numpy calls a corrupt file "pickled (object) data" and suggests allow_pickle: never here
        why = "corrupt, or it holds Python objects, which are never loaded" if "pickle" in str(e) else str(e)
        raise InputFileError(f"{path}: not a readable {path.suffix} file ({why})") from e
    if x.ndim < 1 or x.shape[0] == 0:
        if n_all and sl != slice(None):
            raise DataError(f"{path}[{_fmt_slice(sl)}]: the range selects no samples (the file holds {n_all})")
        raise DataError(f"{path}: holds no samples")
    if x.dtype.kind not in "fiu":  # [issue #7] bool, complex, strings, structured: not model inputs
        raise DataError(f"{path}: dtype {x.dtype} is not a real number type (expected float32)")
    if np.issubdtype(x.dtype, np.floating):
        check_finite(x, str(path))
        x = as_float32(x, str(path))
    if spec is not None:
        _note_short_range(spec, n_all, what)
    # names by row in the file: a slice [2:5] holds rows 2-4, not 0-2
    rows = range(n_all)[sl]
    return Dataset(np.ascontiguousarray(x), y, str(path), [f"{path.name}[{i}]" for i in rows])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_labels_csv(csv_path: Path, base: Path | None = None) -> tuple[list[Path], list[int]]:
    """`filename,class_index` rows; file names relative to `base` (an image folder given with the
    CSV), else to the CSV's folder."""
    files, labels = [], []
    base = base if base is not None else csv_path.parent
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that glued onto the first name
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{csv_path}: cannot read labels CSV ({e})") from e
    first_line = 1
    # a header only if its second field is no number at all: "d0.png,1.0" is a bad label, not a
    # header to drop silently
    if rows and len(rows[0]) > 1 and not _is_number(rows[0][1].strip()):
        rows, first_line = rows[1:], 2
    for lineno, row in enumerate(rows, start=first_line):
        if not row:
            continue
        if len(row) < 2:
            raise DataError(f"{csv_path}:{lineno}: expected 'filename,class_index'")
        try:
            label = int(row[1])
        except ValueError:
            raise DataError(f"{csv_path}:{lineno}: class_index {row[1]!r} is not an integer") from None
        if label < 0:
            raise DataError(f"{csv_path}:{lineno}: class_index {label} is negative")
        if label > _MAX_LABEL:
            raise DataError(f"{csv_path}:{lineno}: class_index {label} is beyond int64; labels are class "
                            "indices 0..N-1")
        p = (base / row[0]).resolve()
        if not p.is_file() and base != csv_path.parent:  # names written relative to the CSV itself
            p = (csv_path.parent / row[0]).resolve()
        if not p.is_file():
            where = base if base == csv_path.parent else f"{base} and {csv_path.parent}"
            raise DataError(f"{csv_path}:{lineno}: image {row[0]!r} not found (looked in {where})")
        files.append(p)
        labels.append(label)
    return files, labels


def _list_images(folder: Path) -> tuple[list[Path], list[int] | None]:
    """Images of a folder: labelled by labels.csv inside it, by sub-folders, or unlabelled."""
    if (folder / "labels.csv").is_file():
        return _read_labels_csv(folder / "labels.csv")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        # Sub-folders named by integers ("0".."999", as most exports name classes) are that class:
        # by rank, a folder of classes 3, 5, 7 was labelled 0, 1, 2 (0 % top-1 without a word) and
        # "10" sorted before "2". Other names: the position in sorted order (torchvision's rule).
        numbered = all(re.fullmatch(r"\d{1,9}", d.name) for d in subdirs)
        if numbered:
            subdirs.sort(key=lambda d: int(d.name))
        files, labels = [], []
        for idx, d in enumerate(subdirs):
            for p in sorted(d.iterdir()):
                if _is_image_file(p):
                    files.append(p)
                    labels.append(int(d.name) if numbered else idx)
        return files, labels
    files = sorted(p for p in folder.iterdir() if _is_image_file(p))
    return files, None


def _is_image_file(p: Path) -> bool:
    """An image file by its suffix; hidden files are skipped as hidden folders are: macOS leaves an
    AppleDouble `._0.png` (no image) beside each file copied from a Mac, and it stopped the run."""
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _decode(path: Path, transform: Transform) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
    # DecompressionBombError (not an OSError): an image over PIL's pixel limit, or a file claiming
    # to be one (a 30000x30000 PNG header), was a traceback
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    try:  # apart from decoding: a bug in a caller's transform is not a broken image
        out = np.asarray(transform(im), dtype=np.float32)
    except Exception as e:
        raise DataError(f"{path}: the preprocessing failed on it ({type(e).__name__}: {e})") from e
    if out.ndim < 1:
        raise DataError(f"{path}: the preprocessing returned a scalar, not an array per image")
    return out


def load_images(files: Sequence[Path], transform: Transform, desc: str = "images",
                progress: bool = True) -> np.ndarray:
    """Decode and preprocess images in parallel (PIL releases the GIL while decoding)."""
    from edgecompress.progress import bar

    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(lambda p: _decode(p, transform), files)
        arrays = list(bar(it, total=len(files), desc=desc, unit="img", leave=False, disable=not progress))
    odd = next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), None)
    if odd is not None:
        raise DataError(f"{files[odd]}: gives shape {arrays[odd].shape} after preprocessing, "
                        f"{files[0].name} gave {arrays[0].shape} (the images must come out the same size)")
    stacked = np.stack(arrays)
    bad = ~np.isfinite(stacked.reshape(len(stacked), -1)).all(1)
    if bad.any():  # a caller's transform (a division by a zero std): NaN went on to calibration
        raise DataError(f"{files[int(bad.argmax())]}: the preprocessing gave NaN or Inf")
    return stacked


def from_memory(data: DataLike, what: str = "data") -> Dataset:
    """A Dataset from samples already in memory, as `load_data` takes them: an array or tensor
    (N, ...), an `(x, y)` pair, a torch map-style Dataset or an iterable of `(x, label)` pairs with
    scalar labels (read sample by sample), or an iterable of batches (a torch DataLoader, a list
    of arrays) whose items are arrays / tensors or `(x, y, ...)` tuples. The samples must already be
    model-ready (float32, the model's layout): no preprocessing is applied."""
    def parts(item: Any) -> tuple[Any, Any]:
        if isinstance(item, tuple | list) and item and not isinstance(item[0], int | float):
            return _as_numpy(item[0]), (_as_numpy(item[1]) if len(item) > 1 else None)
        return _as_numpy(item), None

    obj: Any = _as_numpy(data)  # a tensor as an array; anything else as it is
    map_style = _is_map_dataset(obj)
    if isinstance(obj, np.ndarray):
        batches: list[tuple[Any, Any]] = [(obj, None)]
    elif isinstance(obj, tuple) and len(obj) == 2 and all(
            isinstance(_as_numpy(a), np.ndarray) for a in obj):
        batches = [(_as_numpy(obj[0]), _as_numpy(obj[1]))]  # (x, y); tensors as the other branches
    elif map_style:  # its items are single samples; iterating one may never end
        batches = [parts(obj[i]) for i in range(len(obj))]
    elif hasattr(obj, "__iter__") and not isinstance(obj, str | bytes | dict):
        batches = [parts(item) for item in obj]
    else:
        raise DataError(f"{what}: expected a path, a DataSpec, an array / tensor, (x, y) or an iterable of "
                        f"batches, got {type(obj).__name__}")
    if not batches:
        raise DataError(f"{what}: the iterable gave no batches")
    xs = [x for x, _ in batches]
    ys = [y for _, y in batches]
    if not all(isinstance(x, np.ndarray) and x.ndim >= 1 for x in xs):
        raise DataError(f"{what}: batches must be arrays or tensors (N, ...), or (x, y) tuples of them")
    if any(y is not None for y in ys) and not all(y is not None for y in ys):
        raise DataError(f"{what}: some batches have labels and some do not")
    # Scalar labels mark single samples (a torch Dataset's `(x, 3)`); a batch's labels are (N,).
    # A DataLoader's batches concatenate; samples stack (concatenating (1, 8, 8) samples lost
    # their channel axis, and scalar labels failed as "different sample shapes").
    by_sample = map_style or (ys[0] is not None and all(np.ndim(y) == 0 for y in ys))
    unit = "samples" if by_sample else "batches"
    try:
        join = np.stack if by_sample else np.concatenate
        x: np.ndarray = join(xs)
        y: np.ndarray | None = (np.asarray(ys) if by_sample else np.concatenate(ys)) if ys[0] is not None else None
    except ValueError as e:
        raise DataError(f"{what}: {unit} of different shapes ({e})") from None
    if len(x) == 0:
        raise DataError(f"{what}: holds no samples")
    kind = type(obj).__name__
    # how it was read is in the name, so a shape error downstream says it ("list of 20 batches")
    source = f"in-memory {kind}" if isinstance(obj, np.ndarray) or (len(batches) == 1 and not by_sample) \
        else f"in-memory {kind} of {len(batches)} {unit}"
    ds = Dataset(x, y, source)
    check_in_memory(ds, f"{what} ({source})")
    return ds


def _is_map_dataset(data: Any) -> bool:
    """A torch map-style Dataset (items are single samples), not a DataLoader or a plain list."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__") \
        and not isinstance(data, torch.utils.data.IterableDataset)


def load_data(spec: DataLike, preprocess: str | Transform = "efficientnet-lite",
              image_size: Size = 224, purpose: str = "data", progress: bool = True) -> Dataset:
    """Resolve a DataSpec into a Dataset. `purpose` ('calibration', 'evaluation') names errors.

    Image files are preprocessed to `image_size`: a square side, or (height, width) for a
    non-square input (a preset's centred crop then has that aspect ratio, see data/presets.py).

    Samples already in memory (an array, a tensor, `(x, y)`, a DataLoader) go through
    `from_memory`, model-ready as they are.
    """
    what = "data" if purpose in ("", "data") else f"{purpose} data"  # not "data data"
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, Dataset):
        return spec
    if not isinstance(spec, (str, DataSpec)):
        return from_memory(spec, what)
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    if not str(spec.path).strip():  # "" read the current directory as an image folder
        raise DataError(f"{what}: empty path")
    path = Path(spec.path).expanduser()
    sl = slice(spec.start, spec.stop)
    if not path.exists():
        bad = re.fullmatch(r"(.+?)(\[[^\[\]]*\])", str(spec.path).strip(), flags=re.DOTALL)
        if bad and Path(bad.group(1)).expanduser().exists():  # "no such file" named a file that is there
            raise DataError(f"{what} {spec.path}: {bad.group(2)} is not a row range; use [start:stop] with "
                            "integers (e.g. [:300], [300:])")
        raise InputFileError(f"{what} {path}: no such file or directory")
    if spec.labels and not path.is_dir():  # it was ignored silently
        raise DataError(f"{what} {path}: labels= applies to a folder of images (a CSV or .npz "
                        "carries its own labels)")
    if path.is_file() and path.suffix.lower() in TENSOR_SUFFIXES:
        ds = _load_tensors(path, sl, spec, what)
        if len(ds) == 0:
            raise DataError(f"{what} {spec}: the selected range is empty")
        ds.source = str(spec)  # with its slice, as for images
        return ds
    files: list[Path]
    labels: list[int] | None
    if path.is_file() and path.suffix.lower() == ".csv":
        files, labels = _read_labels_csv(path)
    elif path.is_dir():
        if spec.labels:
            # the names in a CSV given beside an image folder are that folder's files
            files, labels = _read_labels_csv(Path(spec.labels).expanduser(), base=path)
        else:
            files, labels = _list_images(path)
    else:
        raise InputFileError(f"{what} {path}: expected a folder of images, a labels CSV, "
                             "or a .npy/.npz file")
    if not files:
        # an empty / header-only labels CSV: "no images found (.bmp, .gif, ...)" read as images of
        # the wrong suffix
        listing = path if path.is_file() else Path(spec.labels).expanduser() if spec.labels else \
            path / "labels.csv" if (path / "labels.csv").is_file() else None
        if listing is not None:
            raise DataError(f"{what} {path}: the labels CSV {listing.name} lists no images (a header at most)")
        raise DataError(f"{what} {path}: no images found "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    _note_short_range(spec, len(files), what)
    files = files[sl]
    labels = labels[sl] if labels is not None else None
    if not files:
        raise DataError(f"{what} {spec}: the selected range is empty")
    transform = get_transform(preprocess, image_size)
    x = load_images(files, transform, desc=f"loading {purpose} images", progress=progress)
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None

    def reload(size: Size) -> Dataset:
        return load_data(spec, preprocess, size, purpose, progress)

    return Dataset(x, y, str(spec), [p.name for p in files], reload)
