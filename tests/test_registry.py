"""Registries: plugins outside the tree through entry points, a broken module skipped and named, and
a registered pass that keeps no record of its own runs in a recipe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecompress.errors import ConfigError
from edgecompress.registry import Registry


def _plugin(root: Path, group: str, modules: dict[str, str]) -> None:
    """An installed distribution (a dist-info folder on sys.path) naming `modules` in `group`."""
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    info = root / "ec_audit_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ec-audit-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{m} = {m}\n" for m in modules))


def test_entry_point_modules_register_and_a_broken_one_is_named(tmp_path, monkeypatch, capsys):
    reg: Registry[int] = Registry("widget", group="edgecompress.test_widgets")
    monkeypatch.setattr(sys.modules[__name__], "REG", reg, raising=False)
    _plugin(tmp_path, "edgecompress.test_widgets", {
        "ec_widget_ok": f"import {__name__} as t\nt.REG.register('blue', 7)\n",
        "ec_widget_broken": "import not_an_installed_package_xyz\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reg.names() == ["blue"] and reg.get("blue") == 7
    assert "note: widget module ec_widget_broken failed to load (ModuleNotFoundError" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"unknown widget 'red' \(known: blue; failed to load: "
                                          r"ec_widget_broken \(ModuleNotFoundError"):
        reg.get("red")


def test_an_entry_point_may_name_a_function_that_registers(tmp_path, monkeypatch):
    """`name = "pkg.mod:register"` imported the module and never called register (the plugin was
    silently missing)."""
    reg: Registry[int] = Registry("gadget", group="edgecompress.test_gadgets")
    monkeypatch.setattr(sys.modules[__name__], "GREG", reg, raising=False)
    (tmp_path / "ec_gadget.py").write_text(f"import {__name__} as t\ndef register():\n    t.GREG.register('g', 1)\n")
    info = tmp_path / "ec_gadget-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ec-gadget\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgecompress.test_gadgets]\ng = ec_gadget:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reg.names() == ["g"] and not reg.failed


def test_the_cli_sees_a_plugin_pass_and_survives_a_broken_format(tmp_path):
    """One new file outside the tree plus its entry point: the CLI lists it. A format plugin that
    fails to import no longer takes `--help` and every command down."""
    _plugin(tmp_path, "edgecompress.passes", {"ec_noop_pass": """
        from dataclasses import dataclass
        from edgecompress.passes import PassInfo, register_pass

        @dataclass
        class NoopConfig:
            pass

        register_pass(PassInfo("noop", NoopConfig, lambda spec, config=None, **kw: spec, "does nothing"))
    """})
    (tmp_path / "ec_audit_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[edgecompress.passes]\nec_noop_pass = ec_noop_pass\n[edgecompress.formats]\nec_bad_format = ec_bad_format\n")
    (tmp_path / "ec_bad_format.py").write_text("raise RuntimeError('this plugin is broken')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = "from edgecompress.passes import PASSES; print(PASSES.names())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "'noop'" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "--help"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "onnx" in r.stdout, r.stderr[-2000:]
    assert "note: format module ec_bad_format failed to load (RuntimeError: this plugin is broken); skipped" \
        in r.stderr


def test_a_registered_pass_without_a_record_of_its_own_runs_in_a_recipe(tmp_path):
    """The recipe runner read the last pass record: a pass handing back an empty record list raised
    IndexError (a traceback from `edgecompress run`), and one keeping the list as it was got the
    previous pass's log."""
    from dataclasses import dataclass

    from edgecompress.passes import PASSES, PassInfo, register_pass
    from edgecompress.recipe import run_recipe

    @dataclass
    class Cfg:
        pass

    register_pass(PassInfo("test-keeps-records", Cfg, lambda spec, config=None, **kw: spec))
    register_pass(PassInfo("test-empties-records", Cfg,
                           lambda spec, config=None, **kw: spec.replace(extra={**spec.extra, "passes": []})))
    try:
        report, _ = run_recipe({"model": "zoo:digits-cnn", "passes": [
            {"prune": {"ratio": 0.25}}, {"test-keeps-records": {}}, {"test-empties-records": {}}],
            "options": {"progress": False}}, tmp_path)
    finally:
        PASSES._items.pop("test-keeps-records")
        PASSES._items.pop("test-empties-records")
    names = [s["name"] for s in report.steps]
    assert names == ["original", "prune", "test-keeps-records", "test-empties-records", "chain total"]
    assert report.steps[1].get("log")  # prune's own record
    assert report.steps[2].get("log") is None and report.steps[3].get("log") is None


@pytest.mark.parametrize("structural", [True, False])
def test_a_structural_plugin_pass_defers_the_module_name_checks(structural):
    """`wrap` (a plugin renaming modules) then `prune: {ignored: [a name wrap creates]}` was refused
    up front; a plugin that declares structural=True now defers the later checks to run time."""
    from dataclasses import dataclass

    from edgecompress.models import load_model
    from edgecompress.passes import PASSES, PassInfo, register_pass
    from edgecompress.recipe import _check_module_names, parse_recipe

    @dataclass
    class Cfg:
        pass

    register_pass(PassInfo("test-wrap", Cfg, lambda spec, config=None, **kw: spec, structural=structural))
    try:
        recipe = parse_recipe({"model": "zoo:digits-cnn", "passes": [
            {"test-wrap": {}}, {"prune": {"ratio": 0.25, "ignored": ["wrapped.fc2"]}}]})
        module = load_model("zoo:digits-cnn").module
        if structural:
            _check_module_names(recipe, recipe.pass_configs(), module)
        else:
            with pytest.raises(ConfigError, match=r"passes\[1\]\.prune\.ignored: model has no module 'wrapped.fc2'"):
                _check_module_names(recipe, recipe.pass_configs(), module)
    finally:
        PASSES._items.pop("test-wrap")


def test_a_plugin_runner_declares_its_connection_keys(tmp_path):
    """A profile of a plugin runner loaded any [connection] key (`hostt` silently); a runner that
    declares `connection_keys` gets the built-in runners' typo check."""
    from edgecompress.targets import get_target
    from edgecompress.targets.runners import RUNNERS

    class Echo:
        def __init__(self) -> None:
            self.connection_keys = {"host": None, "port": lambda v: None if isinstance(v, int) else "a port number"}

    RUNNERS.register("test-echo", Echo())
    try:
        path = tmp_path / "box.toml"
        rpi5 = (Path(__file__).parents[1] / "targets" / "profiles" / "rpi5.toml").read_text()
        head, _, rest = rpi5.partition("[connection]")
        body = rest.split("\n[", 1)[1]
        path.write_text(head.replace('runner = "ssh"', 'runner = "test-echo"')
                        + '[connection]\nhostt = "box.local"\n\n[' + body)
        with pytest.raises(ConfigError, match=r"\[connection\] hostt: unknown key \(known: .*\); "
                                              r"did you mean 'host'\?$"):
            get_target(str(path))
        path.write_text(path.read_text().replace("hostt", "host"))
        assert get_target(str(path)).connection == {"host": "box.local"}
        path.write_text(path.read_text().replace('host = "box.local"', 'port = "22"'))
        with pytest.raises(ConfigError, match=r"port = '22': must be a port number"):
            get_target(str(path))
    finally:
        RUNNERS._items.pop("test-echo")


def test_a_plugin_runner_says_whether_its_device_is_attached():
    """runner_name_for asks the runner (`attached(profile)`), not a list of runner names: a plugin
    device that is not there is estimated, as an ssh profile without a host is."""
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.runners import RUNNERS
    from edgecompress.targets.runners.estimate import runner_name_for

    class Board:
        here = False

        def attached(self, profile):
            return self.here

    board = RUNNERS.register("test-board", Board())
    try:
        prof = TargetProfile("b", "", "aarch64", "test-board", ["onnxruntime"], ["onnx"])
        assert runner_name_for(prof) == "estimate"
        board.here = True
        assert runner_name_for(prof) == "estimate"  # decided once per profile object
        prof = TargetProfile("b", "", "aarch64", "test-board", ["onnxruntime"], ["onnx"])
        assert runner_name_for(prof) == "test-board"
        assert runner_name_for(TargetProfile("s", "", "aarch64", "ssh", ["onnxruntime"], ["onnx"])) == "estimate"
    finally:
        RUNNERS._items.pop("test-board")


def test_a_format_reads_its_own_files_precision(tmp_path):
    """validate of a loose file of a plugin format took the precision from the name (an int8
    model.ecx became fp32, and could become the drift reference); Format.read_precision says."""
    import dataclasses

    from edgecompress.exporters import FORMATS, register_format
    from edgecompress.targets.device_report import _guess_precision

    onnx = FORMATS.get("onnx")
    register_format(dataclasses.replace(onnx, name="test-ecx", suffix=".ecx", read_precision=lambda p: "int8"))
    try:
        (tmp_path / "model.ecx").write_bytes(b"x")
        assert _guess_precision(tmp_path / "model.ecx") == "int8"
    finally:
        FORMATS._items.pop("test-ecx")
    assert _guess_precision(tmp_path / "model.ecx") == "fp32"  # no format reads it: the name decides


def test_a_new_runtimes_validation_rules_come_from_its_format_row(tmp_path):
    """validate branched on runtime names ("litert" resizes its inputs, "openvino" gets the fp32
    hint) and the estimate runner mapped runtimes to formats by a table: a format on a new runtime
    says these in its row (resizes_inputs, pins_fp32), and its requests carry the format."""
    import dataclasses

    from edgecompress.exporters import FORMATS, Artifact, TensorInfo, register_format
    from edgecompress.targets import ValidateSettings
    from edgecompress.targets.runners.estimate import _format_of
    from edgecompress.targets.runners.local import BenchRequest
    from edgecompress.targets.validate import fixed_batch

    register_format(dataclasses.replace(FORMATS.get("onnx"), name="test-npu", suffix=".npu", runtime="test-npu-rt",
                                        resizes_inputs=True, pins_fp32=True))
    try:
        art = Artifact(format="test-npu", precision="fp32", path=tmp_path / "m.npu", runtime="test-npu-rt",
                       model_name="m", inputs=[TensorInfo("x", [1, 3, 8, 8])])
        assert fixed_batch(art) is None  # its runtime resizes: every batch asked for is timed
        req = BenchRequest.for_artifact(art, ValidateSettings(batches=(1, 4), openvino_fp32_hint="f32"), inputs=None)
        assert (req.runtime, req.batches, req.precision_hint, req.format) == ("test-npu-rt", (1, 4), "f32", "test-npu")
        assert _format_of(dataclasses.replace(req, format="")) == "test-npu"
    finally:
        FORMATS._items.pop("test-npu")
    onnx = dataclasses.replace(art, format="onnx", runtime="onnxruntime", path=tmp_path / "m.onnx")
    assert fixed_batch(onnx) == 1
    req = BenchRequest.for_artifact(onnx, ValidateSettings(batches=(1, 4)), inputs=None)
    assert (req.batches, req.precision_hint, req.format) == ((1,), None, "onnx")
    for runtime, suffix, fmt in (("onnxruntime", ".onnx", "onnx"), ("openvino", ".xml", "openvino"),
                                 ("litert", ".tflite", "tflite")):  # the estimate runner's old table
        assert _format_of(BenchRequest(artifact=tmp_path / f"m{suffix}", runtime=runtime)) == fmt


def test_remote_runners_copy_the_sibling_files_a_format_names(tmp_path):
    """ssh / qemu copied siblings from a hand-kept {"openvino": (".bin",)}: a new format's extra
    files never reached the device. They now come from the format's row."""
    import dataclasses

    from edgecompress.exporters import FORMATS, register_format
    from edgecompress.exporters.api import sibling_files

    assert sibling_files(tmp_path / "m.xml", "openvino") == [tmp_path / "m.bin"]
    assert sibling_files(tmp_path / "m.onnx", "onnxruntime") == []
    register_format(dataclasses.replace(FORMATS.get("onnx"), name="test-split", suffix=".split",
                                        extra_files=(".weights",)))
    try:
        assert sibling_files(tmp_path / "m.split", "onnxruntime") == [tmp_path / "m.weights"]
    finally:
        FORMATS._items.pop("test-split")


def test_every_precision_a_format_offers_is_estimated_and_guessed(tmp_path):
    """The estimate kept its own precision table without TFLite's `dynamic-int8` (ONNX spells it
    int8-dynamic): every dynamic-int8 .tflite on an estimated target failed. One table now."""
    import dataclasses

    from edgecompress.exporters import FORMATS, register_format
    from edgecompress.targets.device_report import _guess_precision
    from edgecompress.targets.estimate import Layer, estimate_latency
    from edgecompress.targets.profile import get_target

    layers = [Layer("c", "conv", 10**7, 10**5, 10**5, 10**5), Layer("d", "dwconv", 10**6, 10**3, 10**5, 10**5)]
    ms = {p: estimate_latency(layers, get_target("rpi4"), p)["p50"] for _, f in FORMATS for p in f.precisions}
    assert ms["dynamic-int8"] == ms["int8-dynamic"] > 0 and len(set(ms)) == 5
    # a file that cannot be read goes by its name, among its own format's precisions
    assert _guess_precision(tmp_path / "m-dynamic-int8.tflite") == "dynamic-int8"
    assert _guess_precision(tmp_path / "m-int8-dynamic.onnx") == "int8-dynamic"
    assert _guess_precision(tmp_path / "m-dynamic-int8.onnx") == "int8"  # ONNX has no such spelling
    with pytest.raises(ValueError, match=r"unknown precision.*int4.*register_precision"):
        register_format(dataclasses.replace(FORMATS.get("onnx"), name="test-int4", precisions=("fp32", "int4")))
    assert "test-int4" not in FORMATS


def test_a_near_miss_name_gets_a_suggestion():
    """`-f onxx`, `zoo:efficientnet-lite`: the list of known names was there, the likely one was not
    (from Python the option is said as its keyword; the CLI says `--format` the same way)."""
    from edgecompress.exporters.base import FORMATS
    from edgecompress.models.zoo import ZOO

    with pytest.raises(ConfigError, match=r"^fmt='onxx': unknown format \(known: .*\); did you mean 'onnx'\?$"):
        FORMATS.get("onxx", "--format", "fmt")
    with pytest.raises(ConfigError, match=r"did you mean 'efficientnet-lite0'\?$"):
        ZOO.get("efficientnet-lite")
    with pytest.raises(ConfigError) as e:
        FORMATS.get("coreml", "--format", "fmt")
    assert "did you mean" not in str(e.value)  # nothing close: the list alone


def test_one_did_you_mean_for_every_unknown_name():
    """Gates and target profiles had difflib calls and wordings of their own (`(did you mean host? known:
    ...)`, `(did you mean latency_ms.p50?)`): one helper, one wording, their wider cutoff kept."""
    from edgecompress.errors import did_you_mean
    from edgecompress.targets import get_target
    from edgecompress.targets.gates import parse_gates

    assert did_you_mean("hostname", ["host", "port"]) == ""  # 0.67: beyond the registries' 0.75
    assert did_you_mean("hostname", ["host", "port"], cutoff=0.5) == "; did you mean 'host'?"
    assert did_you_mean("SSH", ["ssh", "adb"]) == "; did you mean 'ssh'?"  # case aside, spelt as known
    assert did_you_mean("Big-Cores", ["cores", "big_cores"]) == "; did you mean 'big_cores'?"
    assert did_you_mean("int8-dynamic", ["fp32", "dynamic-int8"]) == "; did you mean 'dynamic-int8'?"
    assert did_you_mean("coreml", ["onnx", "tflite"], cutoff=0.5) == ""
    with pytest.raises(ConfigError, match=r"^target='rpi55': unknown target \(known: .*\); did you mean 'rpi5'\?$"):
        get_target("rpi55")
    with pytest.raises(ConfigError) as e:
        get_target("pdp11")
    assert "did you mean" not in str(e.value)
    with pytest.raises(ConfigError, match=r"a report row has no latency\.p50 \(gate on .*\); did you mean "
                                          r"'latency_ms\.p50'\?$"):
        parse_gates(["latency.p50>1"])
