"""Target profiles, the calibrated estimator and its labelling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ESTIMATOR_FIGURES = ("peak_fp32_gops_per_core", "peak_int8_gops_per_core", "memory_bandwidth_gbs")


def test_profiles_complete_and_sourced():
    from edgecompress.targets import list_targets

    targets = list_targets()
    assert {"x86-local", "x86-edge", "rpi4", "rpi5", "android-arm64"} <= set(targets)
    for name, t in targets.items():
        assert t.isa in ("x86_64", "aarch64") and t.runtimes and t.formats, name
        assert t.hardware.get("cores") and t.hardware.get("big_cores"), name
        for key in ESTIMATOR_FIGURES:
            assert float(t.hardware[key]) > 0, (name, key)
            assert t.sources.get(key), f"{name}: {key} has no public source"
    assert targets["rpi4"].hardware["has_dotprod"] is False  # A72: ARMv8.0, no SDOT
    assert targets["android-arm64"].runner == "adb" and targets["rpi5"].runner == "ssh"


def test_targets_command_lists_profiles():
    from conftest import run_cli

    r = run_cli("targets", timeout=60)
    assert r.returncode == 0
    for name in ("x86-local", "x86-edge", "rpi4", "rpi5", "android-arm64"):
        assert name in r.stdout


def test_listings_align_and_answer_json():
    """Columns were fixed-width, so a format list longer than 22 characters pushed its row's
    description out of line; `--json` gives scripts the same rows without parsing columns."""
    import json

    from conftest import run_cli

    from edgecompress.targets.profile import list_targets

    for cmd in ("targets", "formats", "zoo"):
        rows = [json.loads(line) for line in run_cli(cmd, "--json", timeout=60).stdout.splitlines()]
        table = run_cli(cmd, timeout=60).stdout.splitlines()
        assert len(rows) == len(table) >= 3, cmd
        # every row's description starts in the same column
        starts = {line.index(row["description"]) for line, row in zip(table, rows, strict=True)}
        assert len(starts) == 1, (cmd, starts)
    rows = {r["name"]: r for r in map(json.loads, run_cli("targets", "--json", timeout=60).stdout.splitlines())}
    assert {n: r["formats"] for n, r in rows.items()} == {n: list(t.formats) for n, t in list_targets().items()}


def test_calibration_constants_match_the_procedure():
    """EFFICIENCY and CALIBRATION_ERROR in estimate.py are what calibrate() / the report give."""
    from edgecompress.targets import estimate as e

    fitted = e.calibrate()
    for k, v in e.EFFICIENCY.items():
        assert fitted[k] == pytest.approx(v, abs=2e-3), k
    rows = e.calibration_report()
    fit_rows = [r for r in rows if r["used_for_fit"]]
    assert fit_rows and all(abs(r["error_pct"]) < 1.0 for r in fit_rows)
    summary = e.calibration_summary(rows)
    assert summary["held_out_figures"] == e.CALIBRATION_ERROR["held_out_figures"]
    assert summary["mean_abs_error_pct"] == pytest.approx(e.CALIBRATION_ERROR["mean_abs_error_pct"], abs=0.2)
    by_target: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if not r["used_for_fit"]:
            by_target.setdefault((r["target"], r["precision"]), []).append(r["error_pct"])
    assert set(by_target) == {(t, p) for t, by in e.HELD_OUT_ERROR_PCT.items() for p in by}
    for (target, precision), errors in by_target.items():
        assert sorted(errors) == pytest.approx(list(e.HELD_OUT_ERROR_PCT[target][precision]), abs=0.2), target
    # The published MAdds of EfficientNet-Lite0 is 407M; our layer count must be close to it.
    lite0 = next(r for r in rows if r["model"] == "efficientnet-lite0")
    assert 0.9 * 407e6 < lite0["macs"] < 1.05 * 407e6


@pytest.fixture(scope="module")
def digits_artifacts(digits_spec, digits_calib, tmp_path_factory):
    from edgecompress.exporters import export

    d = tmp_path_factory.mktemp("est")
    return [export(digits_spec, "onnx", "fp32", d), export(digits_spec, "openvino", "fp32", d),
            export(digits_spec, "openvino", "int8", d, digits_calib)]


def test_layer_readers_agree(digits_spec, digits_artifacts):
    import torch

    from edgecompress.targets import estimate as e

    ref = e.layers_from_torch(digits_spec.module, torch.zeros(1, *digits_spec.input_shape[1:]))
    for art in digits_artifacts:
        layers = e.layers_from_artifact(art.path, art.format)
        assert [ly.op for ly in layers] == [ly.op for ly in ref], art.format
        assert sum(ly.macs for ly in layers) == sum(ly.macs for ly in ref), art.format


def test_estimates_ordered_and_labelled(digits_artifacts, digits_eval, digits_reference, tmp_path):
    from edgecompress.report import Report, artifact_row, write_report
    from edgecompress.targets import ValidateSettings, get_target, validate
    from edgecompress.targets.estimate import estimate_artifact

    fp32, _, int8 = digits_artifacts
    rpi4, rpi5 = get_target("rpi4"), get_target("rpi5")
    e4 = estimate_artifact(fp32.path, "onnx", "fp32", rpi4)["latency_ms"]["1"]["p50"]
    e5 = estimate_artifact(fp32.path, "onnx", "fp32", rpi5)["latency_ms"]["1"]["p50"]
    e5i = estimate_artifact(int8.path, "openvino", "int8", rpi5)["latency_ms"]["1"]["p50"]
    assert e5 < e4 and e5i < e5  # faster core; int8 faster than fp32
    lat = estimate_artifact(fp32.path, "onnx", "fp32", rpi5)["latency_ms"]["1"]
    # one figure: what a cost model cannot give is null, not a copy of p50
    assert lat["p50"] == e5 and lat["mean"] is None and lat["p90"] is None and lat["p99"] is None

    # x86-edge runs all three files (rpi5 does not run OpenVINO: validate() refuses them now)
    edge = get_target("x86-edge")
    ms = validate(digits_artifacts, "x86-edge", digits_eval, digits_reference,
                  ValidateSettings(runs=3, warmup=1), progress=False)
    assert all(m.status == "ok" and m.latency_kind == "estimated" for m in ms)
    assert all(m.runtime["name"] == "estimate" and not m.drift for m in ms)  # nothing ran
    report = Report.from_measurements(ms, model={"name": "digits"}, target="x86-edge")
    assert report.artifacts == [artifact_row(m) for m in ms] and report.target == "x86-edge"
    assert Report.from_measurements(ms[0], model={}, target="x86-edge").artifacts == [artifact_row(ms[0])]
    paths = write_report(report, tmp_path)
    import json

    rows = json.loads(Path(paths["json"]).read_text())["artifacts"]
    assert {r["latency_kind"] for r in rows} == {"estimated"}
    for kind in ("md", "html"):
        text = Path(paths[kind]).read_text()
        assert "(est.)" in text and "by a roofline cost model" in text, kind
        # the device the estimate is for, from the profile's [hardware] cpu (nothing ran there)
        assert f"is ESTIMATED for {edge.hardware['cpu']}" in text.replace("&#x27;", "'"), kind
    from edgecompress.report.render import table_rows

    speedups = [r["speed-up"] for r in table_rows(report) if r["speed-up"] not in ("—", "1.00x")]
    assert speedups and all(s.endswith("x (est.)") for s in speedups)  # a ratio of estimates says so


def test_local_target_is_measured(digits_artifacts, digits_eval, digits_reference):
    from edgecompress.targets import ValidateSettings, validate

    (m,) = validate(digits_artifacts[:1], "x86-local", digits_eval, digits_reference,
                    ValidateSettings(runs=3, warmup=1), progress=False)
    assert m.latency_kind == "measured" and m.drift["top1_agreement"] == 1.0


def test_drift_refuses_broken_outputs_instead_of_scoring_them():
    """All-zero or NaN outputs read as cosine 1.0 ("perfect") and NaN rows as full agreement."""
    import numpy as np

    from edgecompress.errors import ValidationError
    from edgecompress.targets.metrics import drift

    ref = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32)
    assert drift(ref, np.zeros_like(ref))["cosine"] == 0.0
    assert drift(np.zeros_like(ref), np.zeros_like(ref))["cosine"] == 1.0  # nothing differs
    bad = ref.copy()
    bad[3] = np.nan
    with pytest.raises(ValidationError, match=r"1 of 50 samples hold NaN or Inf \(first: sample 3\)"):
        drift(ref, bad)


def test_nan_outputs_fail_the_artifact(tmp_path):
    """A file that computes NaN for some inputs (log of a negative value) is failed, naming the
    sample; NaN in the evaluation data itself is refused before anything runs."""
    import numpy as np
    import torch

    from edgecompress.data import Dataset
    from edgecompress.errors import DataError
    from edgecompress.exporters import export
    from edgecompress.models import load_model
    from edgecompress.targets import ValidateSettings, validate

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x.flatten(1))

    art = export(load_model(Log(), input_shape=(1, 4)), "onnx", "fp32", tmp_path)
    x = np.full((8, 4), 2.0, np.float32)
    x[5, 1] = -1.0
    (m,) = validate([art], "x86-local", Dataset(x), np.log(np.abs(x)),
                    ValidateSettings(runs=3, warmup=1, rounds=1), progress=False)
    assert m.status == "failed" and "1 of 8 samples hold NaN or Inf (first: sample 5)" in m.error, m.error
    x[5, 1] = np.nan
    with pytest.raises(DataError, match="evaluation data in-memory Dataset: sample 5 contains NaN"):
        validate([art], "x86-local", Dataset(x), None, ValidateSettings(runs=3, warmup=1, rounds=1), progress=False)


def test_matching_infinities_are_no_broken_artifact():
    """Masked logits: -inf in the artifact where the fp32 reference has -inf too is the model's
    answer, not a broken file. NaN, or an Inf the reference does not have, still fails the file."""
    import json

    import numpy as np

    from edgecompress.errors import ValidationError
    from edgecompress.targets.metrics import check_finite_outputs, drift

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 12))
    out = ref + 0.05 * rng.standard_normal(ref.shape)
    masked = rng.random(ref.shape) < 0.3
    masked[:, 0] = False  # every row keeps finite positions
    ref[masked], out[masked] = -np.inf, -np.inf
    ref[7, 3], out[7, 3] = np.inf, np.inf  # +inf on both sides too
    ref[9, 5], out[9, 5] = -np.inf, -40.0  # int8 has no -inf: a large negative value there
    check_finite_outputs(out, "artifact outputs", ref)
    rows = int(np.isinf(out).any(1).sum())
    with pytest.raises(ValidationError, match=rf"^artifact outputs: {rows} of 40 samples hold NaN or Inf"):
        check_finite_outputs(out, "artifact outputs")  # no reference to compare with: refused as before
    one_line = r"^artifact outputs: 1 of 40 samples hold NaN or Inf \(first: sample {}\)$"
    for row, col, value, other in ((4, 0, -np.inf, None), (11, 2, np.nan, None), (13, 1, np.inf, -np.inf)):
        bad, r = out.copy(), ref.copy()
        if other is not None:
            r[row, col] = other  # the other sign
        bad[row, col] = value
        with pytest.raises(ValidationError, match=one_line.format(row)):
            drift(r, bad)
    d = drift(ref, out)
    assert all(np.isfinite(v) for v in d.values()), d
    json.dumps(d, allow_nan=False)
    # the figures over the positions finite on both sides, computed here one row at a time
    cos, diffs = [], []
    for r, o in zip(ref, out, strict=True):
        keep = np.isfinite(r) & np.isfinite(o)
        cos.append(r[keep] @ o[keep] / (np.linalg.norm(r[keep]) * np.linalg.norm(o[keep])))
        diffs.extend(np.abs(r[keep] - o[keep]))
    assert d["cosine"] == pytest.approx(np.mean(cos)) and d["cosine_min"] == pytest.approx(min(cos))
    assert d["max_abs"] == pytest.approx(max(diffs)) and d["mean_abs"] == pytest.approx(np.mean(diffs))
    assert d["top1_agreement"] == np.mean(ref.argmax(1) == out.argmax(1))
    assert 0.99 < d["cosine"] < 1.0 and d["max_abs"] < 0.5  # close, not "perfect"
    with pytest.raises(ValidationError, match=r"^reference outputs: 1 of 40 samples hold NaN"):
        drift(np.where(np.arange(40)[:, None] == 2, np.nan, ref), out)


def test_masked_logits_validate_with_finite_drift(tmp_path):
    """A model that outputs -inf for masked classes, end to end: the ONNX file has the same -inf
    as the PyTorch reference, passes, and its drift is written as strict JSON."""
    import json

    import numpy as np
    import torch

    from edgecompress.data import Dataset
    from edgecompress.exporters import export
    from edgecompress.fileio import write_json_atomic
    from edgecompress.models import load_model
    from edgecompress.targets import ValidateSettings, reference_outputs, validate

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 5)

        def forward(self, x):
            return self.fc(x).masked_fill(x[:, :5] < 0, float("-inf"))

    torch.manual_seed(0)
    model = Masked().eval()
    art = export(load_model(model, input_shape=(1, 6)), "onnx", "fp32", tmp_path)
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0])  # class 0 is never masked: every row has a finite score
    ref = reference_outputs(model, Dataset(x), progress=False)
    assert np.isneginf(ref).any()
    (m,) = validate([art], "x86-local", Dataset(x), ref, ValidateSettings(runs=3, warmup=1, rounds=1),
                    progress=False)
    assert m.status == "ok", m.error
    assert m.drift["top1_agreement"] == 1.0 and m.drift["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert 0 <= m.drift["max_abs"] < 1e-4
    path = write_json_atomic(tmp_path / "m.json", m.to_dict())
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["drift"] == m.drift
    finite_ref = np.where(np.isinf(ref), -1.0, ref)  # a reference with a finite score there
    (m,) = validate([art], "x86-local", Dataset(x), finite_ref, ValidateSettings(runs=3, warmup=1, rounds=1),
                    progress=False)
    assert m.status == "failed" and "samples hold NaN or Inf" in m.error, m.error


def test_a_failed_benchmark_keeps_the_whole_exception():
    """ORT names the problem on its message's second line; the report kept only the last line,
    "Please fix either the inputs/outputs or the model."."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.runners.local import parse_bench_output

    err = ('Traceback (most recent call last):\n  File "bench.py", line 3, in <module>\n    main()\n'
           "    ^^^^^^\nonnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument: [ONNXRuntimeError] : 2 : "
           "INVALID_ARGUMENT : Got invalid dimensions for input: input for the following indices\n"
           " index: 2 Got: 224 Expected: 8\n Please fix either the inputs/outputs or the model.\n")
    with pytest.raises(ValidationError) as e:
        parse_bench_output("", err, 1, "m.onnx")
    msg = str(e.value)
    assert "InvalidArgument" in msg and "index: 2 Got: 224 Expected: 8" in msg and "\n" not in msg
    with pytest.raises(ValidationError, match=r"benchmark failed \(killed\)"):
        parse_bench_output("", "some log\nkilled\n", 9, "m.onnx")  # no traceback: the last line


def test_estimated_rows_carry_no_run_settings(digits_artifacts):
    """Nothing ran on an estimated target: its rows said 'warmup 10, runs 100'."""
    from edgecompress.targets import ValidateSettings, validate

    (m,) = validate(digits_artifacts[:1], "rpi5", settings=ValidateSettings(runs=7, warmup=2), progress=False)
    assert m.latency_kind == "estimated" and m.status == "ok"
    assert not {"runs", "warmup", "rounds"} & set(m.settings) and m.settings["threads"] == 1


def test_report_names_the_commit_that_wrote_it():
    import subprocess
    from pathlib import Path

    from edgecompress.report.model import versions

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert versions()["edgecompress commit"].startswith(head)


def test_an_fp32_file_that_disagrees_with_its_reference_fails(digits_artifacts, digits_eval, digits_reference):
    """A safety net under the exporters' checks: an fp32 file computing something else than its
    reference (here: a reference with the classes reversed) was reported ok; int8 drift is the
    report's to show, not a failure."""
    from edgecompress.targets import ValidateSettings, validate

    fp32, _, int8 = digits_artifacts
    ev = digits_eval.take(slice(0, 60))
    fast = ValidateSettings(runs=3, warmup=1, rounds=1)
    good = validate([fp32], "x86-local", ev, digits_reference[:60], fast, progress=False)[0]
    assert good.status == "ok" and good.drift["cosine"] > 0.9999
    wrong = np.ascontiguousarray(digits_reference[:60, ::-1])
    bad, q = validate([fp32, int8], "x86-local", ev, wrong, fast, progress=False)
    assert bad.status == "failed" and "the fp32 file disagrees with the reference (cosine" in bad.error
    # the other cause is named too: a reference of another model (the model before compression)
    assert "or the reference is another model's outputs" in bad.error and "\n" not in bad.error
    assert q.status == "ok" and q.drift["cosine"] < 0.999  # int8: reported, not refused


@pytest.mark.parametrize("n", [1, 3])
def test_timed_inputs_are_writable_arrays_in_ram(tmp_path, n):
    """The inputs file is opened as a read-only memmap; a slice of it made OpenVINO copy the input
    on every timed call (it shares only writable memory). The timed batch is a private copy."""
    from edgecompress.targets import bench

    np.save(tmp_path / "x.npy", np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    xb = bench._take(mm, n)
    assert xb.shape == (n, 3, 4, 4) and xb.flags.writeable and xb.flags.c_contiguous
    assert not isinstance(xb, np.memmap) and not np.shares_memory(xb, mm)
    assert np.array_equal(xb[0], mm[0]) and np.array_equal(xb[-1], mm[(n - 1) % 2])
    assert bench._take({"a": mm}, n)["a"].flags.writeable


def test_estimate_fills_symbolic_onnx_dims_from_the_known_shape(tmp_path):
    """An .onnx whose H, W are symbolic (an .onnx model in is copied as it is) read as 1 x 1
    images: its estimate was far below the fixed-dims file's. With the model's known shape it is
    the fixed file's, layers and MACs alike."""
    import onnx
    import torch

    from edgecompress.targets import get_target
    from edgecompress.targets.estimate import estimate_artifact, layers_from_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    fixed, symbolic = tmp_path / "fixed.onnx", tmp_path / "symbolic.onnx"
    x = torch.randn(1, 3, 64, 64)
    torch.onnx.export(net, (x,), str(fixed), input_names=["x"], dynamo=False)
    torch.onnx.export(net, (x,), str(symbolic), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    dims = onnx.load(str(symbolic)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]
    profile = get_target("rpi5")
    want = estimate_artifact(fixed, "onnx", "fp32", profile, 1)
    unknown = estimate_artifact(symbolic, "onnx", "fp32", profile, 1)
    known = estimate_artifact(symbolic, "onnx", "fp32", profile, 1, [(1, 3, 64, 64)])
    macs = [r["runtime"]["settings"]["macs"] for r in (want, unknown, known)]
    assert macs[1] < macs[0] / 100 and macs[2] == macs[0]
    assert known["latency_ms"]["1"]["p50"] == want["latency_ms"]["1"]["p50"] > unknown["latency_ms"]["1"]["p50"]
    assert len(layers_from_onnx(symbolic, [(1, 3, 64, 64)])) == len(layers_from_onnx(fixed)) == 3
