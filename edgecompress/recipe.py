"""Recipes: a validated YAML description of a whole run, and the runner that executes it.

    model: zoo:digits-cnn
    data: {train: ..., calib: ..., eval: ...}     # optional for zoo models (their defaults)
    passes:
      - prune: {ratio: 0.5, finetune_epochs: 2}
      - distill: {epochs: 2}
      - qat: {epochs: 1}
    export: [onnx:int8, openvino:int8]
    target: x86-local
    options: {calib_method: minmax, runs: 50}

`run_recipe` chains load -> passes -> export -> validate -> report. After every pass it records
params, MACs, state_dict bytes and the eval metric in `Report.steps`, with the three compression
ratios (alpha params, beta MACs, gamma memory; compressed / original) and the metric change
(0-1 scale), per step and for the whole chain. The resolved recipe (every pass with all its
parameters) is written next to the results as `recipe.resolved.yaml`; it loads back unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic import ValidationError as PydanticError

from edgecompress.errors import (
    ConfigError,
    EdgeCompressError,
    InputFileError,
    on_recipe_surface,
    opt,
    option,
    pass_key,
    recipe_key,
    say,
)

if TYPE_CHECKING:
    from edgecompress.exporters import ExportOptions
    from edgecompress.report import Report

RESOLVED_NAME = "recipe.resolved.yaml"


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str | None = None  # fine-tuning / distillation data (default: calib, then the zoo's)
    calib: str | None = None  # exporters' PTQ calibration
    eval: str | None = None


class RecipeOptions(BaseModel):
    # strict: `runs: true` or `threads: "2"` are mistakes, not 1 and 2
    model_config = ConfigDict(extra="forbid", strict=True)
    calib_method: Literal["minmax", "percentile", "entropy"] = "percentile"  # the exporters' default
    float_first: int | None = Field(None, ge=0)  # ONNX / OpenVINO int8: first N conv/linear layers left float
    # int8 exports (ExportOptions.bias_correction, --no-bias-correction), and qat's unless it sets its own
    bias_correction: bool = True
    isolate: bool = False  # [issue #7] each export in a child process (ExportOptions.isolate)
    allow_mixed: bool = False  # TFLite int8: accept ops left float (ExportOptions.allow_mixed, --allow-mixed)
    teacher: Literal["original", "previous"] = "original"  # KD teacher of every pass but qat
    # [issue #4] QAT's teacher: the float model it quantizes ("previous"), so its KD trains int8
    # fidelity. With "original" the QAT epoch of the EfficientNet-Lite0 chain chased the original
    # model instead: agreement with the float model before int8 96.8 % vs 98.6 % (PTQ 97.6 %).
    qat_teacher: Literal["original", "previous"] = "previous"
    validate_artifacts: bool = True
    threads: int = Field(1, ge=1)
    runs: int = Field(50, ge=1)
    warmup: int = Field(5, ge=0)
    rounds: int = Field(3, ge=1)  # interleaved latency rounds (ValidateSettings.rounds)
    batch: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)  # batch sizes timed besides 1
    fail_on: list[str] = Field(default_factory=list)  # --fail-on gates: exit 4 when one fails
    torch_threads: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)  # torch.manual_seed: a larger one was a traceback
    progress: bool = True

    @field_validator("fail_on")
    @classmethod
    def _gates_parse(cls, v: list[str]) -> list[str]:
        """A malformed gate fails when the recipe is read, not after the passes trained."""
        from edgecompress.targets.gates import parse_gates

        try:
            with on_recipe_surface():
                parse_gates(v)
        except ConfigError as e:  # pydantic names the key (options.fail_on) itself; _one_line
            # keeps compress's `--fail-on 'x': ...` as it is
            raise ValueError(str(e).removeprefix("options.fail_on: ")) from None
        return v


class Recipe(BaseModel):
    # strict, as RecipeOptions: `input_shape: ["1", "1", "8", "8"]` or `version: "1"` are mistakes
    model_config = ConfigDict(extra="forbid", strict=True)
    # where it came from ("recipe FILE", "compress"), so an error inside a pass names it too
    _source: str = PrivateAttr(default="recipe")
    version: int = 1
    model: str
    input_shape: list[int] | None = None
    input_dtype: str | None = None  # float32 / int64 / int32: what a module:factory model takes
    weights: str | None = None
    # folder a `module:factory` model is imported from first (default: the recipe file's folder,
    # written into the resolved recipe so it reruns from anywhere)
    model_dir: str | None = None
    preprocess: str | None = None
    data: DataSection = Field(default_factory=DataSection)
    passes: list[dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    export: list[str] = Field(default_factory=list)
    target: str = "x86-local"
    options: RecipeOptions = Field(default_factory=RecipeOptions)

    def __init__(self, /, **data: Any) -> None:
        """`Recipe(...)` built in Python (a public type) fails with a one-line ConfigError, not
        pydantic's multi-line ValidationError. pydantic calls this for `model_validate` too:
        `parse_recipe` re-words the error with its source."""
        try:
            super().__init__(**data)
        except PydanticError as e:
            raise ConfigError(f"Recipe: {_one_line(e)}") from None

    @field_validator("input_shape", mode="before")
    @classmethod
    def _shape_tuple(cls, v: Any) -> Any:
        """A tuple from Python is a shape too (strict mode takes lists only)."""
        return list(v) if isinstance(v, tuple) else v

    @field_validator("input_dtype")
    @classmethod
    def _known_dtype(cls, v: str | None) -> str | None:
        """One of INPUT_DTYPES, named with the choices (pydantic would say only "string")."""
        from edgecompress.models.spec import check_input_dtype

        if v is None:
            return v
        try:
            return check_input_dtype(v, "")
        except ConfigError as e:
            raise ValueError(str(e).strip()) from None

    @field_validator("passes", mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError("expected a list of {pass_name: {params}}")
        out = []
        for i, item in enumerate(v):
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError(f"item {i} must be a one-key mapping like {{prune: {{ratio: 0.5}}}}")
            out.append(item)
        return out

    # --- resolution -----------------------------------------------------------------------------
    def pass_configs(self) -> list[tuple[str, Any]]:
        """(name, validated config dataclass) for every pass; ConfigError names passes[i].name.key
        (compress's flag under the compress surface: errors.pass_key)."""
        from edgecompress.passes import PASSES
        from edgecompress.passes._common import make_config

        out = []
        for i, item in enumerate(self.passes):
            (name, params), = item.items()
            if name not in PASSES:
                raise ConfigError(f"passes[{i}]: unknown pass {name!r} "
                                  f"(known: {', '.join(PASSES.names())}{PASSES.failed_note()})")
            info = PASSES.get(name)
            where = pass_key(i, name, params)
            said = [where]  # the names make_config gave its errors (a compress flag does not start with where)

            def at(key: str, i: int = i, name: str = name, params: Any = params, said: list[str] = said) -> str:
                said.append(pass_key(i, name, params, key))
                return said[-1]

            try:
                cfg: Any = make_config(info.config, params or {}, where, at=at)
            except ConfigError as e:  # a config's own message naming no key: the pass item's
                msg = str(e)
                raise ConfigError(msg if msg.startswith(tuple(said)) else f"{where}: {msg}") from None
            if name == "qat" and not self.options.bias_correction and "bias_correction" not in (params or {}):
                # options.bias_correction: false (--no-bias-correction) turns off QAT's correction
                # too, unless the qat item sets its own: an A/B of the correction covers the chain
                cfg = dataclasses.replace(cfg, bias_correction=False)
            out.append((name, cfg))
        return out

    def check(self) -> Recipe:
        """Everything that can be checked without loading the model, worded with the recipe's keys
        (compress's flags under the compress surface)."""
        with on_recipe_surface():
            return self._check()

    def _check(self) -> Recipe:
        from edgecompress.exporters import resolve_formats

        if self.version != 1:  # the only schema there is; a newer file may mean other things
            raise ConfigError(f"version: {self.version}: this edgecompress reads recipe version 1")

        # each pass config checks its nested `distill:` keys too (passes._common.check_distill)
        configs = self.pass_configs()
        names = [n for n, _ in configs]
        if "qat" in names and names.index("qat") != len(names) - 1:
            raise ConfigError(f"{self._pass_key(names.index('qat'))}: qat must be the last pass "
                              "(its int8 graph cannot be pruned or factorized further)")
        if self.export:
            pairs = resolve_formats(self.export)  # "export: 'coreml': unknown format" (the recipe surface)
            if "qat" in names and any(p != "int8" for _, p in pairs):
                bad = next(f"{f}:{p}" for f, p in pairs if p != "int8")
                raise ConfigError(f"{opt('--format', 'export', bad)} after qat; a QAT model exports as int8 only")
            # [issue #4] formats the QAT backend does not lower get their own PTQ, of the float model
            # before QAT by default (qat.cross_format; _qat_backends.qat_route), calibrated on
            # data.calib or the training data
        if self.export and self.options.validate_artifacts:  # [issue #7] a target typo fails now
            from edgecompress.targets import get_target

            get_target(self.target).check_formats([f for f, _ in resolve_formats(self.export)])
            from edgecompress.targets import ValidateSettings
            from edgecompress.targets.validate import check_threads

            # before the passes train, not after
            check_threads(get_target(self.target), ValidateSettings(threads=self.options.threads))
        if self.options.fail_on and not self.options.validate_artifacts:  # it failed after the passes trained
            raise ConfigError(f"options.fail_on: {self.options.fail_on[0]!r}: gates need measurements; "
                              "set options.validate_artifacts: true")
        if self.input_shape is not None and any(d <= 0 for d in self.input_shape):
            raise ConfigError(f"{option('--input-shape', 'input_shape')}: dimensions must be positive, "
                              f"got {self.input_shape}")
        if self.options.torch_threads is not None:  # as options.threads: 10**9 was a libgomp abort, exit 1
            from edgecompress.targets.validate import usable_cpu_count

            avail = usable_cpu_count()
            if self.options.torch_threads > avail:
                raise ConfigError(f"options.torch_threads: {self.options.torch_threads}: this machine gives "
                                  f"edgecompress {avail} CPU(s); use {avail} or fewer")
        needs_train = [n for n, c in configs if _trains(n, c)]
        if needs_train and not self.model.startswith("zoo:") and not (self.data.train or self.data.calib):
            give = say("pass --train (or --calib)", "set data.train (or data.calib)")
            raise ConfigError(f"{option('--train', 'train')}: pass {needs_train[0]!r} fine-tunes and model "
                              f"{self.model} has no default data; {give}")
        if any(p == "int8" for p in self._precisions()) and "qat" not in names \
                and not self.model.startswith("zoo:") and not (self.data.calib or self.data.train):
            # the runner calibrates on data.calib, else the first 300 training samples
            give = say("pass --calib (or --train", "set data.calib (or data.train")
            raise ConfigError(f"{option('--calib', 'calib')}: int8 export needs calibration data; {give}, "
                              "whose first 300 samples calibrate)")
        return self

    def _pass_key(self, i: int, key: str = "", name: str = "pass") -> str:
        """Pass item `i`, or its parameter `key`, named on the surface (errors.pass_key). `name`: the
        pass's, for a check handed pass configs that are not this recipe's items."""
        params: dict[str, Any] | None = None
        if i < len(self.passes):
            (name, params), = self.passes[i].items()
        return pass_key(i, name, params, key)

    def export_options(self) -> ExportOptions:
        """The exporters' options this recipe sets (what `export`'s flags of the same names set)."""
        from edgecompress.exporters import ExportOptions

        o = self.options
        return ExportOptions(calib_method=o.calib_method, float_first=o.float_first, isolate=o.isolate,
                             allow_mixed=o.allow_mixed, bias_correction=o.bias_correction)

    def _precisions(self) -> list[str]:
        return [e.partition(":")[2] or "fp32" for e in self.export]

    def resolved(self) -> dict[str, Any]:
        """The recipe with every pass's full parameter set (defaults filled in)."""
        d = self.model_dump()
        from edgecompress.passes._common import config_dict

        d["passes"] = [{n: config_dict(c)} for n, c in self.pass_configs()]
        return d


def _in_pass(e: EdgeCompressError, source: str, i: int, name: str,
             params: dict[str, Any] | None = None) -> EdgeCompressError:
    """`e` (same class) naming the recipe and the pass item it came from: "prune.ignored: ..."
    becomes "recipe r.yaml: passes[1].prune.ignored: ..." (with two prune passes it was not
    said which one); under compress, the flag (`--prune-blocks: ...`; errors.pass_key)."""
    msg, where = str(e), pass_key(i, name, params)
    if msg.startswith(where):
        pass
    elif msg.startswith(f"{name}.") and (key := msg[len(name) + 1:].partition(":")[0]) and " " not in key:
        msg = pass_key(i, name, params, key) + msg[len(name) + 1 + len(key):]  # prune.blocks: -> --prune-blocks:
    elif msg.startswith((f"{name}.", f"{name}:", f"{name} ")):
        msg = where + msg[len(name):]
    else:
        msg = f"{where}: {msg}"
    return type(e)(f"{source}: {msg}")


# the recipe keys a loader's message (worded for the recipe) may start with
_MODEL_KEYS = ("model: ", "weights: ", "input_shape: ", "input_dtype: ", "preprocess: ")


def _in_model(e: EdgeCompressError, source: str) -> EdgeCompressError:
    """`e` (same class) from loading the recipe's model, naming the recipe and the key: "model:
    x.pt: no such file" becomes "recipe r.yaml: model: x.pt: no such file", and a message that
    names no key is the model's ("unknown zoo model 'x'" -> "model: unknown zoo model 'x'")."""
    msg = str(e)
    return type(e)(f"{source}: {msg if msg.startswith(_MODEL_KEYS) else f'model: {msg}'}")


@contextlib.contextmanager
def _importable(folder: str | None) -> Any:
    """`folder` first on sys.path while the model loads (a `module:factory` beside the recipe
    imported only when run from the recipe's folder), as it was after."""
    if not folder:
        yield
        return
    saved = list(sys.path)
    cwd = str(Path.cwd())  # kept behind `folder`: the factory loader adds it in front otherwise
    sys.path[:0] = [folder, *([cwd] if cwd not in sys.path else [])]
    try:
        yield
    finally:
        sys.path[:] = saved


def _check_module_names(recipe: Recipe, configs: list[tuple[str, Any]], module: Any) -> None:
    """Module names the passes refer to (prune.ignored / per_layer, lowrank.ignored,
    distill.feature_layers and a pass's nested distill.feature_layers), checked on the loaded
    model before the first pass runs: a typo failed only when its pass started, after the passes
    before it had trained. Only passes that no name-changing pass precedes (lowrank, prune
    method block) are checked here; the others are checked when they run."""
    names = {n for n, _ in module.named_modules()}
    for i, (name, cfg) in enumerate(configs):
        refs: list[tuple[str, str]] = [(f"{name}.ignored", n) for n in getattr(cfg, "ignored", []) or []]
        refs += [(f"{name}.per_layer", n) for n in getattr(cfg, "per_layer", {}) or {}]
        refs += [(f"{name}.feature_layers", n) for n in getattr(cfg, "feature_layers", []) or []]
        nested = getattr(cfg, "distill", None)
        if isinstance(nested, dict):
            refs += [(f"{name}.distill.feature_layers", n) for n in nested.get("feature_layers") or []]
        for key, ref in refs:
            if ref not in names:
                raise ConfigError(f"{recipe._source}: {recipe._pass_key(i, key.partition('.')[2])}: model has no "
                                  f"module {ref!r}")
        if name == "lowrank" or (name == "prune" and getattr(cfg, "method", "") == "block") or _may_restructure(name):
            return


def _check_exports(recipe: Recipe, spec: Any) -> None:
    """What the formats refuse of the loaded model at their precisions (`Format.check_model`: a
    tflite int8 of integer ids), before the passes train rather than at the export after them.
    No pass changes the input's dtype, which is what they look at. A note when allow_mixed is set
    with no tflite int8 to apply to."""
    from edgecompress.exporters import FORMATS, resolve_formats
    from edgecompress.pipeline import note_unused_allow_mixed

    formats = resolve_formats(recipe.export) if recipe.export else []
    # in the run's words (_words): options.allow_mixed: true, or compress's --allow-mixed
    note_unused_allow_mixed(formats, recipe.export_options(), say("--allow-mixed", "ExportOptions(allow_mixed=True)"))
    for fmt, precision in formats:
        try:
            FORMATS.get(fmt).check_model(spec, precision, recipe.export_options())
        except EdgeCompressError as e:
            # `export: tflite int8 of m: ...` in a recipe, `--export tflite int8 of m: ...` from compress
            raise type(e)(f"{recipe._source}: {opt('--format', 'formats', e)}") from None


def _check_block_counts(recipe: Recipe, configs: list[tuple[str, Any]], module: Any, example: Any) -> None:
    """`prune: {method: block, blocks: N}` against the blocks the loaded model has, before the
    first pass runs (it failed after the passes before it had trained). Only up to the first pass
    that changes the model's structure: after that the count is known when the pass runs."""
    for i, (name, cfg) in enumerate(configs):
        if name == "prune" and getattr(cfg, "method", "") == "block" and getattr(cfg, "blocks", None):
            from edgecompress.passes._blocks import find_blocks

            found = find_blocks(module, example)
            if cfg.blocks > len(found):
                raise ConfigError(f"{recipe._source}: {recipe._pass_key(i, 'blocks')}: only {len(found)} removable "
                                  f"blocks in the model ({', '.join(found)}); {cfg.blocks} asked")
        if name in ("prune", "lowrank", "qat") or _may_restructure(name):
            return


# The built-in passes, whose effect on module names and structure the checks above know by name.
_BUILTIN_PASSES = frozenset({"prune", "lowrank", "distill", "qat", "resolution"})


def _may_restructure(name: str) -> bool:
    """A registered (plugin) pass that declares `structural=True`: module names and blocks after it
    are checked when the later passes run, not up front (a valid `wrap` -> `prune: {ignored: ...}`
    was refused naming a module the wrap pass creates)."""
    if name in _BUILTIN_PASSES:
        return False
    from edgecompress.passes import PASSES

    return name in PASSES and PASSES.get(name).structural


def _check_sizes(recipe: Recipe, configs: list[tuple[str, Any]], input_shape: tuple[int, ...]) -> None:
    """A resolution pass's `size` against the side the model takes at that point (only resolution
    passes change it), before the first pass runs: it failed after the passes before it trained.
    So does a model the pass refuses, one of a non-square or channels-last input."""
    from edgecompress.exporters.base import image_layout

    side = input_shape[-1] if len(input_shape) == 4 else None
    first = next((i for i, (name, _cfg) in enumerate(configs) if name == "resolution"), None)
    if side is not None and first is not None:  # (the passes keep the shape until the first of them)
        where = f"{recipe._source}: {recipe._pass_key(first, name='resolution')}"
        if image_layout(input_shape) != "NCHW":
            raise ConfigError(f"{where}: the model takes channels-last images {tuple(input_shape)}; the pass "
                              "scales (N, C, H, W) inputs")
        if input_shape[2] != input_shape[3]:
            raise ConfigError(f"{where}: the model takes {input_shape[2]}x{input_shape[3]} (h x w) inputs; the "
                              "pass scales square inputs")
    for i, (name, cfg) in enumerate(configs):
        if name != "resolution" or side is None:
            continue
        if cfg.size is not None and cfg.size > side:
            raise ConfigError(f"{recipe._source}: {recipe._pass_key(i, 'size', name)} {cfg.size}: larger than the "
                              f"model's input side {side} (this pass shrinks)")
        side = cfg.size if cfg.size is not None else None  # a MACs target: known when it runs


def _trains(name: str, cfg: Any) -> bool:
    if name in ("distill", "qat"):
        return True
    return bool(getattr(cfg, "finetune_epochs", 0)) or getattr(cfg, "importance", "") == "taylor"


def _one_line(e: PydanticError) -> str:
    """pydantic's first error as "key: message" (the key on the surface: compress's flag)."""
    err = e.errors()[0]
    # passes[0].prune like the pass checks say it (pydantic's loc reads passes.0.prune)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "?"
    key = recipe_key(path)
    # a validator's own ValueError reads "Value error, <ours>": ours alone is the message
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required key is missing"
    if key != path and msg.startswith((f"{key} ", f"{key}:")):  # ours names the flag already (`--fail-on 'x': ...`)
        return msg
    return f"{key}: {msg}"


def parse_recipe(obj: Any, source: str = "recipe") -> Recipe:
    """A checked Recipe from a dict; one-line ConfigError naming the key otherwise."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(obj).__name__}")
    key = next((k for k in obj if not isinstance(k, str)), None)
    if key is not None:  # model_validate calls Recipe.__init__(**obj): "keywords must be strings"
        raise ConfigError(f"{source}: {key!r}: not a key of a recipe (keys are names)")
    try:
        r = Recipe.model_validate(obj)
    except ConfigError as e:  # Recipe.__init__'s (model_validate calls it); the fields' validators raise ValueError
        raise ConfigError(f"{source}: {str(e).removeprefix('Recipe: ')}") from None
    except PydanticError as e:
        raise ConfigError(f"{source}: {_one_line(e)}") from None
    r._source = source
    try:
        return r.check()
    except EdgeCompressError as e:  # any class: a target .toml's "no such file" (InputFileError) went unprefixed
        raise type(e)(f"{source}: {e}").with_traceback(e.__traceback__) from None


def _unique_keys_loader() -> Any:
    """yaml's SafeLoader, refusing a key given twice in one mapping (the last one silently won),
    with YAML 1.2's booleans: only true / false. PyYAML follows YAML 1.1, which read `yes`, `no`,
    `on`, `off` as booleans before the recipe's checks (that refuse them) could see them."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, Any]]]] = {
            first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    if not isinstance(path, str | Path):  # None reached pathlib's TypeError
        raise ConfigError(f"recipe: expected a path to a YAML file, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"recipe {path}: no such file")
    try:
        obj = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader())  # a SafeLoader
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path}: not UTF-8 text (a YAML recipe expected)") from None
    except OSError as e:
        raise InputFileError(f"recipe {path}: cannot read ({e.strerror})") from None
    except RecursionError:  # `a: [[[[...]]]]`: yaml's parser recurses per level (a traceback)
        from edgecompress.fileio import NESTED_TOO_DEEPLY

        raise ConfigError(f"recipe {path}: not valid YAML ({NESTED_TOO_DEEPLY})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"recipe {path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if isinstance(obj, dict):
        obj = _paths_from(obj, path.resolve().parent)
    return parse_recipe(obj, f"recipe {path}")


def _is_file_ref(text: Any) -> bool:
    """A relative file path (not `zoo:NAME`, `package.module:factory` or another scheme)."""
    return isinstance(text, str) and bool(text.strip()) and ":" not in text and not Path(text).is_absolute() \
        and not text.startswith("~")


def _is_factory_ref(text: str) -> bool:
    """`package.module:factory` (what the factory loader takes), not `zoo:NAME` or `hf:DIR`."""
    import re

    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text) is not None and not text.startswith(("zoo:", "hf:"))


def _paths_from(obj: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths of a recipe file (data.*, a model file, weights, a target .toml) made absolute against
    the recipe's folder. They resolved against the working directory: a recipe ran only from
    its own folder, and recipe.resolved.yaml (which copied them) from another cwd read other
    files or none. The resolved recipe now holds the absolute paths, so it reruns anywhere."""
    from edgecompress.data import DataSpec

    obj = dict(obj)
    model = obj.get("model")
    if isinstance(model, str) and _is_factory_ref(model) and obj.get("model_dir") is None:
        obj["model_dir"] = str(base)  # its module may sit beside the recipe (the resolved one says where)
    if _is_file_ref(obj.get("model_dir")):
        obj["model_dir"] = str(base / obj["model_dir"])
    for key in ("model", "weights"):
        if isinstance(obj.get(key), str) and obj[key].startswith("~"):  # as on the command line
            with contextlib.suppress(RuntimeError):  # no home to expand into: left as written
                obj[key] = str(Path(obj[key]).expanduser())
        if _is_file_ref(obj.get(key)):
            obj[key] = str(base / obj[key])
    target = obj.get("target")
    if isinstance(target, str) and target.endswith(".toml"):  # a profile file, not a profile name
        path = Path(target).expanduser()
        obj["target"] = str(path if path.is_absolute() else base / path)
    data = obj.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key, text in data.items():
            if isinstance(text, str):
                spec = DataSpec.parse(text)
                if _is_file_ref(spec.path):
                    spec.path = str(base / spec.path)
                    data[key] = str(spec)
        obj["data"] = data
    return obj


def _factory_root(ref: str) -> str | None:
    """The folder `package.module:factory` imports from here (the one holding `package/`), or None."""
    import importlib.util

    name = ref.partition(":")[0]
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or not Path(found.origin).is_file():
        return None
    root = Path(found.origin).resolve().parent
    for _ in range(name.count(".") + (Path(found.origin).name == "__init__.py")):
        root = root.parent
    return str(root)


def anchored(recipe: Recipe) -> Recipe:
    """A Recipe built in Python with its relative paths made absolute against the working
    directory, and `model_dir` set to where its factory imports from, as load_recipe does against
    the YAML's folder: saved as it was, it reloaded with its paths re-based on the YAML's folder
    (other files, or none) and its recipe.resolved.yaml could not be rerun from elsewhere."""
    obj = recipe.model_dump()
    if isinstance(obj.get("model"), str) and _is_factory_ref(obj["model"]) and obj.get("model_dir") is None:
        obj["model_dir"] = _factory_root(obj["model"]) or str(Path.cwd())
    out = _paths_from(obj, Path.cwd())
    return recipe if out == recipe.model_dump() else parse_recipe(out, recipe._source)


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write `recipe` resolved (every parameter explicit) to `path`, atomically."""
    from edgecompress.fileio import write_text_atomic

    if not isinstance(recipe, Recipe):  # a dict failed with "'dict' object has no attribute 'resolved'"
        raise ConfigError(f"save_recipe: recipe must be a Recipe (load_recipe / parse_recipe), got "
                          f"{type(recipe).__name__}" + (" (parse_recipe(d) validates one)" if isinstance(recipe, dict)
                                                        else ""))
    if not isinstance(path, str | os.PathLike) or not str(path).strip():  # None: pathlib's TypeError
        raise ConfigError(f"save_recipe: path must be a file path, got {path!r:.60}")

    return write_text_atomic(Path(path), recipe_yaml(anchored(recipe)))


def recipe_yaml(recipe: Recipe, detected: str | None = None) -> str:
    """The resolved recipe as YAML text (every parameter explicit). `detected`: why its
    `input_dtype` was detected by the loader, not given (a comment on that line says so)."""
    import yaml

    # allow_unicode: a path with "ü" was written as "\xFC" (YAML escapes everything past ASCII by
    # default); the file is written as UTF-8 and read back as UTF-8 (load_recipe). Characters YAML
    # cannot print (a non-UTF-8 name's surrogate escapes) are still escaped, and load back the same.
    # width: a long path was folded onto two lines at a space (it loaded back, but grep missed it)
    text = yaml.safe_dump(recipe.resolved(), sort_keys=False, default_flow_style=None, allow_unicode=True,
                          width=2**16)
    if detected:
        note = " ".join(detected.split())  # one line: a comment ends at the line's end
        text = re.sub(r"^input_dtype: \S+$", lambda m: f"{m.group(0)}  # detected: {note}", text, count=1,
                      flags=re.M)
    return "# resolved by edgecompress: every parameter explicit\n" + text


# --- the runner ------------------------------------------------------------------------------------
def _record(name: str, spec: Any, ev: Any, ref: Any, base: dict | None, prev: dict | None,
            params: dict | None = None, log: Any = None) -> dict[str, Any]:
    from edgecompress.passes._common import evaluate, model_stats

    st = model_stats(spec)
    m = evaluate(spec.module, ev, ref)
    metric_name = "top1" if "top1" in m else ("top1_agreement" if "top1_agreement" in m else None)
    row: dict[str, Any] = {"name": name, **st, "metric": m.get(metric_name) if metric_name else None,
                           "metric_name": metric_name, "metrics": m, "params_config": params or {}}
    base = base or row
    row["ratios"] = {"alpha": st["params"] / max(base["params"], 1),
                     "beta": st["macs"] / max(base["macs"], 1),
                     "gamma": st["size_bytes"] / max(base["size_bytes"], 1)}
    if prev is not None:
        row["step_ratios"] = {"alpha": st["params"] / max(prev["params"], 1),
                              "beta": st["macs"] / max(prev["macs"], 1),
                              "gamma": st["size_bytes"] / max(prev["size_bytes"], 1)}
        row["step_delta_metric"] = (row["metric"] - prev["metric"]
                                    if row["metric"] is not None and prev["metric"] is not None else None)
    row["delta_metric"] = (row["metric"] - base["metric"]
                           if row["metric"] is not None and base["metric"] is not None else None)
    if log is not None:
        row["log"] = log
    if spec.extra.get("quantized"):
        row["note"] = "int8 (QAT): size counts weights at 1 byte; params/MACs are the float model's"
    return row


def run_recipe(recipe: Recipe | dict[str, Any] | str | Path, out_dir: str | os.PathLike[str] | None = None,
               progress: bool | None = None, command: str = "") -> tuple[Report, dict[str, Path]]:
    """Execute a recipe; returns (Report, paths of report.json/md/html, manifest, resolved recipe).

    A run that fails leaves --out's report, steps.json and recipe.resolved.yaml as they were (they
    are written last, with the step folders' model.pt), and removes the folders it created if they
    hold nothing; what it keeps is its resumable state: the step folders' fine-tuning checkpoints.
    """
    from edgecompress.fileio import exclusive_dir, output_dir

    if isinstance(recipe, str | Path):
        recipe = load_recipe(recipe)
    elif isinstance(recipe, dict):
        recipe = anchored(parse_recipe(recipe))
    elif isinstance(recipe, Recipe):
        with _from_recipe(recipe):  # (a dict's and a file's checks say it in parse_recipe)
            recipe = anchored(recipe.check())
    else:  # a list or a number failed with AttributeError
        raise ConfigError(f"recipe: expected a mapping, a Recipe or a path, got {type(recipe).__name__}")
    # one writer through the passes too (their checkpoints and step folders), not only the export:
    # a `validate` or another run into this --out while the passes trained was not refused
    import torch

    threads = torch.get_num_threads()
    # the run seeds torch (options.seed) and may set its threads (options.torch_threads): the
    # caller's random stream and thread count were left changed after run_recipe returned
    try:
        # --out / out_dir in the caller's words (it is theirs, not a recipe key); the run in _words',
        # its errors naming the recipe (_from_recipe)
        with output_dir(Path(out_dir or "edgecompress-out")) as out, exclusive_dir(out), \
                torch.random.fork_rng(devices=[]), _words(recipe), _from_recipe(recipe):
            return _execute(recipe, out, progress, command)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _from_recipe(recipe: Recipe) -> Any:
    """Errors of the block saying which recipe they came from ("recipe r.yaml: ..."), as the
    recipe's own checks say: the one place a recipe run's errors get it, whichever step raised
    them (the export's "options.float_first: 99 leaves all ..." had none). An error that says so
    already (the helpers that add a key: _in_pass, _in_model, _in_data) passes as it is, and so
    does every error of `compress`, which prefixes its errors itself (cli.py). Same class, same
    traceback."""
    try:
        yield
    except EdgeCompressError as e:
        source = recipe._source
        if not source.startswith("recipe") or str(e).startswith(f"{source}:"):
            raise
        raise type(e)(f"{source}: {e}").with_traceback(e.__traceback__) from None


@contextlib.contextmanager
def _words(recipe: Recipe) -> Any:
    """The surface a run's messages are worded for: a recipe's keys (`input_dtype: int32`,
    `options.allow_mixed: true`, `data.calib`) for a recipe, from `edgecompress run` as from
    `run_recipe`; compress's flags for the recipe `compress` built (the compress surface, set by
    the CLI, stays: errors.on_recipe_surface)."""
    with on_recipe_surface():
        yield


def _target_preflight(recipe: Recipe) -> None:
    """What export checks before any work, checked before the passes train (it came after them):
    the device reachable (an ssh host, a phone), and no --fail-on gate an estimate cannot answer."""
    if not (recipe.export and recipe.options.validate_artifacts):
        return
    from edgecompress.targets import get_target
    from edgecompress.targets.gates import check_gates_measurable, parse_gates
    from edgecompress.targets.runners.estimate import preflight

    profile = get_target(recipe.target)
    preflight(profile)
    # evaluation data is resolved later (a zoo model's default): only the estimate's limits here
    # in the run's words (_words): options.fail_on / options.batch, or compress's --fail-on / --batch
    check_gates_measurable(parse_gates(recipe.options.fail_on), profile, has_eval=True,
                           batches=list(recipe.options.batch))


def _note_foreign_steps(out: Path, ours: set[str]) -> None:
    """Say which step folders in `out` this run did not write (an earlier run's longer chain): they
    stay (edgecompress removes nothing of yours), but steps.json no longer lists them."""
    with contextlib.suppress(OSError):
        other = sorted(d.name for d in out.iterdir()
                       if d.is_dir() and re.fullmatch(r"step\d+-\w+", d.name) and d.name not in ours)
        if other:
            print(f"note: {out} also holds step folder(s) this run did not write, listed in neither steps.json nor "
                  f"the report: {', '.join(other[:6])}{', ...' if len(other) > 6 else ''}", file=sys.stderr)


def _execute(recipe: Recipe, out: Path, progress: bool | None, command: str) -> tuple[Report, dict[str, Path]]:
    import torch

    from edgecompress.fileio import write_json_atomic, write_text_atomic
    from edgecompress.models import load_model
    from edgecompress.passes import PASSES
    from edgecompress.passes._common import config_dict, pass_module, predict, resolve_dataset, save_checkpoint
    from edgecompress.passes.distill import recipe_teacher

    opts = recipe.options
    progress = opts.progress if progress is None else progress
    resolved_text = recipe_yaml(recipe)  # before the passes run: what was asked
    if opts.torch_threads:
        torch.set_num_threads(opts.torch_threads)
    torch.manual_seed(opts.seed)

    _target_preflight(recipe)
    shape = tuple(recipe.input_shape) if recipe.input_shape else None
    try:
        with _importable(recipe.model_dir):
            spec = load_model(recipe.model, shape, recipe.weights, recipe.preprocess, input_dtype=recipe.input_dtype)
    except EdgeCompressError as e:
        if not recipe._source.startswith("recipe"):  # `compress` names its own flags, as the loaders do
            raise
        raise _in_model(e, recipe._source) from None
    if recipe.input_dtype is None and (why := spec.extra.get("input_dtype_detected")):
        # the dtype the run used, not `null`: the resolved recipe reruns the same model the same way
        resolved_text = recipe_yaml(recipe.model_copy(update={"input_dtype": spec.inputs[0].dtype}), why)
    if spec.module is None:  # an ONNX file: this raised AttributeError
        runs = say("a recipe runs", "a recipe runs", compress="compress runs")
        raise ConfigError(f"{say('model', 'model', compress='MODEL')} {recipe.model}: {runs} PyTorch passes and an "
                          "fp32 PyTorch reference; an .onnx file has neither (export it with `edgecompress export`)")
    from edgecompress.passes._common import refuse_exported

    for i, (name, _cfg) in enumerate(recipe.pass_configs()):  # before the data load and the first pass
        if name in _BUILTIN_PASSES - {"distill"}:
            refuse_exported(spec, f"{recipe._source}: {recipe._pass_key(i)}")
    _check_module_names(recipe, recipe.pass_configs(), pass_module(spec))
    _check_sizes(recipe, recipe.pass_configs(), tuple(spec.input_shape))
    _check_exports(recipe, spec)
    original = copy.deepcopy(pass_module(spec)).eval()
    if len(spec.inputs) == 1:  # (text encoders' blocks are counted on their token batches, when the pass runs)
        _check_block_counts(recipe, recipe.pass_configs(), original, spec.example_inputs(1)[0].numpy())
    original_spec, original_shape = spec.replace(module=original), spec.input_shape
    train_key = "data.train" if recipe.data.train else "data.calib" if recipe.data.calib else None
    train = _in_data(recipe, train_key, lambda: resolve_dataset(
        spec, recipe.data.train or recipe.data.calib, "train", progress,
        required=any(_trains(n, c) for n, c in recipe.pass_configs())))
    ev = _in_data(recipe, "data.eval" if recipe.data.eval else None,
                  lambda: resolve_dataset(spec, recipe.data.eval, "evaluation", progress, required=False))
    ref = predict(original, ev) if ev is not None else None
    first = _record("original", spec, ev, ref, None, None)
    steps = [first]
    weights: list[tuple[Path, dict[str, Any]]] = []
    for i, (name, cfg) in enumerate(recipe.pass_configs()):
        info = PASSES.get(name)
        choice = opts.qat_teacher if name == "qat" else opts.teacher
        teacher: Any = original if choice == "original" else copy.deepcopy(spec.module)  # or Resized below
        if choice == "original" and spec.input_shape != original_shape:
            # after the resolution pass the data are small images; the original model sees them
            # upsampled to the side (and TF SAME padding) it was built for. On EfficientNet-Lite0's
            # eval half at 192 px: 85.2 % top-1 that way, 83.8 % run at 192 px.
            from edgecompress.passes.resolution import Resized

            teacher = Resized(original, int(original_shape[-1]))
        if progress:
            print(f"[{i + 1}/{len(recipe.passes)}] {name}", file=sys.stderr)
        workdir = out / f"step{i + 1}-{name}"
        shape_before = spec.input_shape
        records_before = len(spec.extra.get("passes") or [])
        try:
            with recipe_teacher():  # options.teacher's pick, a version of the model, not a network the user named
                spec = info.run(spec, cfg, data=train, teacher=teacher, workdir=workdir, progress=progress)
        except EdgeCompressError as e:
            raise _in_pass(e, recipe._source, i, name, recipe.passes[i][name]) from None
        if spec.input_shape != shape_before:
            # [issue #4] the resolution pass changed the input side: every later step (passes, PTQ
            # calibration, evaluation) loads the same files at the new side through the same
            # preprocessing; `ref` stays the original model's outputs on those images.
            from edgecompress.passes.resolution import dataset_at

            train = dataset_at(spec, recipe.data.train or recipe.data.calib, train, "train", progress)
            ev = dataset_at(spec, recipe.data.eval, ev, "evaluation", progress)
        # a registered pass need not append a record of its own (ours do): no new record, no log
        # (an empty list raised IndexError, a traceback from `edgecompress run`; an older record
        # would have lent this step the previous pass's log)
        records = spec.extra.get("passes") or []
        log = records[-1].get("log") if len(records) > records_before and isinstance(records[-1], dict) else None
        steps.append(_record(name, spec, ev, ref, first, steps[-1], config_dict(cfg), log))
        # The weights after every pass (weights_only-loadable state_dict) for inspection / reuse,
        # written with the records at the end: a run that fails later (an export refusing an op)
        # must not leave the previous run's steps.json describing this run's weights.
        weights.append((workdir / "model.pt", {"key": name, "state_dict": {
            k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in spec.module.state_dict().items()}}))
    if len(steps) > 2:
        # the chain's passes, not the last pass's config (which read as the whole chain's)
        total = dict(steps[-1], name="chain total", log=None,
                     params_config={"passes": [n for n, _ in recipe.pass_configs()]})
        total["step_ratios"] = total["ratios"]  # the chain's step is the whole chain
        total["step_delta_metric"] = total["delta_metric"]
        steps.append(total)

    cmd = command or " ".join(shlex.quote(a) for a in sys.argv)

    def write_records() -> dict[str, Path]:
        # Last, with the report (before the manifest of an export): a failed run leaves the
        # previous run's records as they were.
        for path, payload in weights:
            save_checkpoint(path, payload)
        _note_foreign_steps(out, {p.parent.name for p, _ in weights})
        return {"steps": write_json_atomic(out / "steps.json", steps),
                "recipe": write_text_atomic(out / RESOLVED_NAME, resolved_text)}

    if recipe.export:
        from edgecompress.exporters import resolve_formats
        from edgecompress.pipeline import ExportJob, run_export
        from edgecompress.targets import ValidateSettings

        # PTQ calibrates on data.calib, else on (up to 300 of) the training data, so a recipe whose
        # eval set is part of the model's default calibration images does not calibrate on it
        calib = _data(recipe.data.calib) or _head(train, 300)
        if recipe.data.calib and spec.input_shape != original_shape:  # after the resolution pass
            from edgecompress.passes.resolution import dataset_at

            calib = dataset_at(spec, recipe.data.calib, lambda: resolve_dataset(
                original_spec, recipe.data.calib, "calibration", progress), "calibration", progress)
        job = ExportJob(
            model=spec, formats=resolve_formats(recipe.export), out_dir=out,
            calib=calib, eval=ev, target=recipe.target,
            options=recipe.export_options(),
            settings=ValidateSettings(threads=opts.threads, runs=opts.runs, warmup=opts.warmup,
                                      rounds=opts.rounds, batches=tuple(dict.fromkeys([1, *opts.batch]))),
            fail_on=opts.fail_on,
            do_validate=opts.validate_artifacts, command=cmd, progress=progress, steps=steps,
            write_before_manifest=write_records,
        )
        report, paths = run_export(job)
    else:
        from edgecompress.report import Report, write_report

        report = Report(model={"name": spec.name, "source": spec.source, "params": steps[-1]["params"],
                               "macs": steps[-1]["macs"], "input_shape": list(spec.input_shape),
                               **spec.input_dtype_fields(),
                               "task": spec.task},
                        target=recipe.target, artifacts=[], steps=steps, command=cmd,
                        data={"eval": ev.source if ev else None, "eval_n": len(ev) if ev else 0})
        from edgecompress.fileio import results_landing

        with results_landing(out):  # a Ctrl-C here waits until report and records are one run's
            paths = write_report(report, out)
            paths.update(write_records())
    return report, paths


def _in_data(recipe: Recipe, key: str | None, load: Any) -> Any:
    """`load()`, its error naming the recipe and the key whose file it read ("recipe r.yaml:
    data.calib: train data x.npy: no such file": data.calib is the training data without data.train)."""
    try:
        return load()
    except EdgeCompressError as e:
        if key is None:  # the model's default data
            raise
        raise type(e)(f"{recipe._source}: {recipe_key(key)}: {e}") from None


def _head(ds: Any, n: int) -> Any:
    """The first `n` samples of a Dataset (None stays None), its source saying so."""
    if ds is None:
        return None
    head = ds.take(slice(0, n))
    if len(head) == len(ds):  # all of it: the source as it is
        return head
    from edgecompress.data import DataSpec

    # "PATH[:300]" then read "PATH[:300][0:300]", which is no PATH[start:stop] anyone can pass
    spec = DataSpec.parse(ds.source)
    start = spec.start or 0
    if spec.path != ds.source.strip() and start >= 0:
        head.source = str(DataSpec(spec.path, spec.start, start + len(head)))
    else:
        head.source = f"{ds.source}[0:{len(head)}]"
    return head


def _data(text: str | None) -> Any:
    if text is None:
        return None
    from edgecompress.data import DataSpec

    return DataSpec.parse(text)
