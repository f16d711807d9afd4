"""The `edgecompress` command: a thin layer over the Python API (flags, the rules between them, exit codes).

Heavy libraries are imported inside the commands, so `--help` and `targets` answer at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from edgecompress.errors import COMPRESS_PASS_FLAGS, ConfigError, EdgeCompressError, on_surface
from edgecompress.quiet import setup_cli_process, verbose_requested

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Compress a trained model, export it to ONNX / OpenVINO / TFLite, validate it on edge targets. "
    "Anywhere on the command line: --debug (tracebacks), --verbose (third-party logs).",
)
data_app = typer.Typer(help="Build the small data sets the project ships recipes for.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_DEBUG = False
_ANSWER = None  # the real stdout while a command runs with everything else sent to stderr


class StdoutClosed(EdgeCompressError):
    """The reader of stdout went away before the answer (`| head -0`); the shell's code for SIGPIPE."""

    exit_code = 141


def _answer(text: str) -> None:
    """The command's answer (a report path, a listing) on stdout, where build scripts read it."""
    out = _ANSWER or sys.stdout
    try:
        typer.echo(text, file=out)
    except BrokenPipeError:
        # click turned this into a silent exit 1 after the whole run had completed and written
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # nothing more to flush there
        raise StdoutClosed("stdout was closed before the answer could be written (what the command writes to disk "
                           "is complete)") \
            from None


def _stdout_for_answers(fn):
    """Run a command with stdout sent to stderr, except `_answer`: ORT's calibrators and NNCF's
    progress bars print to stdout. Applied to command bodies only, so `--help` stays on stdout."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        global _ANSWER
        _ANSWER = sys.stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return fn(*args, **kwargs)
        finally:
            _ANSWER = None

    return run


def _cli_words(fn):
    """Run a command with messages naming options by their flags (`--input-shape`); the library's
    default is the Python keyword (`input_shape=`), what an API caller typed."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with on_surface("cli"):
            return fn(*args, **kwargs)

    return run


def _formats_help() -> str:
    """The format registry's table, so `--help` lists what is registered (the registry is light)."""
    from edgecompress.exporters import FORMATS

    return "; ".join(f"{n} ({', '.join(f.precisions)})" for n, f in FORMATS)


FormatOpt = Annotated[list[str], typer.Option(
    "--format", "-f", help=f"Format, or format:precision. Repeatable. Registered: {_formats_help()}.")]
def _expand_user(path: Any) -> Any:
    """`--out '~/x'` (quoted in a build file, so no shell expanded it) made a folder named `~`;
    --calib / --eval paths are expanded too. For path arguments and options (one or a list), and
    a model reference that is a path (`~/m.onnx`; `zoo:NAME` and factories start otherwise)."""
    if isinstance(path, list):
        return [_expand_user(p) for p in path]
    try:
        if isinstance(path, str):
            return str(Path(path).expanduser()) if path.startswith("~") else path
        return path.expanduser() if isinstance(path, Path) else path
    except RuntimeError:  # no HOME and no passwd entry: left as written (the path's own error follows)
        return path


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory for artifacts and reports.",
                                      callback=_expand_user)]
RoundsOpt = Annotated[int, typer.Option(help="Latency rounds: every artifact is timed this many times, interleaved, in fresh processes; each figure is the median of the rounds'.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bars (build logs, CI).")]
FailOnOpt = Annotated[list[str], typer.Option("--fail-on", help=(
    "Gate 'path.metric OP number' that fails the run (exit 4), e.g. 'drift.top1_agreement<0.97'. Repeatable; "
    "a comma separates gates in one value."))]
InputDtypeOpt = Annotated[str | None, typer.Option(help=(
    "What a module:factory model takes: float32, or int64 / int32 ids (token or class indices). Default "
    "float32; int64 for a model whose first layer is an nn.Embedding."))]
AllowMixedOpt = Annotated[bool, typer.Option(help="TFLite int8: accept ops that stay float (a mixed file).")]
NoBiasCorrectionOpt = Annotated[bool, typer.Option("--no-bias-correction", help="int8: keep the biases as calibrated (default: fold each layer's weight-rounding shift into its bias).")]
FloatFirstOpt = Annotated[int | None, typer.Option("--float-first", min=0, help="int8 ONNX / OpenVINO: leave the first N Conv/Gemm/MatMul layers float (default: the zoo entry's measured setting, else 0).")]


def _check_counts(threads: int | None, batch: list[int], runs: int | None, warmup: int | None,
                  rounds: int | None) -> None:
    """The measuring flags by their names (ValidateSettings says "validation settings: runs 0" to
    Python callers, a recipe `options.runs: Input should be ...`); None: not given."""
    for flag, value, low in (("--threads", threads, 1), ("--runs", runs, 1), ("--rounds", rounds, 1),
                             ("--warmup", warmup, 0), *(("--batch", b, 1) for b in batch)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value}: {low} or more")


def _settings(threads: int, batch: list[int], runs: int, warmup: int, rounds: int):
    from edgecompress.targets import ValidateSettings

    _check_counts(threads, batch, runs, warmup, rounds)
    batches = tuple(dict.fromkeys([1, *batch]))
    return ValidateSettings(threads=threads, batches=batches, runs=runs, warmup=warmup, rounds=rounds)


def _summary(report, paths) -> None:
    from edgecompress.report.render import table_rows

    rows = table_rows(report)
    # encoders (issue #6) have no class outputs: their drift column is the embedding cosine
    drift_col = "agreement %" if any(r["agreement %"] != "—" for r in rows) or not rows else "cosine"
    cols = [*(["file"] if rows and "file" in rows[0] else []),
            "format", "precision", "size", "p50 ms", "speed-up", "top-1 %", drift_col, "status"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols), err=True)
    for r in rows:
        typer.echo("  ".join(r[c].ljust(widths[c]) for c in cols), err=True)
    # Sentence encoders on an STS set (issue #6): Spearman x100 and embedding cosine vs fp32.
    if "spearman" in (report.reference or {}):
        typer.echo(f"STS Spearman x100: PyTorch fp32 {100 * report.reference['spearman']:.2f}", err=True)
        for a in report.artifacts:
            if "spearman" in a.get("metrics", {}):
                typer.echo(f"  {a['format']} {a['precision']}: {100 * a['metrics']['spearman']:.2f}"
                           f" (cosine vs fp32 {a.get('drift', {}).get('cosine', float('nan')):.4f})",
                           err=True)
    _answer(str(Path(paths["html"]).resolve()))  # on stdout, for build scripts


def _command_line() -> str:
    """This invocation as a shell line, for the report (argv[0] may be a path to the script)."""
    return "edgecompress " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="zoo:NAME, package.module:factory, file.pt2, file.onnx or a Hugging Face directory (hf:DIR)", callback=_expand_user)],
    format: FormatOpt = ["onnx"],  # noqa: B006 - typer reads the default
    out: OutOpt = Path("edgecompress-out"),
    int8: Annotated[bool, typer.Option("--int8", help="Add int8 (and keep fp32 as the reference).")] = False,
    precision: Annotated[list[str], typer.Option("--precision", "-p", help="fp32, fp16, int8... for every --format")] = [],  # noqa: B006
    calib: Annotated[str | None, typer.Option(help="Calibration data: image folder, labels CSV or .npy/.npz; PATH\\[start:stop] selects rows.")] = None,
    eval: Annotated[str | None, typer.Option("--eval", help="Evaluation data (same forms as --calib).")] = None,
    calib_method: Annotated[str, typer.Option(help=(
        "int8 activation ranges: percentile (default, best agreement), minmax (fastest), entropy. ONNX: ORT's "
        "calibrator of that name; OpenVINO: NNCF's min/max for minmax, its histogram search for the other two; "
        "TFLite full int8: always min/max."))] = "percentile",
    target: Annotated[str, typer.Option(help="Target profile name or .toml file.")] = "x86-local",
    input_shape: Annotated[str | None, typer.Option(help="e.g. 1,3,224,224 (required for module:factory).")] = None,
    input_dtype: InputDtypeOpt = None,
    weights: Annotated[str | None, typer.Option(help="state_dict for a module:factory model (loaded with weights_only=True).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing preset: efficientnet-lite, imagenet, gray-unit.")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads, pinned to the first N of a device's big cores (CPUs 0..N-1 of this machine for x86-local).")] = 1,
    batch: Annotated[list[int], typer.Option(help="Extra batch size to time besides 1. Repeatable.")] = [],  # noqa: B006
    runs: Annotated[int, typer.Option(help="Timed runs per batch size and round.")] = 100,
    warmup: Annotated[int, typer.Option(help="Warm-up runs per batch size.")] = 10,
    rounds: RoundsOpt = 3,
    allow_mixed: AllowMixedOpt = False,
    float_first: FloatFirstOpt = None,
    no_bias_correction: NoBiasCorrectionOpt = False,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Export only.")] = False,
    isolate: Annotated[bool, typer.Option("--isolate", help="Export each artifact in a child process, so repeated exports in one long-lived process keep memory flat; costs a few seconds per artifact.")] = False,
    fail_on: FailOnOpt = [],  # noqa: B006
    no_progress: NoProgressOpt = False,
) -> None:
    """Export MODEL to one or more formats, validate on TARGET, write DIR/report.{json,md,html}."""
    from edgecompress.exporters import CALIB_METHODS, ExportOptions, resolve_formats
    from edgecompress.pipeline import ExportJob, run_export

    if calib_method not in CALIB_METHODS:
        raise ConfigError(f"--calib-method {calib_method!r}: use one of {', '.join(CALIB_METHODS)}")
    pairs = resolve_formats(format, precision, int8)
    job = ExportJob(
        model=model, formats=pairs, out_dir=out, calib=calib, eval=eval, target=target,
        options=ExportOptions(calib_method=calib_method, allow_mixed=allow_mixed, float_first=float_first,
                              isolate=isolate, bias_correction=not no_bias_correction),
        settings=_settings(threads, batch, runs, warmup, rounds), do_validate=not no_validate,
        input_shape=input_shape, input_dtype=input_dtype, weights=weights, preprocess=preprocess,
        command=_command_line(),
        auto_int8=tuple(f.partition(":")[0].strip().lower() for f in format if ":" not in f) if int8 else (),
        progress=not no_progress, fail_on=fail_on,
    )
    report, paths = run_export(job)
    _summary(report, paths)
    failed = [a for a in report.artifacts if a["status"] == "failed"]
    if failed:
        raise typer.Exit(4)
    _raise_failed_gates(report)


def _raise_failed_gates(report) -> None:
    """Exit 4 naming the first failed --fail-on gate (the report's `gates` has them all)."""
    from edgecompress.errors import ValidationError

    bad = [g for g in report.gates if not g["passed"]]
    if bad:
        from edgecompress.targets.gates import gate_failure

        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValidationError(gate_failure(bad[0]) + more)  # worded as validate words it


@app.command()
def demo(
    out: OutOpt = Path("edgecompress-demo"),
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact and round.")] = 100,
    rounds: RoundsOpt = 3,
    no_progress: NoProgressOpt = False,
) -> None:
    """The embedded default: EfficientNet-Lite0 -> int8 ONNX + OpenVINO (+ TFLite), validated here."""
    from edgecompress.exporters import FORMATS, ExportOptions, resolve_formats
    from edgecompress.pipeline import ExportJob, run_export

    # without ../shared/data the zoo entry's default data says which it takes (models/zoo.py)
    formats = [f for f in ("onnx", "openvino", "tflite") if f in FORMATS]
    job = ExportJob(model="zoo:efficientnet-lite0", formats=resolve_formats(formats, int8=True),
                    out_dir=out, options=ExportOptions(),
                    settings=_settings(threads, [], runs, 10, rounds), progress=not no_progress,
                    command=_command_line())
    report, paths = run_export(job)
    _summary(report, paths)


@app.command("validate")
def validate_cmd(
    artifacts: Annotated[list[Path], typer.Argument(
        help="Artifact files and/or export directories (with manifest.json).", callback=_expand_user)],
    target: Annotated[str, typer.Option(
        help="Target profile name or .toml file (see `edgecompress targets`).")] = "x86-local",
    eval: Annotated[str | None, typer.Option(
        "--eval", help="Evaluation data (image folder, labels CSV, .npy/.npz).")] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="A previous report.json: flag regressions over --threshold and --accuracy-threshold.", callback=_expand_user)] = None,
    fail_on: FailOnOpt = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the reports (the artifacts stay where they are).",
                                      callback=_expand_user)] = Path("edgecompress-validate"),
    threshold: Annotated[float, typer.Option(
        help="Relative change of latency, size or peak memory counted as a regression vs --baseline (0.05 = 5 %).")] = 0.05,
    accuracy_threshold: Annotated[float, typer.Option(
        help="Absolute drop of top-1, top-1 agreement or cosine counted as a regression vs --baseline, "
             "a fraction (0.01 = 1 point).")] = 0.01,
    fail_on_regression: Annotated[bool, typer.Option(
        "--fail-on-regression", help="Exit 4 when --baseline finds a regression (CI).")] = False,
    preprocess: Annotated[str | None, typer.Option(
        help="Preprocessing preset for image --eval data.")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads, pinned to the first N of a device's big cores (CPUs 0..N-1 of this machine for x86-local).")] = 1,
    batch: Annotated[list[int], typer.Option(help="Extra batch size to time besides 1. Repeatable.")] = [],  # noqa: B006
    runs: Annotated[int, typer.Option(help="Timed runs per batch size and round.")] = 100,
    warmup: Annotated[int, typer.Option(help="Warm-up runs per batch size.")] = 10,
    rounds: RoundsOpt = 3,
    no_progress: NoProgressOpt = False,
) -> None:
    """Validate existing ARTIFACTS on TARGET; write DIR/report.{json,md,html}; apply --fail-on gates."""
    from edgecompress.errors import ValidationError
    from edgecompress.targets.device_report import validate_artifacts

    report, paths, failures = validate_artifacts(
        artifacts, target, out, eval=eval, baseline=baseline, fail_on=fail_on,
        settings=_settings(threads, batch, runs, warmup, rounds), preprocess=preprocess, threshold=threshold,
        accuracy_threshold=accuracy_threshold, progress=not no_progress, command=_command_line(),
        fail_on_regression=fail_on_regression)
    _summary(report, paths)
    for r in report.baseline.get("regressions", []):
        typer.echo(f"regression: {r}", err=True)
    for n in report.baseline.get("notes", []):
        typer.echo(f"note: {n}", err=True)
    if report.baseline.get("missing"):
        miss = report.baseline["missing"]
        typer.echo(f"note: {len(miss)} baseline artifact(s) absent from this run: {', '.join(miss[:4])}"
                   + (", ..." if len(miss) > 4 else ""), err=True)
    if baseline is not None and not report.baseline.get("compared"):
        # "No regression" over nothing compared (a baseline of another target) read as a pass
        typer.echo("note: the baseline shares no comparable artifact and metric with this run; "
                   "nothing was compared", err=True)
    if fail_on_regression and baseline is not None and not report.baseline.get("compared"):
        raise ValidationError(f"--fail-on-regression: the baseline {baseline} shares no comparable artifact "
                              "and metric with this run, so nothing was compared (same --target and formats?)")
    if fail_on_regression and report.baseline.get("regressions"):
        n = len(report.baseline["regressions"])
        raise ValidationError(f"{n} regression(s) against {baseline}: {report.baseline['regressions'][0]}"
                              + (f" (+{n - 1} more)" if n > 1 else ""))
    if failures:
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ValidationError(failures[0] + more)
    if any(a["status"] == "failed" for a in report.artifacts):
        raise typer.Exit(4)


JsonListOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line (for scripts) instead of the table.")]


def _listing(rows: list[dict[str, Any]], as_json: bool) -> None:
    """A listing on stdout: aligned columns sized to their content (the last one free), or JSON lines."""
    try:
        _print_listing(rows, as_json)
    except StdoutClosed:
        raise SystemExit(StdoutClosed.exit_code) from None  # `| head -2` of a listing: silent, as `ls | head`


def _print_listing(rows: list[dict[str, Any]], as_json: bool) -> None:
    import json

    if as_json:
        for row in rows:
            _answer(json.dumps(row))
        return
    # lists joined by "," without spaces, so `awk '{print $3}'` still reads one column
    cells = [[",".join(map(str, v)) if isinstance(v, list) else str(v) for v in row.values()] for row in rows]
    if not cells:
        return
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]) - 1)]
    for r in cells:
        _answer("  ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]]))


@app.command()
def formats(as_json: JsonListOpt = False) -> None:
    """List the export formats and their precisions."""
    from edgecompress.exporters import FORMATS

    _listing([{"name": name, "suffix": f.suffix, "precisions": list(f.precisions), "runtime": f.runtime,
               "description": f.description} for name, f in FORMATS], as_json)


@app.command()
def targets(as_json: JsonListOpt = False) -> None:
    """List the target profiles (built-in ones; pass your own .toml to --target)."""
    from edgecompress.targets.profile import list_targets

    _listing([{"name": name, "isa": t.isa, "runner": t.runner, "formats": list(t.formats),
               "description": t.description} for name, t in list_targets().items()], as_json)


@app.command()
def zoo(as_json: JsonListOpt = False) -> None:
    """List the built-in models."""
    from edgecompress.models.zoo import ZOO

    _listing([{"name": f"zoo:{name}", "input_shape": list(e.input_shape), "task": e.task,
               "description": e.description} for name, e in ZOO], as_json)


@data_app.command("build")
def data_build(out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the built sets.",
                                                 callback=_expand_user)]
               = Path("calibration_data/built")) -> None:
    """Write the project's own sets: digits train/test (.npz) and photo crops (.npz)."""
    import shutil

    from edgecompress.data.builtin import photo_crops_npz
    from edgecompress.fileio import atomic_path, ensure_writable_dir
    from edgecompress.models.digits import digits_npz

    ensure_writable_dir(out)
    for src in (digits_npz("train"), digits_npz("test"), photo_crops_npz()):
        with atomic_path(out / src.name) as tmp:  # a full disk leaves no truncated set
            shutil.copyfile(src, tmp)
        _answer(str(out / src.name))


# --- [issue #4] compression: recipes and common single passes ----------------------------------
def _steps_summary(report) -> None:
    from edgecompress.report.render import _steps_rows

    rows = _steps_rows(report)
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols), err=True)
    for r in rows:
        typer.echo("  ".join(r[c].ljust(widths[c]) for c in cols), err=True)


def _finish(report, paths) -> None:
    _steps_summary(report)
    if report.artifacts:
        _summary(report, paths)
    else:
        _answer(str(Path(paths.get("html", paths.get("json"))).resolve()))
    typer.echo(f"recipe: {paths['recipe']}", err=True)
    if any(a["status"] == "failed" for a in report.artifacts):
        raise typer.Exit(4)
    _raise_failed_gates(report)  # options.fail_on / --fail-on


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see docs/recipes/).", callback=_expand_user)],
    out: OutOpt = Path("edgecompress-out"),
    no_progress: NoProgressOpt = False,
) -> None:
    """Run a recipe: load -> passes -> export -> validate -> report (DIR/report.*, recipe.resolved.yaml)."""
    from edgecompress.recipe import run_recipe

    report, paths = run_recipe(recipe, out, progress=not no_progress,
                               command=_command_line())
    _finish(report, paths)


def _compress_words(fn):
    """Run `compress` with messages naming its own flags (the "compress" surface, errors.py): the
    recipe it builds from them is checked and run in those words (`--export onnx:fp16`, `--prune`,
    `--train`), not the recipe's keys (`export: onnx:fp16`, `passes[0].prune.ratio`, `data.train`)
    nor export's flags (`--format`)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with on_surface("compress"):
            return fn(*args, **kwargs)

    return run


@contextlib.contextmanager
def _said_by(command: str):
    """Errors of the block starting `command: ` (same class, same traceback), as a recipe's errors
    start `recipe r.yaml: `: compress's checks of its flags, and what it checks, loads and runs for
    the recipe it builds from them."""
    try:
        yield
    except EdgeCompressError as e:
        if str(e).startswith(f"{command}:"):
            raise
        raise type(e)(f"{command}: {e}").with_traceback(e.__traceback__) from None


@app.command()
@_compress_words
def compress(
    model: Annotated[str, typer.Argument(help="zoo:NAME, package.module:factory, file.pt2 or a Hugging Face directory (hf:DIR)", callback=_expand_user)],
    prune: Annotated[float | None, typer.Option("--prune", help="Channel pruning ratio (0-1).")] = None,
    prune_macs: Annotated[float | None, typer.Option(
        "--prune-macs", help="Prune to remove this fraction of MACs.")] = None,
    prune_blocks: Annotated[int | None, typer.Option(
        "--prune-blocks", min=1, help="Remove the N shape-preserving blocks that change the outputs least.")] = None,
    prune_method: Annotated[str, typer.Option(
        "--prune-method", help="channel (Torch-Pruning importance) or reconstruct (least-squares refit of "
        "each pruned layer's consumer; needs --train or the model's default data).")] = "channel",
    importance: Annotated[str, typer.Option(help="Pruning importance: magnitude, taylor, bn-scale.")] = "magnitude",
    round_to: Annotated[int | None, typer.Option(help="Keep channel counts multiples of N.")] = None,
    lowrank_energy: Annotated[float | None, typer.Option(
        "--lowrank-energy", help="SVD: kept energy (0-1].")] = None,
    lowrank_params: Annotated[float | None, typer.Option(
        "--lowrank-params", help="SVD: fraction of params to keep.")] = None,
    resolution: Annotated[int | None, typer.Option(
        "--resolution", min=1, help="Run the model on square inputs of this side in pixels (MACs scale "
        "with the area; EfficientNet-Lite0 at 192 px: -26 %).")] = None,
    distill_epochs: Annotated[int, typer.Option(
        "--distill-epochs", help="KD fine-tuning epochs after the passes.")] = 0,
    qat_epochs: Annotated[int | None, typer.Option(
        "--qat-epochs", help="QAT epochs (int8, last; backend litert when every -f is tflite).")] = None,
    export: Annotated[list[str], typer.Option(
        "--export", "-f", help="format:precision, repeatable (onnx:int8).")] = [],  # noqa: B006
    train: Annotated[str | None, typer.Option(help="Fine-tuning data (PATH\\[start:stop]).")] = None,
    calib: Annotated[str | None, typer.Option(help="Calibration data for PTQ exports.")] = None,
    eval: Annotated[str | None, typer.Option("--eval", help="Evaluation data.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="e.g. 1,3,224,224 (module:factory models).")] = None,
    input_dtype: InputDtypeOpt = None,
    weights: Annotated[str | None, typer.Option(help="state_dict for a module:factory model (loaded with weights_only=True).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing preset: efficientnet-lite, imagenet, gray-unit.")] = None,
    target: Annotated[str, typer.Option(help="Target profile.")] = "x86-local",
    float_first: FloatFirstOpt = None,
    no_bias_correction: NoBiasCorrectionOpt = False,
    allow_mixed: AllowMixedOpt = False,
    threads: Annotated[int | None, typer.Option(help="Inference threads when validating (default 1).")] = None,
    batch: Annotated[list[int], typer.Option(help="Extra batch size to time besides 1. Repeatable.")] = [],  # noqa: B006
    runs: Annotated[int | None, typer.Option(help="Timed runs per batch size and round (default 50).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up runs per batch size (default 5).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Interleaved latency rounds (default 3).")] = None,
    fail_on: FailOnOpt = [],  # noqa: B006
    out: OutOpt = Path("edgecompress-out"),
    no_progress: NoProgressOpt = False,
) -> None:
    """Common single passes as flags; writes the equivalent recipe next to the results."""
    from edgecompress.recipe import parse_recipe, run_recipe

    # every error starts `compress: ` (_said_by), as a recipe's start with its file: the checks of
    # the flags here (they had none) as much as what is checked, loaded and run for the recipe built
    with _said_by("compress"):
        passes: list[dict] = []
        pruning = prune is not None or prune_macs is not None
        # flags that only shape --prune / --prune-macs were dropped without a word otherwise
        if round_to is not None and not pruning:
            raise ConfigError("--round-to: needs --prune or --prune-macs")
        if importance != "magnitude" and not pruning:
            raise ConfigError("--importance: needs --prune or --prune-macs")
        if prune_method != "channel" and not pruning:
            raise ConfigError("--prune-method: needs --prune or --prune-macs")
        if importance != "magnitude" and prune_method != "channel":
            raise ConfigError(f"--importance is for --prune-method channel (reconstruct picks channels by the "
                              f"refit's error), got --prune-method {prune_method}")
        if pruning:
            if prune_method not in ("channel", "reconstruct"):
                raise ConfigError(f"--prune-method {prune_method!r}: use channel or reconstruct")
            if prune is not None and prune_macs is not None:  # --prune was silently dropped
                raise ConfigError(f"--prune {prune} and --prune-macs {prune_macs}: give one (a ratio or a MACs target)")
            p: dict = {"round_to": round_to, "method": prune_method}
            if prune_method == "channel":
                p["importance"] = importance
            p.update({"ratio": prune} if prune_macs is None else {"target_macs": prune_macs})
            passes.append({"prune": p})
        if prune_blocks is not None:
            passes.append({"prune": {"method": "block", "blocks": prune_blocks}})
        if lowrank_energy is not None or lowrank_params is not None:
            passes.append({"lowrank": {"energy": lowrank_energy, "param_budget": lowrank_params}})
        if resolution is not None:
            passes.append({"resolution": {"size": resolution}})
        if distill_epochs:
            passes.append({"distill": {"epochs": distill_epochs}})
        if qat_epochs is not None:
            # [issue #4] the QAT backend follows the export formats (tflite -> litert, onnx/openvino -> x86);
            # formats of both backends: x86, and TFLite gets int8 by qat.cross_format's default route, LiteRT
            # PTQ of the float model before QAT (passes/_qat_backends.py)
            from edgecompress.passes._qat_backends import backend_for_format

            fmts = {e.strip().partition(":")[0] for item in export for e in item.split(",") if e.strip()}
            backends = {backend_for_format(f) for f in fmts} - {None}
            passes.append({"qat": {"epochs": qat_epochs, **({"backend": backends.pop()} if len(backends) == 1 else {})}})
        if input_dtype is not None:  # in the flag's words (the recipe's key would say input_dtype)
            from edgecompress.models.spec import check_input_dtype

            input_dtype = check_input_dtype(input_dtype)
        if not passes and not export:
            raise ConfigError("give at least one pass flag (--prune, --prune-blocks, --lowrank-energy, "
                              "--resolution, --distill-epochs, --qat-epochs) or --export")
        from edgecompress.models.loaders import parse_shape

        shape = list(parse_shape(input_shape) or ()) if input_shape else None  # not None for a shape
        # the resolved recipe written into --out holds absolute paths: it reruns from any folder
        from edgecompress.recipe import _paths_from

        # the same model, data and validation flags as export (a factory's --weights was refused as an
        # unknown option, and its random weights were compressed instead); unset ones keep the recipe's
        # defaults, so the written recipe says only what was asked
        _check_counts(threads, batch, runs, warmup, rounds)  # as export words them (not pydantic's text)
        measuring = {"threads": threads, "runs": runs, "warmup": warmup, "rounds": rounds,
                     "batch": batch or None, "fail_on": fail_on or None}
        obj = _paths_from({"model": model, "input_shape": shape, "input_dtype": input_dtype, "weights": weights,
                           "preprocess": preprocess,
                           "passes": passes, "export": export,
                           "target": target, "data": {"train": train, "calib": calib, "eval": eval},
                           "options": {"float_first": float_first, **({"allow_mixed": True} if allow_mixed else {}),
                                       **({"bias_correction": False} if no_bias_correction else {}),
                                       **{k: v for k, v in measuring.items() if v is not None}}}, Path.cwd())

        # checked, loaded and run on the compress surface (_compress_words): its errors name these
        # flags where a recipe's name its keys
        recipe = parse_recipe(obj, "compress")
        report, paths = run_recipe(recipe, out, progress=not no_progress, command=_command_line())
    _finish(report, paths)


# [issue #7] Ctrl-C: one line, exit 130. Files are written via temp names, so nothing half-written
# stays; fine-tuning saves a checkpoint every epoch and the same command resumes from it.
INTERRUPTED = "interrupted: stopped cleanly (nothing half-written; reports and records untouched); rerun the same command"
# only where something trains: `export` and `validate` have nothing to resume
RESUMES = " to resume (fine-tuning restarts from the last checkpoint it kept in --out)"


_TERMINATED = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a cancelled CI job, `timeout`, `docker stop`) stops the run as Ctrl-C does: the
    same cleanup (staging folder, temp files, an --out the run made, bench and export children).
    It killed the process outright before, leaving all of those. A second SIGTERM kills."""
    global _TERMINATED
    _TERMINATED = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


def _stopped() -> None:
    """One line and the shell's code for the signal: 130 for Ctrl-C, 143 for SIGTERM."""
    from edgecompress.fileio import LANDED_WHILE_INTERRUPTED

    trains = bool({"run", "compress"} & set(sys.argv[1:3]))
    line = INTERRUPTED + (RESUMES if trains else " to start again")
    if LANDED_WHILE_INTERRUPTED:  # the signal came while the results were landing: held until done
        line = (f"interrupted: after the run had finished writing {LANDED_WHILE_INTERRUPTED[-1]} (its artifacts, "
                "report and manifest are complete and of this run)")
    typer.echo(line.replace("interrupted:", "terminated (SIGTERM):") if _TERMINATED else line, err=True)
    sys.exit(143 if _TERMINATED else 130)


for _typer in (app, data_app):
    for _info in _typer.registered_commands:
        _info.callback = _cli_words(_stdout_for_answers(_info.callback))


_PASS_FLAG_NAMES = sorted({f for flags in COMPRESS_PASS_FLAGS.values() for f in flags.values()} | {"--train"})
# Options of one command a reader of the README types into the other: click's "Possible options"
# guessed by spelling (`compress --int8` -> "--train", `export --prune` -> "--rounds, --runs").
_WRONG_COMMAND = {
    **{("compress", f): "compress names each file as format:precision with -f / --export (-f onnx:int8 -f "
       "tflite:int8; --qat-epochs N trains for int8 first)" for f in ("--int8", "--precision", "-p")},
    ("compress", "--format"): "compress spells it --export / -f (format:precision, e.g. -f onnx:int8)",
    **{("export", f): "export runs no compression pass: use 'edgecompress compress MODEL " + f + " ...' (same "
       "model, data and measuring flags) or a recipe with 'edgecompress run'" for f in _PASS_FLAG_NAMES},
    **{("run", f): "run takes everything from the recipe (export:, data:, options:); only --out and "
       "--no-progress are flags" for f in ("-f", "--format", "--export", "--int8", "--calib", "--eval", "--train",
                                           "--target", "--threads", "--fail-on")},
}


def _raised_in(e: BaseException, function: str) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def _empty_argument(args: list[str]) -> str | None:
    """The error for an empty argument (`--weights "$W"` with W unset): `--weights ''` was taken as
    no weights (an untrained model shipped, exit 0) and `--out ''` as the current directory."""
    for i, a in enumerate(args):
        if a.startswith("--") and a.endswith("=") and len(a) > 3:
            return f"{a[:-1]} '': empty value (an unset variable in the build script?)"
        if a == "":
            if i and args[i - 1].startswith("-"):
                return f"{args[i - 1]} '': empty value (an unset variable in the build script?)"
            return "empty argument '' (an unset variable in the build script?)"
    return None


def main() -> None:
    """Entry point: one-line errors and meaningful exit codes instead of tracebacks."""
    global _DEBUG
    _DEBUG = "--debug" in sys.argv or os.environ.get("EDGECOMPRESS_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    if ("--help" in sys.argv or "-h" in sys.argv) and not os.environ.get("COLUMNS") and not sys.stdout.isatty():
        # piped or logged, rich lays help out at 80 columns and cut the longest option texts with
        # "…" (the --fail-on example, --weights' weights_only=True)
        os.environ["COLUMNS"] = "110"
    if (empty := _empty_argument(sys.argv[1:])) is not None:
        typer.echo(f"error: {empty}", err=True)
        sys.exit(ConfigError.exit_code)
    setup_cli_process(verbose_requested(sys.argv))
    if "--no-progress" in sys.argv:
        # transformers' "Loading weights" bar (and huggingface_hub's): read as they are imported,
        # here and in the export children, which the flag's `progress=False` does not reach
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        # [issue #7] Outside standalone mode typer RETURNS the code of `typer.Exit(n)` (failed
        # artifacts: 4) and turns Ctrl-C into Exit(130) the same way; ignoring it exited 0.
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            rv = app(standalone_mode=False, prog_name="edgecompress")
        except SystemExit as e:
            # A closed stdout while the help prints (`--help | head -1`): rich (typer's help)
            # raises SystemExit(1) from Console.on_broken_pipe, click wraps stdout in its
            # PacifyFlushWrapper and exits 1. Both read as a failure: exit as a program killed by
            # SIGPIPE does (141), silently, as `git log | head -1` does.
            if e.code == 1 and (_raised_in(e, "on_broken_pipe") or type(sys.stdout).__name__ == "PacifyFlushWrapper"):
                raise SystemExit(StdoutClosed.exit_code) from None
            raise
        if rv == 130:
            _stopped()
        if isinstance(rv, int) and rv != 0:
            sys.exit(rv)
    except EdgeCompressError as e:
        if _DEBUG:  # the traceback, and still the error's exit code (a bare raise exited 1)
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _stopped()
    except Exception as e:  # click usage errors and the like
        # typer 0.29 vendors click (typer._click): its usage errors are not click's classes, so
        # they are recognised by what they offer. An unknown option printed a traceback before.
        usage: Any = e  # duck-typed: what it offers is checked here
        if callable(getattr(usage, "show", None)) and isinstance(getattr(usage, "exit_code", None), int):
            if type(usage).__name__ == "NoArgsIsHelpError" or not callable(getattr(usage, "format_message", None)):
                usage.show()  # a bare `edgecompress data`: the help is the answer
            else:
                # One line like every other error (click's usage block was four).
                ctx = getattr(usage, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                said = _WRONG_COMMAND.get((str(getattr(ctx, "info_name", "")), str(getattr(usage, "option_name", ""))))
                message = f"No such option: {usage.option_name}: {said}" if said else usage.format_message()
                typer.echo(f"error: {message.rstrip('.')}{hint}", err=True)
            sys.exit(usage.exit_code)
        if type(e).__name__ == "Abort":  # click / typer turn Ctrl-C into Abort
            _stopped()
        raise


if __name__ == "__main__":
    main()
