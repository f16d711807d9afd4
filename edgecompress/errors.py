"""Errors users see. Each carries a one-line message naming the culprit (file, option, layer, op).

The CLI prints `error: <message>` and exits with the class's `exit_code`; nothing else is shown
unless `--debug` is given.

One set of internals serves the CLI and the Python API, so a message names an option the way the
caller spelled it: `opt("--input-shape", "input_shape", "'1,x'")` is `--input-shape '1,x'` while
the CLI runs a command (`on_surface("cli")`, set by cli.py) and `input_shape='1,x'` otherwise.
A recipe (`edgecompress run r.yaml`, `run_recipe`) has a third spelling, its YAML keys: the recipe
runner sets `on_surface("recipe")` while it checks, loads and runs the recipe, and the same call
reads `input_shape: [1, 3, 8, 8]`; `RECIPE_KEYS` gives each flag's key (`--calib` -> `data.calib`).
`edgecompress compress` has a fourth, its own flags: it builds a recipe from them and runs it under
`on_surface("compress")`, which the recipe runner keeps (`on_recipe_surface`), so the same call
reads `--export onnx:fp16` where export says `--format onnx:fp16` and a recipe `export: onnx:fp16`.
`COMPRESS_FLAGS` gives compress's flag for each recipe key, `COMPRESS_PASS_FLAGS` for each pass
parameter (`passes[0].prune.ratio` -> `--prune`, said by `pass_key`); `recipe_key` names a recipe
key path (pydantic's) on the surface.
`option()` is a name alone, for a heading (`Gates (fail_on)`, where `opt`'s `fail_on=` dangles);
`use_format()` is advice to export another format, as the caller asks for formats.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Literal

Surface = Literal["python", "cli", "recipe", "compress"]
# Python unless the CLI says otherwise: a notebook never sees a flag it did not type
_SURFACE: ContextVar[Surface] = ContextVar("edgecompress_surface", default="python")

# The recipe key that sets what each CLI flag sets (the recipe schema, edgecompress/recipe.py): an
# option named under the recipe surface is named by it. A value-less flag maps to the key with the
# value that turns it on. A flag missing here has no recipe key: `opt` falls back to the Python keyword.
RECIPE_KEYS: dict[str, str] = {
    "--input-shape": "input_shape", "--input-dtype": "input_dtype", "--weights": "weights",
    "--preprocess": "preprocess", "--format": "export", "--target": "target",
    "--train": "data.train", "--calib": "data.calib", "--eval": "data.eval",
    "--calib-method": "options.calib_method", "--float-first": "options.float_first",
    "--no-bias-correction": "options.bias_correction: false",
    "--allow-mixed": "options.allow_mixed: true", "--isolate": "options.isolate: true",
    "--no-validate": "options.validate_artifacts: false", "--threads": "options.threads",
    "--runs": "options.runs", "--warmup": "options.warmup", "--rounds": "options.rounds",
    "--batch": "options.batch", "--fail-on": "options.fail_on",
}

# `edgecompress compress`'s flag for each recipe key it sets (the recipe it builds from its flags):
# an option named under the compress surface is named by it. The two commands share their flags, so
# this is RECIPE_KEYS turned around (a value-less flag's key without its value: options.allow_mixed),
# except that compress asks for formats with --export and has no --calib-method, --isolate or
# --no-validate (it never sets those keys; `_compress_flag` names them by export's flag).
_EXPORT_ONLY = ("--format", "--calib-method", "--isolate", "--no-validate")
COMPRESS_FLAGS: dict[str, str] = {key.partition(": ")[0]: flag for flag, key in RECIPE_KEYS.items()
                                  if flag not in _EXPORT_ONLY} | {"export": "--export"}
# compress's flag for each parameter of a pass it builds (`passes[i].prune.ratio` is `--prune`)
COMPRESS_PASS_FLAGS: dict[str, dict[str, str]] = {
    "prune": {"ratio": "--prune", "target_macs": "--prune-macs", "blocks": "--prune-blocks",
              "method": "--prune-method", "importance": "--importance", "round_to": "--round-to"},
    "lowrank": {"energy": "--lowrank-energy", "param_budget": "--lowrank-params"},
    "resolution": {"size": "--resolution"},
    "distill": {"epochs": "--distill-epochs"},
    "qat": {"epochs": "--qat-epochs"},
}


def surface() -> Surface:
    """The surface messages are worded for: "cli" while a CLI command runs, "recipe" while the
    recipe runner checks / runs a recipe, "compress" while `edgecompress compress` runs (its
    recipe too), else "python"."""
    return _SURFACE.get()


@contextlib.contextmanager
def on_surface(which: Surface) -> Iterator[None]:
    """Word messages for `which` inside the block (the CLI around a command; the recipe runner
    around checking, loading and running a recipe)."""
    token = _SURFACE.set(which)
    try:
        yield
    finally:
        _SURFACE.reset(token)


@contextlib.contextmanager
def on_recipe_surface() -> Iterator[None]:
    """The recipe runner's words inside the block: the recipe's keys, except for the recipe
    `edgecompress compress` built from its flags, which keeps the compress surface (its flags)."""
    with on_surface("compress" if _SURFACE.get() == "compress" else "recipe"):
        yield


def _compress_flag(flag: str, key: str | None = None) -> str:
    """compress's flag for export's `flag` (recipe key `key`, default RECIPE_KEYS[flag]): `--export`
    for `--format`, `--threads` for `--threads`; `flag` itself for one of no recipe key (`--out`)
    or of a key compress never sets (`--calib-method`)."""
    key = (key or RECIPE_KEYS.get(flag, "")).partition(": ")[0]
    return COMPRESS_FLAGS.get(key, flag)


def say(cli: str, python: str, recipe: str | None = None, compress: str | None = None) -> str:
    """`cli` under the CLI, `python` from Python, `recipe` under a recipe, `compress` under
    `edgecompress compress`: for advice whose wording differs beyond an option name (`drop
    --no-validate` / `set do_validate=True` / `set options.validate_artifacts: true`). Without
    `recipe`, a recipe reads the recipe key of `cli` when `cli` is a bare flag of RECIPE_KEYS, else
    the Python wording; without `compress`, compress reads compress's flag for a bare flag
    (`--format` -> `--export`), else `cli` (the two commands share their other flags)."""
    which = _SURFACE.get()
    if which == "cli":
        return cli
    if which == "recipe":
        return recipe if recipe is not None else RECIPE_KEYS.get(cli, python)
    if which == "compress":
        return compress if compress is not None else _compress_flag(cli)
    return python


def opt(flag: str, keyword: str, value: object = None, quoted: bool = False, key: str | None = None) -> str:
    """An option as the caller spelled it: `--flag VALUE` under the CLI, `keyword=VALUE` from
    Python, `key: VALUE` in a recipe (`--flag` / `keyword=` / `key` without a value). `value` is
    shown as given on every surface; `quoted`: a string argument (a path, a name), in quotes from
    Python (`fmt='onnx'`), bare on the command line (`--format onnx`) and in YAML (`export: onnx`).
    `key`: the recipe's key (default: RECIPE_KEYS[flag], else `keyword`). Under compress, its
    flag for that key (`--export onnx` for `--format onnx`)."""
    which = _SURFACE.get()
    if which == "compress":
        flag = _compress_flag(flag, key)
    if which in ("cli", "compress"):
        return flag if value is None else f"{flag} {value}"
    if which == "recipe":
        key = key or RECIPE_KEYS.get(flag) or keyword
        if value is None or ": " in key:  # a value-less flag's key carries its value (allow_mixed: true)
            return key
        return f"{key}: {_yaml(value)}"
    if value is None:
        return f"{keyword}="
    return f"{keyword}={str(value)!r}" if quoted else f"{keyword}={value}"


def option(flag: str, keyword: str, key: str | None = None) -> str:
    """An option's name alone, for a heading or a parenthesis (`Gates (fail_on)`): `--flag` under
    the CLI, the bare `keyword` from Python (`opt`'s `keyword=` dangles there), the recipe key,
    compress's flag."""
    which = _SURFACE.get()
    if which == "cli":
        return flag
    if which == "compress":
        return _compress_flag(flag, key)
    if which == "recipe":
        return key or RECIPE_KEYS.get(flag) or keyword
    return keyword


# The Python parameter formats came in: export()'s `fmt`, or an ExportJob's `formats` (run_export
# sets it around its exports), so advice to use another format names the parameter the caller has.
_FORMATS_KEYWORD: ContextVar[str] = ContextVar("edgecompress_formats_keyword", default="fmt")


@contextlib.contextmanager
def formats_given_as(keyword: str) -> Iterator[None]:
    """Inside the block, Python advice names formats by `keyword` ("fmt" or "formats")."""
    token = _FORMATS_KEYWORD.set(keyword)
    try:
        yield
    finally:
        _FORMATS_KEYWORD.reset(token)


def formats_keyword() -> str:
    """The Python parameter formats came in ("fmt": export(); "formats": an ExportJob)."""
    return _FORMATS_KEYWORD.get()


def use_format(name: str, keyword: str | None = None) -> str:
    """Advice to export format `name` instead, as the caller asks for a format: `--format onnx`
    (CLI), `fmt='onnx'` (export()) or `formats=['onnx']` (an ExportJob; `keyword`: which, default
    `formats_keyword()`), `` `onnx` in export `` (a recipe's list), `--export onnx` (compress)."""
    which = _SURFACE.get()
    if which == "cli":
        return f"--format {name}"
    if which == "compress":
        return f"{COMPRESS_FLAGS['export']} {name}"
    if which == "recipe":
        return f"`{name}` in export"
    keyword = keyword or _FORMATS_KEYWORD.get()
    return f"{keyword}={[name]!r}" if keyword == "formats" else f"{keyword}={name!r}"


def recipe_key(key: str) -> str:
    """A recipe key path as pydantic or a check gives it (`options.threads`, `options.batch[0]`,
    `data.calib`), named on the surface: compress's flag for it under compress (`--threads`,
    `--batch`, `--calib`), else as it is."""
    if _SURFACE.get() != "compress":
        return key
    return COMPRESS_FLAGS.get(key.partition("[")[0], key)


def compress_pass_flag(name: str, params: Mapping[str, Any] | None = None) -> str:
    """The compress flag that asked for a pass item of `name` with `params` (`--prune-macs` for a
    prune to a MACs target, `--prune-blocks` for method block)."""
    params = params or {}
    if name == "prune":
        return "--prune-blocks" if params.get("method") == "block" else \
            "--prune-macs" if params.get("target_macs") is not None else "--prune"
    if name == "lowrank":
        return "--lowrank-energy" if params.get("energy") is not None else "--lowrank-params"
    return next(iter(COMPRESS_PASS_FLAGS.get(name, {}).values()), name)


def pass_key(i: int, name: str, params: Mapping[str, Any] | None = None, key: str = "") -> str:
    """Pass item `i` (`name` with `params`) of a recipe, or its parameter `key`, as the caller set
    it: `passes[1].prune` / `passes[1].prune.ratio` in a recipe and from Python; under compress the
    flag that sets the parameter (`--prune`), and for the item as a whole the flag that asked for
    it (`--prune-macs`), followed by a parameter compress has no flag for (`--prune: ignored`)."""
    if _SURFACE.get() != "compress":
        return f"passes[{i}].{name}" + (f".{key}" if key else "")
    flag = COMPRESS_PASS_FLAGS.get(name, {}).get(key)
    if flag is not None:
        return flag
    whole = compress_pass_flag(name, params)
    return f"{whole}: {key}" if key else whole


def did_you_mean(name: object, known: Iterable[str], cutoff: float = 0.75) -> str:
    """"; did you mean 'x'?" for a near miss of `name` among `known`, else "": one wording for every
    unknown name (registries, precisions, gate paths, target profiles and their keys). Beyond
    difflib: a name whose dash-separated words are swapped (`int8-dynamic` / `dynamic-int8`, ONNX's
    and TFLite's spellings of one precision), which difflib scores low; and case aside (`SSH` means
    ssh, `Big-Cores` big_cores), the hint spelt as known. `cutoff`: difflib's, 0-1; a lower one
    reaches further (a profile key `hostname` is 0.67 from `host`)."""
    import difflib

    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    text = str(name)
    swapped = "-".join(reversed(text.split("-")))
    if swapped != text and swapped in by_lower.values():
        close = swapped
    else:
        near = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=cutoff)
        close = by_lower[near[0]] if near else ""
    return f"; did you mean {close!r}?" if close and close != text else ""


def _yaml(value: object) -> str:
    """`value` as a recipe writes it: true / false for a bool, the rest as given."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def named(noun: str, value: object) -> str:
    """A positional argument as the caller gave it: its usage word under the CLI (`MODEL x.pt`,
    `ARTIFACT m.onnx`; compress's too), the recipe key in a recipe (`model: x.pt`), the noun and
    the value in quotes from Python (`model 'x.pt'`)."""
    return say(f"{noun.upper()} {value}", f"{noun.lower()} {str(value)!r}", f"{noun.lower()}: {value}")


class EdgeCompressError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it one line: build logs and CI annotations show the first line only.
        super().__init__(" ".join(str(message).split()))


class InputFileError(EdgeCompressError):
    """A file the user named is missing, unreadable or corrupt."""


class ModelLoadError(EdgeCompressError):
    """The model could not be built or loaded (bad factory, weights, checkpoint)."""


class InputShapeError(EdgeCompressError):
    """The input shape or dtype does not fit the model."""


class DataError(EdgeCompressError):
    """Calibration / evaluation data is empty, unreadable or inconsistent."""


class ConfigError(EdgeCompressError):
    """A flag, recipe or config value is invalid (unknown format, precision, pass, target...)."""


class ExportError(EdgeCompressError):
    """An exporter could not lower the model (unsupported op, dynamic shape...)."""

    exit_code = 3


class RuntimeMissingError(EdgeCompressError):
    """A runtime needed to run an artifact is not installed."""

    exit_code = 3


class ValidationError(EdgeCompressError):
    """Running an artifact on a target failed, or a gate (--fail-on) was not met."""

    exit_code = 4


class DeviceError(ValidationError):
    """The target device cannot be reached or used (connection, authentication, host key, no phone
    attached, no temp dir). Exit 3, as a missing runtime: CI reads 4 as "the model failed", and an
    offline Pi read as a regression. validate() stops at it rather than failing every artifact."""

    exit_code = 3


class OutputError(EdgeCompressError):
    """The output location cannot be written (permissions, full disk, path escapes DIR)."""


def first_line(e: BaseException, limit: int | None = 200, empty: str | None = None) -> str:
    """The first line of `e`'s message, cut to `limit` characters (None: whole), for a one-line
    error that quotes its cause; for a message-less exception, `empty` (default: its type name)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__ if empty is None else empty
    return text.splitlines()[0][:limit]
