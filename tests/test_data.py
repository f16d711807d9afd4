"""Data loading: folders, labelled CSVs, sub-folders, tensors, ranges and the presets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecompress.data import Dataset, DataSpec, load_data
from edgecompress.data.presets import EfficientNetLite
from edgecompress.errors import DataError


def _img(path, color, size=(40, 30)):
    Image.new("RGB", size, color).save(path)


def test_dataspec_parse_ranges():
    assert DataSpec.parse("a/b.csv[:300]") == DataSpec("a/b.csv", None, 300)
    assert DataSpec.parse("a/b.csv[300:]") == DataSpec("a/b.csv", 300, None)
    assert DataSpec.parse("x.npz") == DataSpec("x.npz")
    assert str(DataSpec("p", 3, 7)) == "p[3:7]"


def test_folder_csv_and_subfolders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, c in enumerate(["red", "green", "blue"]):
        _img(flat / f"{i}.png", c)
    (flat / "labels.csv").write_text("filename,class_index\n0.png,2\n1.png,0\n2.png,1\n")
    ds = load_data(str(flat), "efficientnet-lite", 16, progress=False)
    assert ds.x.shape == (3, 3, 16, 16) and list(ds.y) == [2, 0, 1]
    # red image: R channel at (255-127)/128 = 1.0, others (0-127)/128
    assert np.allclose(ds.x[0, 0], 1.0) and np.allclose(ds.x[0, 1], -127 / 128)
    part = load_data(f"{flat}[1:]", "efficientnet-lite", 16, progress=False)
    assert list(part.y) == [0, 1]

    tree = tmp_path / "tree"
    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True)
        _img(tree / cls / "a.jpg", "white")
    ds = load_data(str(tree), "imagenet", 8, progress=False)
    assert list(ds.y) == [0, 1] and ds.x.shape == (2, 3, 8, 8)
    # macOS AppleDouble files (._a.jpg, not images) are skipped as hidden folders are: they stopped the run
    for where in (tree / "cat", flat.parent / "plain"):
        where.mkdir(exist_ok=True)
        (where / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _img(flat.parent / "plain" / "b.png", "white")
    assert list(load_data(str(tree), "imagenet", 8, progress=False).y) == [0, 1]
    assert len(load_data(str(flat.parent / "plain"), "imagenet", 8, progress=False)) == 1


def test_csv_errors(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,class_index\na.png,1\na.png,notanint\n")
    _img(tmp_path / "a.png", "red")
    with pytest.raises(DataError, match=r"labels.csv:3: class_index 'notanint' is not an integer"):
        load_data(str(tmp_path), "efficientnet-lite", 8, progress=False)
    (tmp_path / "labels.csv").write_text("a.png,-1\n")
    with pytest.raises(DataError, match=r"labels.csv:1: class_index -1 is negative"):
        load_data(str(tmp_path), "efficientnet-lite", 8, progress=False)


def test_npz_with_labels_and_nan(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((5, 1, 8, 8), np.float32), y=np.arange(5))
    ds = load_data(f"{tmp_path / 'd.npz'}[2:4]", progress=False)
    assert ds.x.shape == (2, 1, 8, 8) and list(ds.y) == [2, 3]
    # the names and the source say which rows (they read d.npz[0], d.npz[1] and dropped the slice)
    assert ds.names == ["d.npz[2]", "d.npz[3]"] and ds.source.endswith("d.npz[2:4]")
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match="sample 1 contains NaN or Inf"):
        load_data(str(tmp_path / "bad.npy"), progress=False)


def test_float64_beyond_float32_range_is_named_not_called_inf(tmp_path, recwarn):
    """A finite float64 value float32 cannot hold became Inf in the cast, after a numpy overflow
    warning, and the file was refused as holding "NaN or Inf", which it does not; an in-memory
    set bound for a model went into it as Inf."""
    from edgecompress.data.datasets import match_model

    big = np.zeros((3, 1, 8, 8))
    big[2, 0, 1, 1] = -3e39
    np.save(tmp_path / "big.npy", big)
    with pytest.raises(DataError, match=r"big\.npy: sample 2 holds a value beyond float32's range \(3e\+39\)"):
        load_data(str(tmp_path / "big.npy"), progress=False)
    ds = load_data(big, progress=False)
    with pytest.raises(DataError, match="sample 2 holds a value beyond float32's range"):
        match_model(ds, (1, 1, 8, 8), "float32", "calibration data")
    assert not [w for w in recwarn if "overflow" in str(w.message)]
    ok = load_data(np.full((2, 1, 8, 8), 3e38), progress=False)  # float32's max is 3.4e38: kept
    match_model(ok, (1, 1, 8, 8), "float32", "calibration data")
    assert ok.x.dtype == np.float32 and np.isfinite(ok.x).all()


def test_a_range_past_the_end_says_so(tmp_path, capfd):
    """PATH[0:1000] of a 3-image folder read 3 samples without a word, as a Python slice does: a
    calibration set sized by its range was smaller than asked. A note says how many rows there are."""
    for i in range(3):
        _img(tmp_path / f"{i}.png", (i, 0, 0))
    ds = load_data(f"{tmp_path}[0:1000]", "imagenet", 16, "calibration", progress=False)
    assert len(ds) == 3
    assert f"note: calibration data {tmp_path}[0:1000]: the source holds 3 rows; the range stops at 3" \
        in capfd.readouterr().err
    np.save(tmp_path / "t.npy", np.ones((5, 4), np.float32))
    assert len(load_data(f"{tmp_path / 't.npy'}[2:50]", progress=False)) == 3
    assert "t.npy[2:50]: the source holds 5 rows; the range stops at 5" in capfd.readouterr().err
    assert len(load_data(f"{tmp_path / 't.npy'}[:5]", progress=False)) == 5
    assert "note:" not in capfd.readouterr().err  # a range inside the file: nothing to say


def test_efficientnet_preset_crop_geometry():
    # A 320x256 image whose centre 224x224 crop (short side * 224/256) is white, border black.
    im = Image.new("RGB", (320, 256), "black")
    im.paste(Image.new("RGB", (224, 224), "white"), ((320 - 224 + 1) // 2, (256 - 224 + 1) // 2))
    x = EfficientNetLite(224)(im)
    assert x.shape == (3, 224, 224)
    assert x.min() > 0.95  # only the white crop survives, no black border


@pytest.mark.shared_data
def test_efficientnet_on_real_images(imagenet_labels):
    """The preset + weights are right: on 200 real images EfficientNet-Lite0 is > 80 % top-1."""
    from edgecompress.models import load_model
    from edgecompress.targets import reference_outputs
    from edgecompress.targets.metrics import classification_metrics

    spec = load_model("zoo:efficientnet-lite0")
    ds = load_data(DataSpec(str(imagenet_labels), 0, 200),
                   "efficientnet-lite", 224, progress=False)
    top1 = classification_metrics(reference_outputs(spec.module, ds, progress=False), ds.y)["top1"]
    assert top1 > 0.80, top1


def test_at_side_rereads_image_files_and_resizes_tensors(tmp_path):
    """`Dataset.at_side`: image files are preprocessed again at the new side (same samples, same
    order, also for a subset); tensors, or a pickled Dataset, are resized and say so."""
    import pickle

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # fine detail, so resampling twice differs from resampling once
        Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text("filename,class_index\n0.png,4\n1.png,5\n2.png,6\n")
    ds = load_data(str(folder), "efficientnet-lite", 32, progress=False)
    direct = load_data(str(folder), "efficientnet-lite", 16, progress=False)
    small = ds.at_side(16)
    assert small.x.shape == (3, 3, 16, 16) and list(small.y) == [4, 5, 6]
    np.testing.assert_array_equal(small.x, direct.x)
    sub = ds.take(np.array([2, 0])).at_side(16)
    np.testing.assert_array_equal(sub.x, direct.x[[2, 0]])
    assert list(sub.y) == [6, 4]
    assert ds.at_side(32) is ds

    shipped = pickle.loads(pickle.dumps(ds))  # e.g. to the isolated export child
    assert shipped.reload is None
    resized = shipped.at_side(16)
    assert resized.source.endswith("(resized to 16x16)") and resized.x.shape == (3, 3, 16, 16)
    assert np.abs(resized.x - direct.x).mean() > 0.01  # blurrier than the files read at 16 px
    with pytest.raises(DataError, match="are not images"):
        type(ds)(np.zeros((2, 5), np.float32), source="t.npy").at_side(4)


def test_csv_quirks_of_real_files(tmp_path):
    """Excel's UTF-8 CSV (a byte-order mark, no header), a float label in the first row (it was
    dropped as a header), a CSV beside an image folder (names are that folder's files)."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        _img(imgs / f"d{i}.png", "red")
    bom = tmp_path / "bom.csv"
    bom.write_bytes("d0.png,0\r\nd1.png,1\r\nd2.png,2\r\n".encode("utf-8-sig"))
    ds = load_data(DataSpec(str(imgs), labels=str(bom)), "efficientnet-lite", 8, progress=False)
    assert list(ds.y) == [0, 1, 2]  # the CSV lives elsewhere: names resolve in the image folder
    (imgs / "labels.csv").write_bytes("\ufeffd0.png,0\nd1.png,1\nd2.png,2\n".encode())
    assert len(load_data(str(imgs), "efficientnet-lite", 8, progress=False)) == 3
    (imgs / "labels.csv").write_text("d0.png,1.0\nd1.png,1\nd2.png,2\n")
    with pytest.raises(DataError, match=r"labels.csv:1: class_index '1.0' is not an integer"):
        load_data(str(imgs), "efficientnet-lite", 8, progress=False)
    (imgs / "labels.csv").unlink()
    bom.write_text("imgs/d2.png,2\n")  # a name relative to the CSV itself still works
    assert list(load_data(DataSpec(str(imgs), labels=str(bom)), "efficientnet-lite", 8, progress=False).y) == [2]
    bom.write_text("nothere.png,0\n")
    with pytest.raises(DataError, match=rf"image 'nothere.png' not found \(looked in {imgs} and {tmp_path}\)"):
        load_data(DataSpec(str(imgs), labels=str(bom)), "efficientnet-lite", 8, progress=False)
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    with pytest.raises(DataError, match="labels= applies to a folder of images"):
        load_data(DataSpec(str(tmp_path / "x.npy"), labels=str(bom)), progress=False)
    with pytest.raises(Exception, match=r"^data /nonexistent: no such file"):  # not "data data"
        load_data("/nonexistent", progress=False)


def test_a_failing_transform_is_not_blamed_on_the_image(tmp_path):
    for i in range(3):
        _img(tmp_path / f"{i}.png", "red", (8 + i, 8))

    def boom(im):
        raise ValueError("my bug")

    with pytest.raises(DataError, match=r"0.png: the preprocessing failed on it \(ValueError: my bug\)"):
        load_data(str(tmp_path), boom, progress=False)
    with pytest.raises(DataError, match=r"1.png: gives shape \(8, 9\) after preprocessing, 0.png gave \(8, 8\)"):
        load_data(str(tmp_path), lambda im: np.asarray(im.convert("L")), progress=False)
    with pytest.raises(DataError, match=r"0.png: the preprocessing gave NaN or Inf"):
        load_data(str(tmp_path), lambda im: np.full((2, 2), np.nan), progress=False)


def test_several_inputs_keep_input_ids_below_the_vocabulary():
    """A text encoder's dict of inputs: `input_ids` is checked against the model's vocabulary
    (its masks and token types are not: they index no word table); an id beyond it was refused
    by ONNX Runtime mid-calibration, after the export."""
    from edgecompress.data.datasets import match_model

    dtypes = {"input_ids": "int64", "attention_mask": "int64", "token_type_ids": "int64"}
    ids = np.array([[101, 7, 102], [101, 30522, 102]])
    ds = Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)},
                 source="tokens")
    with pytest.raises(DataError, match=r"^calibration data: input 'input_ids': sample 1 holds id 30522, outside "
                                        r"the model's embedding table of 30522 rows \(ids 0..30521\)$"):
        match_model(ds, (1, 3), "int64", "calibration data", 30522, None, dtypes)
    ds.x["input_ids"] = ids.clip(max=30521)
    match_model(ds, (1, 3), "int64", "calibration data", 30522, None, dtypes)  # in range: taken
    assert ds.x["input_ids"].dtype == np.int64
