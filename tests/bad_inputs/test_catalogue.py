"""Bad-input catalogue: each case names the culprit in one line, exits non-zero, writes nothing.

Table-driven over the CLI (as build pipelines call it). Each row: arguments, expected exit code,
a fragment the one-line message must contain. `{tmp}` is a fresh directory with fixtures.
Rows start with `export` unless they name another command (`run`). The Python-API table is in
test_api_catalogue.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli

DIGITS = ["zoo:digits-cnn"]


def _fixtures(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    (tmp / "corrupt.onnx").write_bytes(b"\x08\x07garbage-not-onnx" * 10)
    (tmp / "truncated.pt2").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    bad_img = tmp / "badimg"
    bad_img.mkdir()
    (bad_img / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    np.save(tmp / "nan.npy", np.full((4, 1, 8, 8), np.nan, np.float32))
    np.save(tmp / "wrongshape.npy", np.zeros((4, 3, 8, 8), np.float32))
    np.save(tmp / "zero.npy", np.zeros((0, 1, 8, 8), np.float32))
    (tmp / "afile").write_text("x")
    csvdir = tmp / "csvset"
    csvdir.mkdir()
    (csvdir / "labels.csv").write_text("filename,class_index\nmissing.png,1\n")
    import argparse

    import torch

    # A checkpoint that needs pickle beyond tensors: weights_only=True must refuse it.
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3), "cfg": argparse.Namespace(a=1)}, tmp / "pickle.pt")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")

    class Payload:  # what a malicious checkpoint carries: a call to os.system on load
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp / 'PWNED'}",))

    torch.save({"conv.weight": Payload()}, tmp / "evil.pt")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00model: zoo:digits-cnn\x9c")
    (tmp / "binary.toml").write_bytes(b"\xff\xfename = 'x'\x9c")
    (tmp / "dir.toml").mkdir()
    (tmp / "nopath").mkdir()
    (tmp / "nopath" / "manifest.json").write_text('{"artifacts": [{"format": "onnx"}]}')
    (tmp / "nopath" / "a.onnx").write_bytes(b"any")  # never opened: the baseline is refused first
    (tmp / "list.json").write_text("[1]")
    head = 'name = "e"\nisa = "x86_64"\nruntimes = ["onnxruntime"]\nformats = ["onnx"]\n'
    (tmp / "est.toml").write_text(head + 'runner = "estimate"\n[hardware]\ncores = 4\n')
    (tmp / "teleport.toml").write_text(head + 'runner = "teleport"\n')
    (tmp / "v2.yaml").write_text("version: 2\nmodel: zoo:digits-cnn\nexport: [onnx]\n")
    import zipfile

    with zipfile.ZipFile(tmp / "badjson.pt2", "w") as z:  # a .pt2 whose program JSON is cut short
        z.writestr("archive/models/model.json", '{"graph_module": {"graph": ')
    (tmp / "strfmt.toml").write_text('name = "s"\nisa = "x86_64"\nrunner = "local"\nruntimes = ["onnxruntime"]\n'
                                     'formats = "onnx"\n')
    np.savez(tmp / "neg.npz", x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, -1, 2]))
    (tmp / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    (tmp / "corrupt.npy").write_bytes(bytes(range(255, -1, -1)) * 4)
    _issue7_fixtures(tmp)
    _audit28_fixtures(tmp)


def _audit28_fixtures(tmp: Path) -> None:
    """[audit 28] a class index beyond int64 in a labels CSV (an OverflowError traceback)."""
    from PIL import Image

    huge = tmp / "hugelabel"
    huge.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(huge / "0.png")
    (huge / "labels.csv").write_text("filename,class_index\n0.png,99999999999999999999999\n")
    # files nested deeper than their parser recurses (a RecursionError traceback)
    (tmp / "deep.yaml").write_text("model: zoo:digits-cnn\nexport: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp / "deep.json").write_text('{"artifacts": ' + "[" * 100_000 + "]" * 100_000 + "}")
    # a PNG whose header claims 30000 x 30000 pixels: PIL's DecompressionBombError is no OSError
    (tmp / "bomb").mkdir()
    (tmp / "bomb" / "a.png").write_bytes(bomb_png())
    (tmp / "oddman").mkdir()  # a manifest.json of valid JSON, another shape: a TypeError traceback
    (tmp / "oddman" / "manifest.json").write_text('{"artifacts": 5}')
    (tmp / "oddbase.json").write_text('{"model": {}, "target": "x86-local", "artifacts": [5]}')
    (tmp / "state.toml").write_text('name = "s"\nisa = "x86_64"\nrunner = "local"\nruntimes = ["onnxruntime"]\n'
                                    'formats = ["onnx"]\npreflight_passed = true\n')  # a TypeError traceback
    (tmp / "threads.yaml").write_text("model: zoo:digits-cnn\nexport: [onnx]\noptions: {torch_threads: 1000000000}\n")
    # a diverged training run's checkpoint: it exported, and failed (exit 3 / 4) naming neither file nor tensor
    import torch

    from tests.bad_inputs.badmodels import Tiny

    state = Tiny().state_dict()
    state["fc.weight"][0, 1] = float("nan")
    torch.save(state, tmp / "nan.pt")


def bomb_png(side: int = 30000) -> bytes:
    """A PNG header of side x side pixels (past PIL's decompression-bomb limit) over a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound then closed: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _issue7_fixtures(tmp: Path) -> None:
    """[issue #7] recipes with bad values, real files truncated mid-file, odd tensors, labels."""
    recipes = {
        "r_ratio": "model: zoo:digits-cnn\npasses:\n  - prune: {ratio: 1.5}\n",
        "r_rank": "model: zoo:digits-cnn\npasses:\n  - lowrank: {rank: -1}\n",
        "r_pass": "model: zoo:digits-cnn\npasses:\n  - sharpen: {}\n",
        "r_target": "model: zoo:digits-cnn\nexport: [onnx]\ntarget: pdp11\n",
        "r_format": "model: zoo:digits-cnn\nexport: [coreml:int8]\n",
        "r_model": "model: zoo:nope\nexport: [onnx]\n",
        "r_yaml": "model: zoo:digits-cnn\npasses: [prune: {ratio: 0.5}\n",
    }
    for name, text in recipes.items():
        (tmp / f"{name}.yaml").write_text(text)
    np.save(tmp / "int.npy", np.zeros((4, 1, 8, 8), np.int64))
    np.save(tmp / "complex.npy", np.zeros((4, 1, 8, 8), np.complex64))
    np.save(tmp / "scalar.npy", np.float32(3.0))
    np.savez(tmp / "inf.npz", x=np.concatenate([np.zeros((2, 1, 8, 8)), np.full((1, 1, 8, 8), np.inf)]
                                               ).astype(np.float32), y=np.array([0, 1, 2]))
    # Labels beyond digits-cnn's 10 classes (images are valid 8x8 grey PNGs).
    from PIL import Image

    oor = tmp / "oor"
    oor.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(oor / f"{i}.png")
    (oor / "labels.csv").write_text("filename,class_index\n0.png,1\n1.png,99\n2.png,3\n")
    # Real digits-cnn files cut in half: what a killed copy or download leaves.
    import torch

    from edgecompress.exporters import export
    from edgecompress.models import load_model

    spec = load_model("zoo:digits-cnn")
    art = export(spec, "onnx", "fp32", tmp / "real")
    data = Path(art.path).read_bytes()
    (tmp / "cut.onnx").write_bytes(data[: len(data) // 2])
    import onnx

    custom = onnx.load(art.path)  # the real file with its first node made a custom op
    custom.graph.node[0].domain = "com.example"
    custom.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(custom, str(tmp / "customop.onnx"))
    ep = torch.export.export(spec.module.eval(), spec.example_inputs())
    torch.export.save(ep, tmp / "real" / "digits.pt2")
    data = (tmp / "real" / "digits.pt2").read_bytes()
    (tmp / "cut.pt2").write_bytes(data[: len(data) // 2])
    # An ssh target on a loopback port where nothing listens.
    (tmp / "closed.toml").write_text(
        'name = "closed"\nisa = "x86_64"\nrunner = "ssh"\nruntimes = ["onnxruntime"]\nformats = ["onnx"]\n'
        f'[connection]\nhost = "127.0.0.1"\nport = {_closed_port()}\nconnect_timeout_s = 5\n')


CASES = [
    # (id, args, exit code, fragment of the message)
    ("missing-onnx", ["{tmp}/nope.onnx", "--no-validate", "--out", "{out}"], 2, "nope.onnx: no such file"),
    ("corrupt-onnx", ["{tmp}/corrupt.onnx", "--no-validate", "--out", "{out}"], 2, "corrupt.onnx: not a valid ONNX"),
    ("truncated-pt2", ["{tmp}/truncated.pt2", "--no-validate", "--out", "{out}"], 2, "truncated.pt2: not a readable"),
    ("bare-checkpoint", ["{tmp}/model.pt", "--out", "{out}"], 2, "bare checkpoint has no architecture"),
    ("factory-missing-module", ["nosuchpkg.mod:build", "--input-shape", "1,3,8,8", "--out", "{out}"], 2,
     "cannot import module 'nosuchpkg.mod'"),
    ("factory-not-callable", ["tests.bad_inputs.badmodels:NOT_CALLABLE", "--input-shape", "1,3,8,8", "--out", "{out}"],
     2, "'NOT_CALLABLE' is a int, not callable"),
    ("factory-raises", ["tests.bad_inputs.badmodels:raises", "--input-shape", "1,3,8,8", "--out", "{out}"], 2,
     "factory exploded"),
    ("factory-not-module", ["tests.bad_inputs.badmodels:not_a_module", "--input-shape", "1,3,8,8", "--out", "{out}"],
     2, "returned str, not a torch.nn.Module"),
    ("wrong-input-shape", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,5,8,8", "--out", "{out}"], 2,
     "input shape (1, 5, 8, 8) does not fit model tiny"),
    ("bad-shape-text", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,three", "--out", "{out}"], 2,
     "--input-shape '1,three'"),
    # [audit #27] --input-dtype: an unknown one, and one a zoo model does not take
    ("unknown-input-dtype", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--input-dtype",
                             "float16", "--out", "{out}"], 2,
     "--input-dtype 'float16': use one of float32, int64, int32"),
    ("zoo-input-dtype", [*DIGITS, "--input-dtype", "int64", "--out", "{out}"], 2,
     "--input-dtype int64: zoo:digits-cnn takes input 'x' as float32"),
    # a --float-first that leaves every layer float is the user's setting, not the model's limit:
    # it exited 3 (export failure) with this same message
    ("float-first-covers-all", [*DIGITS, "-f", "onnx:int8", "--float-first", "99", "--no-validate", "--out", "{out}"],
     2, "nothing to quantize: --float-first 99 leaves all 8"),
    ("float-first-covers-all-ov", [*DIGITS, "-f", "openvino:int8", "--float-first", "99", "--no-validate", "--out",
                                   "{out}"], 2, "nothing to quantize: --float-first 99 leaves all"),
    ("empty-calib-folder", [*DIGITS, "--int8", "--calib", "{tmp}/empty", "--out", "{out}"], 2,
     "empty: no images found"),
    ("unreadable-image", [*DIGITS, "--int8", "--calib", "{tmp}/badimg", "--preprocess", "gray-unit", "--out", "{out}"],
     2, "a.png: cannot read image"),
    ("missing-calib", [*DIGITS, "--int8", "--calib", "{tmp}/nothere", "--out", "{out}"], 2,
     "nothere: no such file or directory"),
    ("nan-calib", [*DIGITS, "--int8", "--calib", "{tmp}/nan.npy", "--out", "{out}"], 2, "contains NaN or Inf"),
    ("zero-calib", [*DIGITS, "--int8", "--calib", "{tmp}/zero.npy", "--out", "{out}"], 2, "holds no samples"),
    ("calib-shape", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy", "--out", "{out}"], 2,
     "samples have shape (3, 8, 8) but the model takes (1, 8, 8)"),
    ("not-a-row-range", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy[a:b]", "--out", "{out}"], 2,
     "[a:b] is not a row range; use [start:stop] with integers"),  # it said "no such file"
    ("an-index-not-a-range", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy[5]", "--out", "{out}"], 2,
     "[5] is not a row range"),
    ("empty-range", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy[10:20]", "--out", "{out}"], 2,
     "wrongshape.npy[10:20]: the range selects no samples (the file holds 4)"),
    ("negative-npz-label", [*DIGITS, "--eval", "{tmp}/neg.npz", "--out", "{out}"], 2,
     "neg.npz: 'y' holds a negative class index (-1)"),
    ("corrupt-npz", [*DIGITS, "--int8", "--calib", "{tmp}/corrupt.npz", "--out", "{out}"], 2,
     "corrupt.npz: not a readable .npz file"),
    ("corrupt-npy", [*DIGITS, "--int8", "--calib", "{tmp}/corrupt.npy", "--out", "{out}"], 2,
     "corrupt.npy: not a readable .npy file (corrupt, or it holds Python objects"),  # not "allow_pickle"
    ("csv-unknown-file", [*DIGITS, "--int8", "--calib", "{tmp}/csvset", "--out", "{out}"], 2,
     "labels.csv:2: image 'missing.png' not found"),
    ("unknown-format", [*DIGITS, "-f", "coreml", "--out", "{out}"], 2, "--format 'coreml': unknown format"),
    # refused before the export: it failed after the fp32 file was written into --out
    ("threads-beyond-cpus", [*DIGITS, "-f", "onnx", "--threads", "999", "--out", "{out}"], 2,
     "--threads 999: this machine gives edgecompress"),
    ("unknown-precision", [*DIGITS, "-f", "onnx:int4", "--out", "{out}"], 2, "onnx supports precisions fp32, int8"),
    ("unknown-calib-method", [*DIGITS, "--int8", "--calib-method", "magic", "--out", "{out}"], 2,
     "--calib-method 'magic'"),
    ("unknown-target", [*DIGITS, "--target", "pdp11", "--out", "{out}"], 2, "--target 'pdp11': unknown target"),
    ("unknown-zoo", ["zoo:resnet9000", "--out", "{out}"], 2, "unknown zoo model 'resnet9000'"),
    ("unknown-preset", [*DIGITS, "--preprocess", "sepia", "--int8", "--calib", "{tmp}/badimg", "--out", "{out}"], 2,
     "--preprocess 'sepia': unknown preprocessing preset"),
    ("out-not-writable", [*DIGITS, "--out", "{tmp}/afile/sub"], 2, "cannot create directory"),
    ("pickle-checkpoint", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                           "{tmp}/pickle.pt", "--out", "{out}"], 2,
     "refused, it needs pickle beyond plain tensors: argparse.Namespace"),
    ("code-running-checkpoint", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                                 "{tmp}/evil.pt", "--out", "{out}"], 2, "plain tensors: posix.system"),
    ("garbage-checkpoint", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                            "{tmp}/garbage.pt", "--out", "{out}"], 2, "garbage.pt: not a readable PyTorch checkpoint"),
    ("missing-weights", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                         "{tmp}/none.pt", "--out", "{out}"], 2, "none.pt: no such file"),
    ("unexportable-op", ["tests.bad_inputs.badmodels:unexportable", "--input-shape", "1,3,8,8", "--no-validate",
                         "--out", "{out}"], 3, "onnx export of unexportable failed: unsupported op prims.bessel_j0"),
    ("openvino-frozen-branch", ["tests.bad_inputs.badmodels:branchy", "--input-shape", "1,3,8,8", "-f", "openvino",
                                "--no-validate", "--out", "{out}"], 3,
     "the model branches on tensor values at"),
    # --- [issue #7] ---------------------------------------------------------------------------
    ("recipe-ratio-gt-1", ["run", "{tmp}/r_ratio.yaml", "--out", "{out}"], 2,
     "passes[0].prune.ratio: 1.5 is out of range"),
    ("recipe-negative-rank", ["run", "{tmp}/r_rank.yaml", "--out", "{out}"], 2, "passes[0].lowrank.rank: -1"),
    ("recipe-unknown-pass", ["run", "{tmp}/r_pass.yaml", "--out", "{out}"], 2, "unknown pass 'sharpen'"),
    ("recipe-unknown-target", ["run", "{tmp}/r_target.yaml", "--out", "{out}"], 2, "target: 'pdp11': unknown target"),
    ("recipe-unknown-format", ["run", "{tmp}/r_format.yaml", "--out", "{out}"], 2, "export: 'coreml': unknown format"),
    ("recipe-unknown-model", ["run", "{tmp}/r_model.yaml", "--out", "{out}"], 2, "unknown zoo model 'nope'"),
    ("recipe-bad-yaml", ["run", "{tmp}/r_yaml.yaml", "--out", "{out}"], 2, "r_yaml.yaml: line"),
    ("recipe-missing", ["run", "{tmp}/nothere.yaml", "--out", "{out}"], 2, "nothere.yaml: no such file"),
    ("truncated-real-onnx", ["{tmp}/cut.onnx", "--no-validate", "--out", "{out}"], 2, "cut.onnx: not a valid ONNX"),
    ("onnx-custom-op", ["{tmp}/customop.onnx", "-f", "onnx", "--out", "{out}"], 3,
     "which ONNX Runtime"),
    ("truncated-real-pt2", ["{tmp}/cut.pt2", "--no-validate", "--out", "{out}"], 2, "cut.pt2: not a readable"),
    ("calib-int-dtype", [*DIGITS, "--int8", "--calib", "{tmp}/int.npy", "--out", "{out}"], 2,
     "dtype int64 does not match the model input (float32)"),
    ("calib-complex-dtype", [*DIGITS, "--int8", "--calib", "{tmp}/complex.npy", "--out", "{out}"], 2,
     "complex.npy: dtype complex64 is not a real number type"),
    ("calib-0d-array", [*DIGITS, "--int8", "--calib", "{tmp}/scalar.npy", "--out", "{out}"], 2,
     "scalar.npy: holds no samples"),
    ("inf-in-npz", [*DIGITS, "--int8", "--calib", "{tmp}/inf.npz", "--out", "{out}"], 2,
     "inf.npz: sample 2 contains NaN or Inf"),
    ("labels-out-of-range", [*DIGITS, "--eval", "{tmp}/oor", "--preprocess", "gray-unit", "--runs", "1",
                             "--warmup", "0", "--out", "{out}"], 2,
     "oor: labels go up to class 99 but the model has 10 outputs"),
    ("target-unreachable", [*DIGITS, "--target", "{tmp}/closed.toml", "--out", "{out}"], 3, "Connection refused"),
    # [session 10 audit] each of these printed a traceback (exit 1)
    ("shape-empty-dim", ["compress", "tests.bad_inputs.badmodels:tiny", "--input-shape", "1,,8,8", "-f", "onnx",
                         "--out", "{out}"], 2, "--input-shape '1,,8,8': expected integers"),
    ("recipe-not-utf8", ["run", "{tmp}/binary.yaml", "--out", "{out}"], 2, "binary.yaml: not UTF-8 text"),
    ("target-not-utf8", [*DIGITS, "--target", "{tmp}/binary.toml", "--out", "{out}"], 2, "binary.toml: not UTF-8"),
    ("target-is-dir", [*DIGITS, "--target", "{tmp}/dir.toml", "--out", "{out}"], 2, "dir.toml: cannot read"),
    ("manifest-entry-no-path", ["validate", "{tmp}/nopath", "--out", "{out}"], 2,
     "manifest.json: an artifact entry has no path"),
    ("zero-runs", [*DIGITS, "--runs", "0", "--out", "{out}"], 2, "--runs 0: 1 or more"),
    ("negative-batch", [*DIGITS, "--batch", "-3", "--out", "{out}"], 2, "--batch -3: 1 or more"),
    ("negative-threshold", ["validate", "{tmp}/nopath", "--threshold", "-1", "--out", "{out}"], 2,
     "--threshold -1.0: a relative change, at least 0 and below 1"),
    ("unknown-preset-without-images", [*DIGITS, "--preprocess", "bogus", "--out", "{out}"], 2,
     "--preprocess 'bogus': unknown preprocessing preset"),
    ("format-not-on-target", [*DIGITS, "-f", "openvino", "--target", "rpi5", "--out", "{out}"], 2,
     "--target rpi5 runs onnx, tflite; not openvino"),
    ("target-formats-not-a-list", [*DIGITS, "--target", "{tmp}/strfmt.toml", "--out", "{out}"], 2,
     "strfmt.toml: formats must be a list of names"),
    ("weights-for-zoo", [*DIGITS, "--weights", "{tmp}/pickle.pt", "--out", "{out}"], 2,
     "zoo:digits-cnn carries its own weights"),
    ("onnx-to-tflite", ["{tmp}/real/digits-cnn-fp32.onnx", "-f", "tflite", "--out", "{out}"], 2,
     "--format tflite: converts from a PyTorch model"),
    ("prune-ratio-and-target", ["compress", *DIGITS, "--prune", "0.3", "--prune-macs", "0.6", "--out", "{out}"], 2,
     "--prune 0.3 and --prune-macs 0.6: give one"),
    ("compress-no-train-data", ["compress", "tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8",
                                "--distill-epochs", "1", "--out", "{out}"], 2,
     "has no default data; pass --train (or --calib)"),
    ("precision-flag-unused", [*DIGITS, "-f", "onnx:int8", "-p", "fp16", "--out", "{out}"], 2,
     "--precision fp16: every --format names its own precision"),
    ("estimate-profile-incomplete", [*DIGITS, "--target", "{tmp}/est.toml", "--out", "{out}"], 2,
     "[hardware] peak_fp32_gops_per_core is needed for an estimate"),
    ("target-unknown-runner", [*DIGITS, "--target", "{tmp}/teleport.toml", "--out", "{out}"], 2,
     "teleport.toml: unknown runner 'teleport'"),
    ("empty-gate", ["validate", "{tmp}/nopath", "--fail-on", "", "--out", "{out}"], 2, "--fail-on '': empty value"),
    ("recipe-version", ["run", "{tmp}/v2.yaml", "--out", "{out}"], 2, "version: 2: this edgecompress reads"),
    ("pt2-corrupt-json", ["{tmp}/badjson.pt2", "--out", "{out}"], 2,
     "badjson.pt2: not a readable ExportedProgram .pt2 (model.json: JSONDecodeError)"),
    ("baseline-not-report", ["validate", "{tmp}/nopath/a.onnx", "--baseline", "{tmp}/list.json", "--out", "{out}"], 2,
     "list.json: not a valid edgecompress report.json"),
    # [audit 28] each of these printed a traceback (exit 1)
    ("label-beyond-int64", [*DIGITS, "--eval", "{tmp}/hugelabel", "--preprocess", "gray-unit", "--out", "{out}"], 2,
     "labels.csv:2: class_index 99999999999999999999999 is beyond int64"),  # OverflowError
    ("decompression-bomb", [*DIGITS, "--int8", "--calib", "{tmp}/bomb", "--preprocess", "gray-unit", "--out",
                            "{out}"], 2, "bomb/a.png: cannot read image (DecompressionBombError: Image size"),
    ("manifest-artifacts-not-a-list", ["validate", "{tmp}/oddman", "--out", "{out}"], 2,
     "oddman/manifest.json: not a valid manifest ('artifacts' is int, not a list)"),
    ("baseline-row-not-an-object", ["validate", "{tmp}/nopath/a.onnx", "--baseline", "{tmp}/oddbase.json", "--out",
                                    "{out}"], 2,
     "oddbase.json: not a valid edgecompress report.json ('artifacts' holds int, not an object)"),
    ("target-run-state-key", [*DIGITS, "--target", "{tmp}/state.toml", "--out", "{out}"], 2,
     "state.toml: preflight_passed: unknown key"),
    ("recipe-torch-threads", ["run", "{tmp}/threads.yaml", "--out", "{out}"], 2,
     "options.torch_threads: 1000000000: this machine gives edgecompress"),  # libgomp abort, exit 1
    # every row failed with numpy's ArrayMemoryError, exit 4 (the previous results in --out replaced)
    ("batch-beyond-memory", ["validate", "{tmp}/real/digits-cnn-fp32.onnx", "--batch", "1000000000000", "--out",
                             "{out}"], 2, "--batch 1000000000000: one batch of digits-cnn-fp32.onnx's inputs is"),
    ("nan-weights", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights", "{tmp}/nan.pt",
                     "--out", "{out}"], 2, "/nan.pt: fc.weight holds NaN values"),
    ("recipe-nested-too-deeply", ["run", "{tmp}/deep.yaml", "--out", "{out}"], 2,
     "deep.yaml: not valid YAML (nested too deeply to read)"),  # RecursionError
    ("baseline-nested-too-deeply", ["validate", "{tmp}/nopath/a.onnx", "--baseline", "{tmp}/deep.json", "--out",
                                    "{out}"], 2, "deep.json: not a valid edgecompress report.json (nested too deeply"),
]

COMMANDS = {"run", "compress", "validate"}  # rows starting with one of these are not `export` rows


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _fixtures(d)
    (d / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    return d


@pytest.mark.parametrize("case_id,args,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp, tmp_path, case_id, args, code, fragment):
    out = tmp_path / "out"
    argv = [*([] if args[0] in COMMANDS else ["export"]), *(a.format(tmp=tmp, out=out) for a in args)]
    proc = run_cli(*argv, cwd=ROOT)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    left = [p for p in out.rglob("*")] if out.exists() else []
    assert left == [], f"{case_id} left files behind: {left}"
    assert not (tmp / "PWNED").exists()  # no checkpoint ran code


@pytest.mark.parametrize("case_id", ["unknown-precision", "unexportable-op"])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp, tmp_path, case_id):
    """`--debug` re-raised the error, so every failure exited 1 (a CI job chasing one lost 2/3/4)."""
    _, args, code, fragment = next(c for c in CASES if c[0] == case_id)
    out = tmp_path / "out"
    proc = run_cli("export", *(a.format(tmp=tmp, out=out) for a in args), "--debug", cwd=ROOT)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and fragment in proc.stderr
