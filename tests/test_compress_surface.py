"""`edgecompress compress` words its errors on a surface of its own (errors.py, "compress").

compress builds a recipe from its flags and runs it; the recipe runner keeps that surface, so a
message names compress's flag where a recipe names its key (`--export onnx:fp16`, not `export:
onnx:fp16` nor export's `--format onnx:fp16`; `--prune`, not `passes[0].prune.ratio`). The words
come from where each message is built, not from rewriting the finished text, so a message worded
after the rewrite was written still names the flag. Every error of the recipe compress checks,
loads and runs, and of its measuring flags, starts with `compress:` as a recipe's start with its file.
"""

from __future__ import annotations

import re

import pytest

from edgecompress.errors import ConfigError, DataError, on_surface, opt, option, say, surface, use_format
from tests.conftest import ROOT, run_cli

LEAK = re.compile(r"\b(options|data|passes)[.\[]|(^|: )(export|target|model): |--format|--int8|Input should"
                  r"|a recipe")


def test_compress_surface_names_compress_flags():
    from edgecompress.errors import pass_key, recipe_key

    with on_surface("compress"):
        assert opt("--format", "formats", "onnx:fp16") == "--export onnx:fp16"
        assert opt("--threads", "threads", 4096) == "--threads 4096"
        assert opt("--calib", "calib") == "--calib"
        assert opt("--allow-mixed", "allow_mixed") == "--allow-mixed"
        assert opt("--out", "out_dir", "x") == "--out x"  # no recipe key: compress's flag as export's
        assert option("--fail-on", "fail_on") == "--fail-on"
        assert option("--format", "formats") == "--export"
        assert use_format("onnx") == "--export onnx"
        assert say("--format", "formats") == "--export"
        assert say("pass --train", "pass data=", "set data.train") == "pass --train"
        assert say("drop that --format", "drop it from formats", "drop it from export", "drop that -f") == \
            "drop that -f"
        assert recipe_key("options.batch[0]") == "--batch" and recipe_key("data.eval") == "--eval"
        assert pass_key(0, "prune", {"ratio": 0.5}, "ratio") == "--prune"
        assert pass_key(1, "prune", {"target_macs": 0.3}) == "--prune-macs"
        assert pass_key(0, "prune", {"method": "block", "blocks": 2}) == "--prune-blocks"
        assert pass_key(0, "lowrank", {"param_budget": 0.5}, "param_budget") == "--lowrank-params"
        assert pass_key(0, "prune", {"ratio": 0.5}, "finetune_epochs") == "--prune: finetune_epochs"
    # the other surfaces as they were
    for which, want in (("cli", "--format onnx:fp16"), ("recipe", "export: onnx:fp16"),
                        ("python", "formats='onnx:fp16'")):
        with on_surface(which):  # type: ignore[arg-type]
            assert opt("--format", "formats", "onnx:fp16", quoted=True) == want
            assert pass_key(1, "prune", {"ratio": 0.5}, "ratio") == "passes[1].prune.ratio"
            assert recipe_key("options.threads") == "options.threads"


def test_one_table_of_compress_flags():
    """Every recipe key of COMPRESS_FLAGS is a recipe key of RECIPE_KEYS (the schema), and every
    compress flag the table names is one compress takes."""
    from typer.main import get_command

    from edgecompress.cli import app
    from edgecompress.errors import COMPRESS_FLAGS, RECIPE_KEYS

    keys = {k.partition(": ")[0] for k in RECIPE_KEYS.values()}
    assert set(COMPRESS_FLAGS) <= keys
    compress = get_command(app).commands["compress"]  # type: ignore[attr-defined]
    takes = {o for p in compress.params for o in p.opts}
    from edgecompress.errors import COMPRESS_PASS_FLAGS

    named = set(COMPRESS_FLAGS.values()) | {f for flags in COMPRESS_PASS_FLAGS.values() for f in flags.values()}
    assert named <= takes, named - takes


def test_recipe_runner_keeps_the_compress_surface():
    """parse_recipe / check set the recipe surface: it overwrote compress's (export: 'coreml',
    passes[0].prune.ratio in compress's errors), and only string replacement turned them back."""
    from edgecompress.errors import on_recipe_surface
    from edgecompress.recipe import _in_pass, parse_recipe

    with on_surface("compress"):
        with on_recipe_surface():
            assert surface() == "compress"
        with pytest.raises(ConfigError, match=r"^compress: --export 'coreml': unknown format"):
            parse_recipe({"model": "zoo:digits-cnn", "export": ["coreml"]}, "compress")
        with pytest.raises(ConfigError, match=r"^compress: --prune: 1\.5 is out of range"):
            parse_recipe({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 1.5}}]}, "compress")
        # a second pass, a prune to a MACs target, a key with no flag of its own
        with pytest.raises(ConfigError, match=r"^compress: --prune-macs: finetune_epochs: -1 is out of range"):
            parse_recipe({"model": "zoo:digits-cnn", "passes": [
                {"lowrank": {"energy": 0.9}}, {"prune": {"target_macs": 0.3, "finetune_epochs": -1}}]}, "compress")
        with pytest.raises(ConfigError, match=r"^compress: --threads: Input should be"):
            parse_recipe({"model": "zoo:digits-cnn", "options": {"threads": "2"}}, "compress")
        with pytest.raises(ConfigError, match=r"^compress: --fail-on 'bogus': expected "):
            parse_recipe({"model": "zoo:digits-cnn", "options": {"fail_on": ["bogus"]}}, "compress")
        e = _in_pass(ConfigError("prune.blocks: only 5 removable blocks"), "compress", 1, "prune",
                     {"method": "block", "blocks": 9})
        assert str(e) == "compress: --prune-blocks: only 5 removable blocks"
        e = _in_pass(DataError("labels bad"), "compress", 0, "distill", {"epochs": 1})
        assert type(e) is DataError and str(e) == "compress: --distill-epochs: labels bad"
        assert surface() == "compress"
    # a recipe keeps its keys, from Python and under the CLI (`edgecompress run`)
    for which in ("python", "cli"):
        with on_surface(which):  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match=r"^recipe: passes\[0\]\.prune\.ratio: 1\.5 is out of range"):
                parse_recipe({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 1.5}}]})
            with pytest.raises(ConfigError, match=r"^recipe: options\.fail_on: 'bogus': expected "):
                parse_recipe({"model": "zoo:digits-cnn", "options": {"fail_on": ["bogus"]}})


def test_report_of_compress_speaks_compress():
    from edgecompress.report import Report

    old = Report(model={"name": "m"}, target="x86-local", artifacts=[], surface="")
    old.command = "edgecompress compress zoo:digits-cnn --prune 0.5 -f onnx"
    assert old.spoken_as() == "compress"
    with on_surface("compress"):
        assert Report(model={"name": "m"}, target="x86-local", artifacts=[]).spoken_as() == "compress"


@pytest.mark.parametrize("args,said", [
    # InputFileError of the recipe's check: as_flags caught ConfigError only ("error: target: ...")
    (["-f", "onnx", "--target", "{tmp}/nope.toml"], "error: compress: --target {tmp}/nope.toml: no such file"),
    # raised while the recipe runs, outside its checks: no `compress:` before
    (["-f", "onnx", "--fail-on", "latency_by_batch.8.p50<1"],
     "error: compress: --fail-on 'latency_by_batch.8.p50<1': batch 8 is not timed; add --batch 8"),
    (["-f", "onnx", "--fail-on", "metrics.top1>0.9", "--target", "rpi5"],
     "error: compress: --fail-on 'metrics.top1>0.9': --target rpi5 is estimated here"),
    (["-f", "onnx", "--warmup", "-1"], "error: compress: --warmup -1: 0 or more"),
    (["-f", "onnx", "--preprocess", "sepia"], "error: compress: --preprocess 'sepia': unknown preprocessing preset"),
    (["-f", "onnx:int8", "--float-first", "99"],
     "error: compress: onnx int8 of digits-cnn: nothing to quantize: --float-first 99 leaves all "),
    # a recipe's words for an .onnx model ("model x.onnx: a recipe runs ...")
    (["{tmp}/m.onnx", "--prune", "0.3"],
     "error: compress: MODEL {tmp}/m.onnx: compress runs PyTorch passes and an fp32 PyTorch reference"),
])
def test_compress_errors_in_its_words(tmp_path, args, said):
    if args[0].endswith(".onnx"):
        import edgecompress as ec

        spec = ec.load_model("zoo:digits-cnn")
        art = ec.export(spec, "onnx", "fp32", tmp_path)
        art.path.rename(tmp_path / "m.onnx")
    args = [a.format(tmp=tmp_path) for a in args]
    model = [] if args[0].endswith(".onnx") else ["zoo:digits-cnn"]
    r = run_cli("compress", *model, *args, "--out", str(tmp_path / "out"), "--no-progress", cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode in (2, 3) and last.startswith(said.format(tmp=tmp_path)), r.stderr[-1500:]
    assert not LEAK.search(last.removeprefix("error: compress: ")), last
