"""Hypothesis fuzzing of the loaders and the recipe parser (issue #7): no crash other than the
documented errors (DataError / InputFileError for data, ConfigError / InputFileError for recipes),
and whatever loads is model-ready (non-empty, finite float32). Where the input class decides the
outcome (an empty or half-cut image, an array of no rows or of complex numbers, a recipe that is
no mapping), that error is required: its class (so the CLI's exit code), the file or key named in
its one-line message, and what it says.

Bounded (max_examples <= 50, no deadline) so the file runs in well under a minute.
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecompress.errors import ConfigError, DataError, EdgeCompressError, InputFileError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATA_ERRORS = (DataError, InputFileError)


def _check_refusal(e: EdgeCompressError, cls: type[EdgeCompressError], names: str, says: str = "") -> None:
    """`e` is exactly `cls` (the CLI exits with its code: 2 for input errors), one line, naming the
    culprit `names` and saying `says`."""
    assert type(e) is cls and e.exit_code == 2, repr(e)
    assert "\n" not in str(e) and names in str(e) and says in str(e), str(e)


def _check_loaded(ds) -> None:
    x = ds.x
    assert len(ds) > 0
    assert x.dtype.kind in "fiu", x.dtype
    if x.dtype.kind == "f":
        assert x.dtype == np.float32 and np.isfinite(x).all()


# ---- image loader ---------------------------------------------------------------------------------
def _image_bytes(fmt: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _load_one_image(name: str, data: bytes):
    from edgecompress.data import load_data

    with tempfile.TemporaryDirectory() as td:
        (Path(td) / name).write_bytes(data)
        return load_data(td, "gray-unit", 8, "calibration", progress=False)


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".webp"]))
@example(data=b"", suffix=".png")
@example(data=b"\x89PNG\r\n\x1a\n" + bytes(64), suffix=".png")  # a PNG signature, then zeros
def test_image_loader_random_bytes(data, suffix):
    """An image that does not decode is a DataError naming that file (not the folder, not a
    traceback); fewer than 6 bytes hold no image of any format, so that must be refused."""
    try:
        ds = _load_one_image("x" + suffix, data)
    except DATA_ERRORS as e:
        _check_refusal(e, DataError, f"/x{suffix}: ", "cannot read image")
        return
    assert len(data) >= 6 and data[8:] != bytes(64), "a broken image loaded"
    _check_loaded(ds)


@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG"]), seed=st.integers(0, 3), cut=st.floats(0.0, 0.999),
       flip=st.one_of(st.none(), st.integers(0, 10_000)))
def test_image_loader_truncated_or_corrupted(fmt, seed, cut, flip):
    data = bytearray(_image_bytes(fmt, seed))
    if flip is not None:  # one corrupted byte somewhere
        data[flip % len(data)] ^= 0xFF
    whole = len(data)
    data = bytes(data[: max(1, int(len(data) * cut))])
    name = "x." + ("png" if fmt == "PNG" else "jpg")
    try:
        ds = _load_one_image(name, data)
    except DATA_ERRORS as e:
        _check_refusal(e, DataError, f"/{name}: ", "cannot read image")
        return
    # cut to half or less, the pixel data (most of a noise image's file) is incomplete: refused
    assert len(data) > whole // 2, f"an image cut to {len(data)} of {whole} bytes loaded"
    _check_loaded(ds)


# ---- tensor loader --------------------------------------------------------------------------------
DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64, np.bool_,
                          np.complex64])
ARRAYS = hnp.arrays(dtype=DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                    elements=None)  # any value of the dtype: NaN, Inf, subnormals, extremes


def _load_tensor_file(name: str, write) -> object:
    from edgecompress.data import load_data

    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / name
        write(path)
        return load_data(str(path), "gray-unit", 8, "calibration", progress=False)


def _tensor_refusal(x: np.ndarray, rows: slice) -> str | None:
    """What the loader must say of a file holding `x`, read at `rows` (None: it loads). The
    checks in the loader's order: rows at all, a real number type, finite, within float32's range."""
    if x.ndim == 0 or x[rows].shape[0] == 0:
        return "no samples"  # "holds no samples" / "the range selects no samples"
    if x.dtype.kind not in "fiu":
        return "is not a real number type"
    if x.dtype.kind == "f":
        if not np.isfinite(x[rows]).all():
            return "contains NaN or Inf"
        if (np.abs(x[rows]) > np.finfo(np.float32).max).any():  # float64 the cast would make Inf
            return "holds a value beyond float32's range"
    return None


SLICES = {"": slice(None), "[1:]": slice(1, None), "[:2]": slice(None, 2), "[5:9]": slice(5, 9),
          "[-1:]": slice(-1, None)}


@FUZZ
@given(x=ARRAYS, npz=st.booleans(), key=st.sampled_from(["x", "inputs", "other"]), sl=st.sampled_from(sorted(SLICES)))
def test_tensor_loader(x, npz, key, sl):
    """Each kind of bad array (no rows, bool / complex, NaN or Inf) is the DataError that names
    the file and says which; any other array loads."""
    from edgecompress.data import DataSpec, load_data

    want = _tensor_refusal(x, SLICES[sl])
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / ("t.npz" if npz else "t.npy")
        np.savez(path, **{key: x}) if npz else np.save(path, x)
        try:
            ds = load_data(DataSpec.parse(str(path) + sl), "gray-unit", 8, "calibration", progress=False)
        except DATA_ERRORS as e:
            assert want is not None, f"refused an array that should load: {e}"
            _check_refusal(e, DataError, str(path), want)
            return
    assert want is None, f"loaded an array the loader must refuse ({want}): {x.dtype} {x.shape}"
    _check_loaded(ds)


# arrays digits-cnn takes ((n, 1, 8, 8) floats), so the accepting path runs too: ARRAYS' sides of
# at most 5 never fit the model, and its "loads" branch could not be reached
FITTING = hnp.arrays(dtype=st.sampled_from([np.float16, np.float32, np.float64]),
                     shape=st.tuples(st.integers(1, 4), st.just(1), st.just(8), st.just(8)),
                     elements=st.floats(-4, 4, width=16))


@FUZZ
@given(x=st.one_of(ARRAYS, FITTING))
@example(x=np.full((2, 1, 8, 8), 1e39))  # finite float64 beyond float32's range: named, not "Inf"
@example(x=np.zeros((3, 1, 8, 8), np.float32))  # loads
def test_tensor_loader_against_a_model(digits_spec, x):
    """Through resolve_data: also the model's dtype and shape checks. A wrong file never loads,
    and the refusal names the file and the first check it fails (loader, then dtype, then shape)."""
    from edgecompress.pipeline import resolve_data

    sample = tuple(digits_spec.input_shape[1:])
    want = _tensor_refusal(x, slice(None)) or (
        "does not match the model input" if x.dtype.kind != "f" else
        "but the model takes" if x.shape[1:] != sample else None)
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "t.npy"
        np.save(path, x)
        try:
            ds = resolve_data(digits_spec, str(path), "calibration", progress=False)
        except DATA_ERRORS as e:
            assert want is not None, f"refused an array that should load: {e}"
            _check_refusal(e, DataError, str(path), want)
            return
    assert want is None, f"loaded an array the model cannot take ({want}): {x.dtype} {x.shape}"
    _check_loaded(ds)
    assert ds.x.dtype == np.float32 and ds.x.shape[1:] == sample


@pytest.mark.parametrize("make", [
    lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    lambda p: p.write_bytes(b"\x93NUMPY garbage"),
    lambda p: p.write_bytes(b""),
])
def test_tensor_loader_refuses_pickles_and_garbage(make):
    with pytest.raises(InputFileError, match=r"not a readable \.npy"):
        _load_tensor_file("t.npy", make)


# ---- recipe parser --------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
KEYS = st.sampled_from(["model", "passes", "export", "target", "options", "data", "input_shape", "weights",
                        "preprocess", "version", "prune", "lowrank", "distill", "qat", "ratio", "rank",
                        "energy", "epochs", "calib_method", "train", "calib", "eval", "runs", "threads"])
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, st.text(max_size=6)), inner, max_size=4)),
    max_leaves=12)
PASS_ITEMS = st.one_of(
    st.sampled_from(["prune", "lowrank", "distill", "qat", "sharpen"]),
    st.dictionaries(st.sampled_from(["prune", "lowrank", "distill", "qat", "sharpen"]),
                    st.one_of(st.none(), st.dictionaries(KEYS, SCALARS, max_size=3)), min_size=1, max_size=2),
    VALUES)
RECIPES = st.fixed_dictionaries(
    {"model": st.one_of(st.just("zoo:digits-cnn"), SCALARS)},
    optional={"passes": st.one_of(st.lists(PASS_ITEMS, max_size=3), VALUES),
              "export": st.one_of(st.lists(st.sampled_from(["onnx", "onnx:int8", "openvino:fp16", "tflite",
                                                            "onnx:int4", ""]), max_size=3), VALUES),
              "target": st.one_of(st.sampled_from(["x86-local", "rpi4", "pdp11"]), SCALARS),
              "options": st.one_of(st.dictionaries(KEYS, SCALARS, max_size=3), VALUES),
              "data": VALUES, "input_shape": VALUES, "junk": VALUES})


@FUZZ
@given(obj=st.one_of(RECIPES, VALUES))
@example(obj={"model": "zoo:digits-cnn", "junk": None})  # random recipes are rarely otherwise valid
@example(obj=["model", "zoo:digits-cnn"])
def test_recipe_parser(obj):
    from edgecompress.recipe import Recipe, parse_recipe

    fields = set(Recipe.model_fields)
    try:
        r = parse_recipe(obj, "fuzz.yaml")
    except ConfigError as e:
        _check_refusal(e, ConfigError, "fuzz.yaml: ")
        assert str(e).startswith("fuzz.yaml: "), str(e)
        if not isinstance(obj, dict):  # the one thing to say of a list or a scalar
            assert str(e) == f"fuzz.yaml: expected a mapping at the top level, got {type(obj).__name__}"
        elif obj == {"model": "zoo:digits-cnn", "junk": None}:
            assert str(e) == "fuzz.yaml: junk: unknown key"
        return
    # no mapping, no model, a key the schema does not have: never accepted
    assert isinstance(obj, dict) and "model" in obj and set(obj) <= fields, obj
    assert isinstance(r, Recipe)
    for _name, cfg in r.pass_configs():  # what was accepted is in range: no NaN slipped through
        for v in vars(cfg).values():
            assert not (isinstance(v, float) and math.isnan(v)), cfg


@FUZZ
@given(name=st.sampled_from(["prune.ratio", "lowrank.energy", "distill.lr", "distill.temperature", "lowrank.rank"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)))
def test_recipe_numeric_ranges(name, value):
    """Any number, NaN included: refused with a ConfigError naming the key, or inside the range."""
    from edgecompress.recipe import parse_recipe

    pass_name, key = name.split(".")
    try:
        r = parse_recipe({"model": "zoo:digits-cnn", "passes": [{pass_name: {key: value}}]}, "r")
    except ConfigError as e:
        _check_refusal(e, ConfigError, f"r: passes[0].{name}: ")
        return
    assert math.isfinite(value), f"{name}: {value} accepted"  # NaN and +-Inf are in no range
    got = getattr(r.pass_configs()[0][1], key)
    assert got == value, (name, value, got)


@FUZZ
@given(text=st.text(max_size=200))
def test_recipe_file_random_text(text):
    from edgecompress.recipe import load_recipe

    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "r.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_recipe(path)
        except ConfigError as e:  # the file is there and UTF-8: not an InputFileError
            _check_refusal(e, ConfigError, f"recipe {path}")
            assert str(e).startswith(f"recipe {path}"), str(e)
            return
    # a recipe needs a `model:` key (no escape can spell it without a backslash)
    assert "model" in text or "\\" in text, f"accepted {text!r}"


# ---- DataSpec.parse --------------------------------------------------------------------------------
@FUZZ
@given(text=st.text(max_size=40).filter(lambda t: t.strip()),
       rng=st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.integers(-99, 99)),
                                          st.one_of(st.none(), st.integers(-99, 99)))))
@example(text="0\n", rng=(None, None))  # found by this test: the range regex did not cross a newline
def test_dataspec_parse(text, rng):
    from edgecompress.data import DataSpec

    full = text if rng is None else f"{text}[{'' if rng[0] is None else rng[0]}:{'' if rng[1] is None else rng[1]}]"
    spec = DataSpec.parse(full)
    assert spec.path  # never empty
    again = DataSpec.parse(str(spec))
    assert (again.path, again.start, again.stop) == (spec.path, spec.start, spec.stop)
    if rng is not None and "[" not in text:
        assert (spec.start, spec.stop) == rng and spec.path == text.strip()
