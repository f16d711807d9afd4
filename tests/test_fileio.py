"""Output files: modes, a full disk, temp names."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from edgecompress.errors import OutputError
from edgecompress.fileio import TEMP_PREFIX, write_text_atomic


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.json", "{}")
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    # mkstemp's 0600 used to stay on the renamed file, whatever the umask
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_full_disk_in_onnx_export_is_an_output_error(tmp_path, digits_spec, monkeypatch):
    import torch

    from edgecompress.exporters.onnx import export_fp32_onnx

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    with pytest.raises(OutputError, match="no space left on device") as e:
        export_fp32_onnx(digits_spec, tmp_path / "m.onnx")
    assert e.value.exit_code == 2  # the disk, not the model: not "rewrite that op" (exit 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_cache_dir_that_cannot_exist_is_one_line(tmp_path, monkeypatch):
    from edgecompress.paths import cache_dir

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "afile" / "sub"))
    with pytest.raises(OutputError, match=r"cache directory .*afile/sub .*cannot create"):
        cache_dir()


def test_failed_run_leaves_no_empty_out_dir(tmp_path, digits_spec):
    from edgecompress.errors import InputFileError
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "a" / "b"
    job = ExportJob(model=digits_spec, formats=[("onnx", "int8")], calib=str(tmp_path / "missing.npy"),
                    out_dir=out, do_validate=False, progress=False)
    with pytest.raises(InputFileError):
        run_export(job)
    assert not (tmp_path / "a").exists()  # both levels it created are gone
    (tmp_path / "keep").mkdir()
    with pytest.raises(InputFileError):  # a directory that existed stays
        run_export(ExportJob(**{**job.__dict__, "out_dir": tmp_path / "keep"}))
    assert (tmp_path / "keep").is_dir()


def test_json_never_holds_nan(tmp_path):
    """A NaN Spearman was written as bare NaN: invalid JSON for strict parsers (jq, browsers)."""
    import json

    from edgecompress.fileio import write_json_atomic

    p = write_json_atomic(tmp_path / "r.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(p.read_text(), parse_constant=refuse) == {"a": None, "b": [1.5, None], "c": {"d": None}}


def _lock_from_another_thread(path) -> str:
    """"entered", or the refusal's message, when another thread takes `path`'s lock."""
    import threading

    from edgecompress.errors import OutputError
    from edgecompress.fileio import exclusive_dir

    seen: list[str] = []

    def other() -> None:
        try:
            with exclusive_dir(path):
                seen.append("entered")
        except OutputError as e:
            seen.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    return seen[0]


def test_exclusive_dir_is_reentrant_in_its_thread_only(tmp_path):
    """A recipe holds its --out through the passes and its export locks it again; another thread
    (or process) is still refused."""
    import pytest

    from edgecompress.fileio import exclusive_dir

    with exclusive_dir(tmp_path), exclusive_dir(tmp_path):  # the same thread: taken again
        assert "another edgecompress run is writing there" in _lock_from_another_thread(tmp_path)
    with pytest.raises(RuntimeError), exclusive_dir(tmp_path):
        raise RuntimeError("the lock is released on errors too")
    assert _lock_from_another_thread(tmp_path) == "entered"  # released by the outer exit


def test_run_recipe_holds_its_out_through_the_passes(tmp_path, monkeypatch):
    """A validate (or another run) into a recipe's --out while its passes trained was not refused:
    only the final export took the lock."""
    import edgecompress.recipe as recipe

    seen: list[str] = []

    def passes_running(rec, out, progress, command):
        seen.append(_lock_from_another_thread(out))
        return None, {}

    monkeypatch.setattr(recipe, "_execute", passes_running)
    recipe.run_recipe({"model": "zoo:digits-cnn", "export": ["onnx"]}, tmp_path / "o")
    assert len(seen) == 1 and "another edgecompress run is writing there" in seen[0], seen


def test_atomic_path_renames_only_a_written_file(tmp_path):
    """A writer that wrote nothing (a converter that returned without output) must not replace a
    good file with an empty one."""
    from edgecompress.fileio import atomic_path

    final = tmp_path / "m.onnx"
    final.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"m\.onnx: the writer produced no data"), atomic_path(final):
        pass
    with pytest.raises(RuntimeError, match="converter"), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("converter failed")
    assert final.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_openvino_ir_never_left_as_a_half_pair(tmp_path, monkeypatch):
    """The .bin is renamed first; if the .xml cannot follow, both go (a new .bin beside an old .xml
    loads garbage)."""
    import openvino as ov

    from edgecompress.exporters.openvino import _save_ir

    model = ov.Model([ov.opset13.relu(p := ov.opset13.parameter([1, 4], ov.Type.f32))], [p], "m")
    out = tmp_path / "m.xml"
    _save_ir(model, out, compress_to_fp16=False)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    calls = []
    real = os.replace

    def fail_second(a, b):  # .bin renamed, then the .xml rename fails
        calls.append(b)
        if len(calls) == 2:
            raise OSError(errno.EACCES, "Permission denied", str(b))
        return real(a, b)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OutputError):
        _save_ir(model, out, compress_to_fp16=False)
    assert list(tmp_path.iterdir()) == []
