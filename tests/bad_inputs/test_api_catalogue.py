"""Bad-input catalogue, Python-API half (issue #7): the exact exception class and a fragment of its
one-line message, and nothing left in the output directory (not even a `.tmp-*` file).

In-process and fast: digits-cnn only. Simulations: a full disk (ENOSPC from os.replace or from the
write itself), a runtime that is not installed (its module made unimportable), an ssh target on a
closed loopback port. The CLI half is test_catalogue.py.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import (
    ConfigError,
    DataError,
    DeviceError,
    InputFileError,
    OutputError,
    RuntimeMissingError,
)


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_nth_replace(monkeypatch, n: int) -> None:
    """os.replace works n-1 times, then the disk is full."""
    real, calls = os.replace, []

    def fake(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) >= n:
            _enospc()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", fake)


def _recipe(**over):
    from edgecompress.recipe import parse_recipe

    return parse_recipe({"model": "zoo:digits-cnn", **over}, "recipe")


def _export(ctx, fmt="onnx", precision="fp32", **kw):
    from edgecompress.exporters import export

    return export(ctx.spec, fmt, precision, ctx.out, kw.pop("calib", None), **kw)


def _onnx_enospc(ctx):
    _fail_nth_replace(ctx.monkeypatch, 1)
    _export(ctx)


def _ov_enospc_on_xml(ctx):
    # .bin renamed, then the disk fills before the .xml: no orphan .bin may stay.
    _fail_nth_replace(ctx.monkeypatch, 2)
    _export(ctx, "openvino")


def _report_enospc(ctx):
    from edgecompress.fileio import write_json_atomic

    ctx.out.mkdir()
    ctx.monkeypatch.setattr(Path, "write_text", _enospc)
    write_json_atomic(ctx.out / "report.json", {"a": 1})


def _missing_runtime(ctx, module: str, fmt: str, precision: str):
    ctx.monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    _export(ctx, fmt, precision, calib=ctx.calib)


def _closed_port_preflight(ctx):
    import socket

    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners.ssh import SshRunner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prof = TargetProfile("closed", "", "x86_64", "ssh", ["onnxruntime"], ["onnx"],
                         connection={"host": "127.0.0.1", "port": port, "connect_timeout_s": 5})
    SshRunner().preflight(prof)


def _load(ctx, name: str, make):
    from edgecompress.pipeline import resolve_data

    path = ctx.tmp / name
    make(path)
    return resolve_data(ctx.spec, str(path), "calibration", progress=False)


def _save_obj(p):
    np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True)


def _csv_negative(ctx):
    from edgecompress.data import load_data

    d = ctx.tmp / "neg"
    d.mkdir()
    (d / "labels.csv").write_text("filename,class_index\na.png,-3\n")
    load_data(str(d), "gray-unit", 8, "evaluation", progress=False)


def _csv_beyond_int64(ctx):
    """[audit 28] int() took the label, np.asarray(dtype=int64) raised OverflowError (a traceback)."""
    from PIL import Image

    from edgecompress.data import load_data

    d = ctx.tmp / "huge"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    (d / "labels.csv").write_text("filename,class_index\na.png,99999999999999999999999\n")
    load_data(str(d), "gray-unit", 8, "evaluation", progress=False)


# [audit 28] a config or data file nested deeper than its parser recurses: RecursionError, a traceback
DEEP = 5000


def _deep_recipe(ctx):
    from edgecompress.recipe import load_recipe

    (ctx.tmp / "deep.yaml").write_text("model: zoo:digits-cnn\nexport: " + "[" * DEEP + "]" * DEEP + "\n")
    load_recipe(ctx.tmp / "deep.yaml")


def _deep_target(ctx):
    from edgecompress.targets.profile import TargetProfile

    (ctx.tmp / "deep.toml").write_text('name = "d"\nisa = "x86_64"\nrunner = "local"\nruntimes = ["onnxruntime"]\n'
                                       "formats = " + "[" * DEEP + "]" * DEEP + "\n")
    TargetProfile.from_file(ctx.tmp / "deep.toml")


def _deep_baseline(ctx):
    from edgecompress.report import Report

    (ctx.tmp / "deep.json").write_text('{"artifacts": ' + "[" * 100_000 + "]" * 100_000 + "}")
    Report.load(ctx.tmp / "deep.json")


def _deep_manifest(ctx):
    from edgecompress.targets.device_report import load_artifacts

    d = ctx.tmp / "exp"
    d.mkdir()
    (d / "manifest.json").write_text('{"artifacts": ' + "[" * 100_000 + "]" * 100_000 + "}")
    load_artifacts([d])


def _deep_hf_config(ctx):
    from edgecompress.models import load_model

    d = ctx.tmp / "hf"
    d.mkdir()
    (d / "config.json").write_text('{"architectures": ' + "[" * 100_000 + "]" * 100_000 + "}")
    load_model(f"hf:{d}")


def _inf_weights(ctx):
    """[audit 28] a module with an Inf weight loaded, exported, and failed later without naming it."""
    import copy

    import torch

    import edgecompress

    module = copy.deepcopy(ctx.spec.module)
    with torch.no_grad():
        module.get_parameter("stem.0.weight")[0, 0, 0, 0] = float("inf")
    edgecompress.prune(module, ratio=0.3, input_shape=(1, 1, 8, 8))


def _bomb_image(ctx):
    from edgecompress.data import load_data
    from tests.bad_inputs.test_catalogue import bomb_png

    d = ctx.tmp / "bomb"
    d.mkdir()
    (d / "a.png").write_bytes(bomb_png())
    load_data(str(d), "gray-unit", 8, "calibration", progress=False)


def _hf_config(ctx, text: str):
    """[audit 28] a config.json of valid JSON but another shape: AttributeError / TypeError (a traceback)."""
    from edgecompress.models import load_model

    d = ctx.tmp / "hf"
    d.mkdir()
    (d / "config.json").write_text(text)
    load_model(f"hf:{d}")


def _odd_json(ctx, what: str, text: str):
    """[audit 28] a baseline report / manifest of valid JSON but another shape: AttributeError / TypeError."""
    from edgecompress.report import Report
    from edgecompress.targets.device_report import load_artifacts

    d = ctx.tmp / "exp"
    d.mkdir()
    (d / what).write_text(text)
    Report.load(d / what) if what == "report.json" else load_artifacts([d])


def _profile_key(ctx, line: str):
    """[audit 28] a run's state as a profile key: listed as known, then TargetProfile(**data)'s TypeError."""
    from edgecompress.targets.profile import TargetProfile

    (ctx.tmp / "p.toml").write_text('name = "p"\nisa = "x86_64"\nrunner = "local"\nruntimes = ["onnxruntime"]\n'
                                    f'formats = ["onnx"]\n{line}\n')
    TargetProfile.from_file(ctx.tmp / "p.toml")


def _csv_rows(ctx, text: str, as_file: bool):
    from edgecompress.data import load_data

    d = ctx.tmp / "rows"
    d.mkdir()
    (d / "labels.csv").write_text(text)
    load_data(str(d / "labels.csv" if as_file else d), "gray-unit", 8, "evaluation", progress=False)


def _run_export_unknown_target(ctx):
    from edgecompress.pipeline import ExportJob, run_export

    run_export(ExportJob(model=ctx.spec, formats=[("onnx", "fp32")], out_dir=ctx.out, target="pdp11",
                         progress=False))


def _locked_out_dir(ctx):
    # A second writer into the same directory is refused at once. flock belongs to an open file
    # description, so a lock taken through our own separate open() stands for "another run".
    import fcntl

    from edgecompress.pipeline import ExportJob, run_export

    ctx.out.mkdir()
    fd = os.open(ctx.out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        run_export(ExportJob(model=ctx.spec, formats=[("onnx", "fp32")], out_dir=ctx.out, do_validate=False,
                             progress=False))
    finally:
        os.close(fd)


def _calib_with(ctx, x):
    from edgecompress.data import Dataset

    return _export(ctx, "onnx", "int8", calib=Dataset(x))


def _tflite_int8_data_dependent(ctx):
    import torch

    from edgecompress.data import Dataset
    from edgecompress.exporters import export
    from edgecompress.models import load_model

    class Nonzero(torch.nn.Module):  # a count of values: strict export passes, an observer fails
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(x.flatten(1)) + (x.flatten(1) > 0.5).nonzero().shape[0]

    spec = load_model(Nonzero(), input_shape=(1, 1, 8, 8))
    export(spec, "tflite", "int8", ctx.out, Dataset(np.random.rand(4, 1, 8, 8).astype(np.float32)))


def _onnx_fixed_batch_module(ctx):
    import torch

    from edgecompress.models import load_model

    class FixedBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(x.reshape(1, 64))

    ctx.spec = load_model(FixedBatch(), input_shape=(1, 1, 8, 8))
    _export(ctx)


def _nan_calib(ctx):
    x = ctx.calib.x.copy()
    x[3] = np.nan
    return _calib_with(ctx, x)


def _art(ctx):
    """An fp32 ONNX file outside ctx.out (which must stay empty)."""
    from edgecompress.exporters import export

    return export(ctx.spec, "onnx", "fp32", ctx.tmp / "art")


def _api(name: str):
    return getattr(__import__("edgecompress"), name)


API_CASES = [
    # [audit21 #6] wrong types to the public API escaped as raw Python errors: a state_dict's repr
    # as a "file name" (OSError: File name too long), AttributeError / KeyError / TypeError
    ("load-model-state-dict", lambda c: _api("load_model")(c.spec.module.state_dict(), (1, 1, 8, 8)), ConfigError,
     "load_model: model must be a path / 'zoo:NAME' / 'module:factory' / nn.Module / ModelSpec, got a state_dict"),
    ("prune-state-dict", lambda c: _api("prune")(c.spec.module.state_dict(), input_shape=(1, 1, 8, 8)), ConfigError,
     "load_model: model must be a path"),
    ("load-model-list", lambda c: _api("load_model")([c.spec.module], (1, 1, 8, 8)), ConfigError,
     "got a list (pass one model at a time)"),
    ("load-model-class", lambda c: _api("load_model")(type(c.spec.module), (1, 1, 8, 8)), ConfigError,
     "got the class DigitsCNN (pass an instance, DigitsCNN(...))"),
    ("validate-settings-dict", lambda c: _api("validate")([_art(c)], "x86-local", settings={"runs": 5},
                                                          progress=False),
     ConfigError, "validate: settings must be a ValidateSettings, got dict"),
    ("report-from-artifacts", lambda c: _api("Report").from_measurements([_art(c)], model={"name": "x"},
                                                                        target="x86-local"),
     ConfigError, "Report.from_measurements: measurements[0] must be a Measurement (validate(...)) or its "
     "to_dict(), got Artifact"),
    ("write-report-dict", lambda c: _api("write_report")({"model": {}}, c.out), ConfigError,
     "write_report: report must be a Report (Report.from_measurements(...)), got dict"),
    ("write-report-out-dir-int", lambda c: _api("write_report")(_api("Report")(model={}, target="x", artifacts=[]), 5),
     ConfigError, "write_report: out_dir must be a path (str or Path), got int"),
    ("export-out-dir-int", lambda c: _api("export")(c.spec, "onnx", "fp32", 5), ConfigError,
     "export: out_dir must be a path (str or Path), got int"),
    # [audit 2026-12-01] from Python, what the pipeline checks of data was skipped: integer arrays
    # failed inside ORT after the fp32 export, NaN samples calibrated silently
    ("calib-int-dtype-python", lambda c: _calib_with(c, np.ones((4, 1, 8, 8), np.uint8)), DataError,
     "dtype uint8 does not match the model input (float32)"),
    ("calib-nan-python", _nan_calib, DataError, "sample 3 contains NaN or Inf"),
    ("calib-method-unknown", lambda c: __import__("edgecompress.exporters").exporters.ExportOptions(
        calib_method="MinMax"), ConfigError, "calib_method='MinMax': one of minmax"),
    ("tflite-int8-data-dependent", _tflite_int8_data_dependent, __import__("edgecompress.errors").errors.ExportError,
     "PT2E quantization (prepare / calibrate / convert) cannot lower the model"),
    ("onnx-module-fixes-batch", _onnx_fixed_batch_module, __import__("edgecompress.errors").errors.ExportError,
     "the model fixes its batch size, e.g. x.reshape(1, -1)"),
    # (id, callable(ctx), exception class, fragment)
    ("name-escapes-dotdot", lambda c: _export(c, name="../escape.onnx"), OutputError,
     "'../escape.onnx' would escape the output directory"),
    ("name-escapes-absolute", lambda c: _export(c, name="/tmp/abs.onnx"), OutputError, "would escape the output"),
    ("disk-full-onnx", _onnx_enospc, OutputError, "digits-cnn-fp32.onnx: no space left on device"),
    ("disk-full-openvino-xml", _ov_enospc_on_xml, OutputError, "digits-cnn-fp32.xml: no space left on device"),
    ("disk-full-report", _report_enospc, OutputError, "report.json: no space left on device"),
    ("options-extra-typo", lambda c: _export(c, "openvino", options=__import__("edgecompress.exporters").exporters
                                             .ExportOptions(extra={"ov_overflow_fx": "disable"})),
     ConfigError, "ExportOptions.extra: unknown key(s) 'ov_overflow_fx' (known: "),
    ("runtime-missing-openvino", lambda c: _missing_runtime(c, "openvino", "openvino", "fp32"), RuntimeMissingError,
     "openvino fp32: needs the Python package 'openvino'"),
    ("runtime-missing-nncf", lambda c: _missing_runtime(c, "nncf", "openvino", "int8"), RuntimeMissingError,
     "openvino int8: needs the Python package 'nncf'"),
    ("target-unreachable", _closed_port_preflight, DeviceError, "Connection refused"),
    ("recipe-ratio-gt-1", lambda c: _recipe(passes=[{"prune": {"ratio": 1.5}}]), ConfigError,
     "passes[0].prune.ratio: 1.5 is out of range"),
    ("recipe-negative-rank", lambda c: _recipe(passes=[{"lowrank": {"rank": -2}}]), ConfigError,
     "passes[0].lowrank.rank: -2 is out of range"),
    ("recipe-nan-ratio", lambda c: _recipe(passes=[{"prune": {"ratio": float("nan")}}]), ConfigError,
     "passes[0].prune.ratio: nan is out of range"),
    ("recipe-inf-lr", lambda c: _recipe(passes=[{"distill": {"lr": float("inf")}}]), ConfigError,
     "passes[0].distill.lr: inf is out of range"),
    ("recipe-unknown-pass", lambda c: _recipe(passes=["sharpen"]), ConfigError, "passes[0]: unknown pass 'sharpen'"),
    ("recipe-unknown-target", lambda c: _recipe(export=["onnx"], target="pdp11"), ConfigError,
     "target: 'pdp11': unknown target"),
    ("recipe-unknown-key", lambda c: _recipe(pases=[]), ConfigError, "recipe: pases: unknown key"),
    ("recipe-not-mapping", lambda c: __import__("edgecompress.recipe").recipe.parse_recipe([1], "r.yaml"),
     ConfigError, "r.yaml: expected a mapping"),
    ("recipe-file-missing", lambda c: __import__("edgecompress.recipe").recipe.load_recipe(c.tmp / "no.yaml"),
     InputFileError, "no.yaml: no such file"),
    ("pipeline-unknown-target", _run_export_unknown_target, ConfigError, "target='pdp11': unknown target"),
    ("out-dir-locked", _locked_out_dir, OutputError, "another edgecompress run is writing there"),
    ("tensor-0d", lambda c: _load(c, "s.npy", lambda p: np.save(p, np.float32(1))), DataError, "holds no samples"),
    ("tensor-object-dtype", lambda c: _load(c, "o.npy", _save_obj), InputFileError, "o.npy: not a readable .npy"),
    ("tensor-bool-dtype", lambda c: _load(c, "b.npy", lambda p: np.save(p, np.ones((2, 1, 8, 8), bool))),
     DataError, "b.npy: dtype bool is not a real number type"),
    ("tensor-int-dtype", lambda c: _load(c, "i.npy", lambda p: np.save(p, np.ones((2, 1, 8, 8), np.uint8))),
     DataError, "dtype uint8 does not match the model input (float32)"),
    ("tensor-nan-npz", lambda c: _load(c, "n.npz", lambda p: np.savez(p, x=np.full((2, 1, 8, 8), np.nan, np.float32))),
     DataError, "n.npz: sample 0 contains NaN or Inf"),
    ("labels-csv-negative", _csv_negative, DataError, "labels.csv:2: class_index -3 is negative"),
    ("labels-csv-beyond-int64", _csv_beyond_int64, DataError,
     "labels.csv:2: class_index 99999999999999999999999 is beyond int64"),
    # [audit 28] a uint64 'y' wrapped to -1 in the int64 cast: "holds a negative class index (-1)" of a
    # file that holds none, said by reference_outputs
    ("labels-npz-uint64", lambda c: _load(c, "u.npz", lambda p: np.savez(
        p, x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([0, 2**64 - 1], np.uint64))), DataError,
     "u.npz: 'y' holds class index 18446744073709551615, beyond int64"),
    # [audit 28] a shape from Python is checked as the CLI's text is: int()'s ValueError, an AttributeError,
    # 8.5 and True taken as 8 and 1, a negative dimension in torch's words
    *((f"shape-{i}", (lambda c, v=v: _api("load_model")("tests.bad_inputs.badmodels:tiny", v)),
       __import__("edgecompress.errors").errors.InputShapeError, f"input_shape={v!r}: {why}")
      for i, (v, why) in enumerate([(("a", 3), "expected integers like (1, 3, 224, 224)"),
                                    ((1, 3, 8.5, 8), "expected integers like (1, 3, 224, 224)"),
                                    ((True, 3, 8, 8), "expected integers"),
                                    (8, "expected a tuple of integers"),
                                    ((1, -3, 8, 8), "dimensions must be positive")])),
    ("decompression-bomb", _bomb_image, DataError, "a.png: cannot read image (DecompressionBombError"),
    *((f"hf-config-{i}", (lambda c, t=t: _hf_config(c, t)), __import__("edgecompress.errors").errors.ModelLoadError,
       "/hf': transformers cannot load it") for i, t in enumerate(["[1]", '{"architectures": 5}', '"text"'])),
    *((f"odd-json-{i}", (lambda c, w=w, t=t: _odd_json(c, w, t)), InputFileError, f"{w}: not a valid {why}")
      for i, (w, t, why) in enumerate([
          ("report.json", '{"model": {}, "target": "x", "artifacts": [5]}',
           "edgecompress report.json ('artifacts' holds int, not an object)"),
          ("report.json", '{"model": 5, "target": "x", "artifacts": []}',
           "edgecompress report.json ('model' is int, not an object)"),
          ("manifest.json", '{"artifacts": 5}', "manifest ('artifacts' is int, not a list)"),
          ("manifest.json", '{"artifacts": null}', "manifest ('artifacts' is NoneType, not a list)")])),
    *((f"profile-key-{k}", (lambda c, k=k, v=v: _profile_key(c, f"{k} = {v}")), ConfigError,
       f"p.toml': {k}: unknown key (known: connection, description, formats, hardware, isa, name, runner, runtimes, "
       "sources)") for k, v in (("preflight_passed", "true"), ("resolved_runner", '"ssh"'))),
    # [audit 28] torch.set_num_threads(10**9): libgomp's out-of-memory abort, exit 1, after --out was made
    ("recipe-torch-threads", lambda c: _recipe(options={"torch_threads": 10**9}), ConfigError,
     "options.torch_threads: 1000000000: this machine gives edgecompress"),
    # [audit 28] wrong types: pathlib's / slice()'s TypeError when read
    ("dataspec-path-int", lambda c: _api("load_data")(_api("DataSpec")(5)), ConfigError,
     "DataSpec: path must be a str or Path, got int"),
    ("dataspec-start-text", lambda c: _api("DataSpec")("x.npy", start="a"), ConfigError,
     "DataSpec: start must be an integer row index or None, got 'a'"),
    ("save-recipe-path-none", lambda c: _api("save_recipe")(_recipe(), None), ConfigError,
     "save_recipe: path must be a file path, got None"),
    # [audit 28] a batch larger than the machine: numpy's ArrayMemoryError in every row (exit 4)
    ("batch-beyond-memory", lambda c: _api("validate")([_art(c)], settings=_api("ValidateSettings")(
        batches=(1, 10**12), runs=1, warmup=0, rounds=1), progress=False), ConfigError,
     "batches=1000000000000: one batch of digits-cnn-fp32.onnx's inputs is 238,418.6 GiB, more than this machine's"),
    # [audit 28] it said "no images found (.bmp, .gif, ...)", as if the images had the wrong suffix
    *((f"labels-csv-no-rows-{i}", (lambda c, t=t, d=d: _csv_rows(c, t, d)), DataError,
       "the labels CSV labels.csv lists no images") for i, (t, d) in enumerate(
          [("filename,class_index\n", False), ("", False), ("filename,class_index\n", True)])),
    ("inf-weights", _inf_weights, __import__("edgecompress.errors").errors.ModelLoadError,
     "model DigitsCNN: stem.0.weight holds Inf values"),
    ("deep-recipe-yaml", _deep_recipe, ConfigError, "deep.yaml: not valid YAML (nested too deeply to read)"),
    ("deep-target-toml", _deep_target, ConfigError, "deep.toml': invalid TOML (nested too deeply to read)"),
    ("deep-baseline-json", _deep_baseline, InputFileError,
     "deep.json: not a valid edgecompress report.json (nested too deeply to read)"),
    ("deep-manifest-json", _deep_manifest, InputFileError,
     "manifest.json: not a valid manifest (nested too deeply to read)"),
    ("deep-hf-config", _deep_hf_config, __import__("edgecompress.errors").errors.ModelLoadError,
     "transformers cannot load it"),
    ("unknown-format", lambda c: __import__("edgecompress.exporters").exporters.resolve_formats(["coreml"]),
     ConfigError, "formats='coreml': unknown format"),
]


class Ctx:
    def __init__(self, tmp, out, spec, calib, monkeypatch):
        self.tmp, self.out, self.spec, self.calib, self.monkeypatch = tmp, out, spec, calib, monkeypatch


@pytest.mark.parametrize("case_id,fn,exc,fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_input_api(tmp_path, digits_spec, digits_calib, monkeypatch, case_id, fn, exc, fragment):
    out = tmp_path / "out"
    ctx = Ctx(tmp_path, out, digits_spec, digits_calib.take(slice(0, 32)), monkeypatch)
    with pytest.raises(exc) as info:
        fn(ctx)
    assert type(info.value) is exc, type(info.value)
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    left = list(out.rglob("*")) if out.exists() else []
    assert left == [], f"{case_id} left files behind: {left}"
