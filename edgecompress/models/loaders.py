"""Turn a model reference into a ModelSpec.

References: `zoo:NAME`, `package.module:factory` (optionally with a state_dict via `weights`),
a `.pt2` ExportedProgram, a `.onnx` file (export-only paths), or an `nn.Module` from Python.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import (
    ConfigError,
    EdgeCompressError,
    ExportError,
    InputFileError,
    InputShapeError,
    ModelLoadError,
    first_line,
    named,
    opt,
    say,
)
from edgecompress.models.spec import (
    InputSpec,
    ModelLike,
    ModelSpec,
    ShapeLike,
    SpecExtra,
    check_input_dtype,
    check_input_names,
    check_output_names,
    input_names_from,
    output_names_from,
)
from edgecompress.registry import Registry

if TYPE_CHECKING:
    from edgecompress.data.presets import Transform

Loader = Callable[..., ModelSpec]
# Each loader declares which references it accepts; they are tried in name order (factory, hf,
# onnx, pt2, zoo), so `hf:dir.onnx` is a Hugging Face folder, and zoo: / hf: are no factories.
LOADERS: Registry[tuple[Callable[[str], bool], Loader]] = Registry("model loader")


def parse_shape(shape: ShapeLike | None) -> tuple[int, ...] | None:
    """`1,3,224,224` (the CLI's text) or a tuple / list of ints (torch.Size, numpy ints) as a tuple,
    or a one-line InputShapeError. A sequence is checked as the text is: `('a', 3)` raised int()'s
    ValueError, `8` an AttributeError, and `(1, 3, 8.5, 8)` or `(True, 3, 8, 8)` were taken as
    (1, 3, 8, 8); a dimension <= 0 failed later in torch's words (negative dimension -3)."""
    import numbers

    if shape is None:
        return None
    if isinstance(shape, tuple | list):
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape):
            raise InputShapeError(f"{opt('--input-shape', 'input_shape', repr(shape))}: expected integers like "
                                  f"{say('1,3,224,224', '(1, 3, 224, 224)', '[1, 3, 224, 224]')}")
        dims = tuple(int(s) for s in shape)
    elif isinstance(shape, str):
        try:
            dims = tuple(int(s) for s in shape.replace("x", ",").split(","))  # "1,,8" is a typo, not (1, 8)
        except ValueError:
            raise InputShapeError(f"{opt('--input-shape', 'input_shape', repr(shape))}: expected integers like "
                                  "1,3,224,224") from None
    else:
        raise InputShapeError(f"{opt('--input-shape', 'input_shape', repr(shape))}: expected a tuple of integers "
                              "like (1, 3, 224, 224) or the text '1,3,224,224'")
    if not dims or any(d <= 0 for d in dims):
        raise InputShapeError(f"{opt('--input-shape', 'input_shape', repr(shape))}: dimensions must be positive")
    return dims


def _shape_text(shape: tuple[int, ...]) -> str:
    """A parsed shape as the caller writes it: 1,3,224,224 on the command line, a tuple in Python,
    a list in a recipe."""
    return say(",".join(map(str, shape)), str(tuple(shape)), str(list(shape)))


def _factory_with_weights() -> str:
    """How to give a factory its weights, in the caller's words."""
    return say("'package.module:factory --weights FILE'", "'package.module:factory' with weights=FILE",
               "model: package.module:factory with weights: FILE")


def _weights_opt(path: str | os.PathLike[str]) -> str:
    """`--weights PATH` / `weights=PATH`, as the caller named it."""
    return opt("--weights", "weights", path, quoted=True)


def check_forward(spec: ModelSpec, output_names: list[str] | None = None, dtype_declared: bool = True) -> None:
    """Run one forward pass so a wrong input shape fails here, named, not deep in an exporter,
    and name every output from what it returns (`output_names_from`): `output_names` (else the
    spec's) for the first ones, a dict's keys, `output_1`, ... The exporters give every format's
    file those names, so an app reads one set of names whatever the format.

    Also records the vocabulary of a model whose first layer is an nn.Embedding (random ids then
    stay in range) and, when the dtype was not declared (`dtype_declared`), takes such a model's
    input as int64 ids (see `_embedding_first`)."""
    import torch

    if spec.module is None:
        return
    # a float64 model failed the float32 probe below and was reported as a wrong input shape
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in spec.module.parameters()
                     if p.is_floating_point() and p.dtype != torch.float32})
    if dtypes:
        raise ModelLoadError(f"model {spec.name} has {', '.join(dtypes)} parameters; the passes and exporters "
                             "take float32 (call model.float())")
    embedding = _embedding_first(spec)
    if embedding is not None and "vocab_size" not in spec.extra:
        spec.extra["vocab_size"] = int(embedding[1].num_embeddings)  # example_inputs' random ids stay below
    try:
        y = _probe(spec)
    except Exception as e:
        error = e
    else:
        _name_outputs(spec, y, output_names)
        return
    single_float = len(spec.inputs) == 1 and spec.inputs[0].dtype == "float32"
    if not dtype_declared and single_float and embedding is not None:
        # [audit #27] The model's first layer is an nn.Embedding: it cannot take float samples at
        # all (torch refuses float indices), so float32 is never the user's intent. int64 is what
        # PyTorch code, tokenizers and np.int64 arrays feed an Embedding, so it is taken without a
        # flag (an error asking for `--input-dtype int64` would only make the user retype it).
        # Only after the float probe failed: a model that runs on floats today is never changed
        # (e.g. one whose first registered module is a positional Embedding over torch.arange).
        spec.inputs[0].dtype = "int64"
        try:
            y = _probe(spec)
        except Exception:
            spec.inputs[0].dtype = "float32"  # neither works: report the float failure below
        else:
            _name_outputs(spec, y, output_names)
            # the report and the resolved recipe say it was detected, and why
            rows = embedding[1].num_embeddings
            spec.extra["input_dtype_detected"] = f"nn.Embedding {embedding[0]!r} first, {rows} rows"
            int32 = opt("--input-dtype", "input_dtype", "int32", quoted=True)
            print(f"note: model {spec.name} starts with nn.Embedding {embedding[0]!r} ({embedding[1].num_embeddings} "
                  f"rows): its input is taken as int64 ids ({int32} for int32 ones)", file=sys.stderr)
            return
    first = first_line(error, limit=None)
    shapes = ", ".join(str(tuple(s.shape)) for s in spec.inputs)
    hint = ""
    if single_float and _runs_on_ids(spec):  # e.g. F.one_hot(x) or a table indexed by x: no Embedding to see
        hint = ("; it runs on integer input: if it takes ids, pass "
                f"{opt('--input-dtype', 'input_dtype', 'int64', quoted=True)}")
    dtype = "" if single_float else f" {spec.inputs[0].dtype}"
    raise InputShapeError(f"input shape {shapes}{dtype} does not fit model {spec.name}: {first}{hint}") from error


def _probe(spec: ModelSpec) -> Any:
    """The model's output on `example_inputs(1)`."""
    import torch

    assert spec.module is not None  # check_forward returned for a module-less spec
    with torch.no_grad():
        return spec.module(*spec.example_inputs(1))


def _name_outputs(spec: ModelSpec, y: Any, output_names: list[str] | None) -> None:
    given = spec.output_names if output_names is None else output_names
    names = output_names_from(y, given, f"model {spec.name}")
    check_output_names(names, f"model {spec.name}", [i.name for i in spec.inputs])
    spec.output_names = names


def _runs_on_ids(spec: ModelSpec) -> bool:
    """Whether the model runs on random int64 ids (`example_inputs`: below 100), the float probe
    having failed."""
    saved = spec.inputs[0].dtype
    spec.inputs[0].dtype = "int64"
    try:
        _probe(spec)
        return True
    except Exception:
        return False
    finally:
        spec.inputs[0].dtype = saved


class _FirstLayer(Exception):
    """Raised by the pre-hook of the first layer a forward reaches (it stops the forward there)."""


def _embedding_first(spec: ModelSpec) -> tuple[str, Any] | None:
    """(name, module) of the nn.Embedding / nn.EmbeddingBag that the model's forward reaches first
    of all its layers, else None. Found by running the forward up to that layer's pre-hook (the
    registration order of modules need not be the order they run in). Its inputs are zeros of the
    spec's dtype: id 0 is in any table, and nothing runs past the hook."""
    import torch

    module = spec.module
    if module is None or len(spec.inputs) != 1:
        return None
    leaves = [(n, m) for n, m in module.named_modules() if next(m.children(), None) is None]
    if not any(isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag) for _, m in leaves):
        return None
    reached: list[tuple[str, Any]] = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(m: Any, _args: Any) -> None:
            reached.append((name, m))
            raise _FirstLayer

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            module(*(torch.zeros_like(x) for x in spec.example_inputs(1)))
    except Exception:  # _FirstLayer, or the forward failed before any layer: nothing reached
        pass
    finally:
        for h in handles:
            h.remove()
    if reached and isinstance(reached[0][1], torch.nn.Embedding | torch.nn.EmbeddingBag):
        return reached[0]
    return None


def _load_zoo(ref: str, input_shape: tuple[int, ...] | None = None, **_: Any) -> ModelSpec:
    from edgecompress.models.zoo import ZOO

    name = ref.split(":", 1)[1]
    entry = ZOO.get(name, say("MODEL", ""))  # "unknown zoo model 'x'" from Python
    if entry.load is not None:  # entries with their own loader (multi-input text models)
        return entry.load(input_shape=input_shape)
    module = entry.build()
    return ModelSpec(
        name=name,
        module=module,
        inputs=[InputSpec(input_shape or entry.input_shape, input_names_from(module)[0])],
        source=ref,
        output_names=[],  # named from its outputs by check_forward
        task=entry.task,
        preprocess=entry.preprocess,
        default_calib=entry.default_calib,
        default_eval=entry.default_eval,
        extra=SpecExtra(**entry.extra),
    )


def _weights_error(path: Path, e: Exception) -> EdgeCompressError:
    """torch.load(weights_only=True)'s refusal in one line: the class it would not unpickle, or why
    the file is not a checkpoint (torch's first lines are advice to load it unsafely)."""
    text = str(e)
    glob = re.search(r"GLOBAL ([\w.]+)", text)
    if glob:
        return ModelLoadError(f"{_weights_opt(path)}: refused, it needs pickle beyond plain tensors: {glob.group(1)} "
                              "(loaded with weights_only=True; save model.state_dict() instead)")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = detail.group(1) if detail else (lines[-1] if lines else type(e).__name__)
    return InputFileError(f"{_weights_opt(path)}: not a readable PyTorch checkpoint ({reason[:160]})")


def _load_weights(module: Any, weights: str | os.PathLike[str]) -> None:
    import torch

    path = Path(weights)
    if not path.is_file():
        raise InputFileError(f"{_weights_opt(path)}: no such file")
    try:
        # weights_only: a checkpoint is untrusted input; never unpickle arbitrary objects.
        with warnings.catch_warnings():  # torch warns as well as raising; the raise is reported
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _weights_error(path, e) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{_weights_opt(path)}: expected a state_dict, got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{_weights_opt(path)}: does not match the model: {_mismatch(module, state, e)}") from e


def _keys(keys: list[str], n: int = 3) -> str:
    return ", ".join(repr(k) for k in keys[:n]) + (", ..." if len(keys) > n else "")


def _mismatch(module: Any, state: dict[str, Any], e: Exception) -> str:
    """Why a state_dict does not load, in one line. torch lists every missing key first (hundreds
    for a real network) and the unexpected ones after: those usually tell the cause (keys saved
    from a DataParallel / Lightning wrapper, or a checkpoint dict holding the state_dict under a
    key), so both are summarised and the likely fix named."""
    want = list(module.state_dict())
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in set(want)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_keys(unexpected)})")
    if not parts:  # the names match: a shape or dtype does not (torch's first reason names it)
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        return lines[0][:300] if lines else str(e)[:300]
    hint = ""
    # a wrapper's prefix on every key ("module." from DataParallel, "model." from Lightning)
    prefixes = [u[: -len(m)] for u in unexpected for m in missing if u.endswith("." + m)]
    prefix = max(set(prefixes), key=prefixes.count) if prefixes else None
    if prefix and prefixes.count(prefix) * 2 >= len(missing):
        hint = (f"; the checkpoint's keys carry the prefix {prefix!r}: strip it "
                f"({{k.removeprefix({prefix!r}): v for k, v in sd.items()}}) and save again")
    else:
        back = [m[: -len(u)] for m in missing for u in unexpected if m.endswith("." + u)]
        prefix = max(set(back), key=back.count) if back else None
        if prefix and back.count(prefix) * 2 >= len(missing):
            hint = f"; the model's keys start with {prefix!r} and the checkpoint's do not: add that prefix"
    nested = [k for k, v in state.items() if isinstance(v, dict) and want and len(set(v) & set(want)) * 2 >= len(want)]
    if nested:  # {"model": sd, "epoch": 3}: only "state_dict" is unwrapped
        hint = f"; the state_dict looks to be under key {nested[0]!r}: save checkpoint[{nested[0]!r}] instead"
    return ", ".join(parts) + hint


def _refuse_torchscript(module: Any, where: str) -> None:
    """A scripted or traced module has no Python forward to export or hook: torch.export, the
    converters and the MACs counter (forward hooks) all fail on it, each with a traceback."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):  # traced modules are ScriptModules too
        raise ModelLoadError(f"{where} a TorchScript module ({type(module).__name__}); pass the eager "
                             "nn.Module (before torch.jit.script / torch.jit.trace)")


def _exit_said(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), holding back what it writes to stderr until it returns; if it calls sys.exit,
    the text stays out of the terminal and rides on the SystemExit (`_said`). argparse run on
    edgecompress's argv printed its usage and error lines before our one-line error."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            result = fn(*args)
    except SystemExit as e:
        e.edgecompress_said = held.getvalue()  # type: ignore[attr-defined]
        raise
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    sys.stderr.write(held.getvalue())
    return result


def _said(e: SystemExit) -> str:
    """The last line a module or factory wrote to stderr before sys.exit (argparse's `error: ...`)."""
    lines = [ln.strip() for ln in getattr(e, "edgecompress_said", "").splitlines() if ln.strip()]
    return f" after printing {lines[-1][:200]!r}" if lines else ""


def _load_factory(
    ref: str, input_shape: tuple[int, ...] | None = None, weights: str | Path | None = None,
    input_dtype: str | None = None, **_: Any
) -> ModelSpec:
    import torch

    mod_name, _colon, attr = ref.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # so `mypkg.models:build` works from a project dir
    # SystemExit too: a module or factory that parses arguments (argparse reads edgecompress's own
    # argv) or calls sys.exit ended the CLI with its raw text and exit 1, naming neither.
    try:
        mod = _exit_said(importlib.import_module, mod_name)
    except SystemExit as e:
        raise ModelLoadError(f"{named('model', ref)}: "
                             f"importing module {mod_name!r} called sys.exit({e.code!r}){_said(e)} "
                             "(keep argument parsing under `if __name__ == '__main__':`)") from e
    except Exception as e:
        raise ModelLoadError(f"{named('model', ref)}: "
                             f"cannot import module {mod_name!r} ({type(e).__name__}: {e})") from e
    factory = getattr(mod, attr, None)
    if factory is None:
        raise ModelLoadError(f"{named('model', ref)}: module {mod_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ModelLoadError(f"{named('model', ref)}: {attr!r} is a {type(factory).__name__}, not callable")
    try:
        module = _exit_said(factory) if not isinstance(factory, torch.nn.Module) else factory
    except SystemExit as e:
        raise ModelLoadError(f"{named('model', ref)}: "
                             f"calling {attr}() called sys.exit({e.code!r}){_said(e)}; a factory "
                             "must return the nn.Module (it takes no arguments, and argv is edgecompress's)") from e
    except Exception as e:
        raise ModelLoadError(f"{named('model', ref)}: calling {attr}() failed ({type(e).__name__}: {e})") from e
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{named('model', ref)}: {attr}() returned {type(module).__name__}, not a torch.nn.Module")
    _refuse_torchscript(module, f"{named('model', ref)}: {attr}() returned")
    if weights:
        _load_weights(module, weights)
    if input_shape is None:
        raise InputShapeError(f"{named('model', ref)}: a factory model needs {opt('--input-shape', 'input_shape')}")
    return ModelSpec(name=attr, module=module.eval(),
                     inputs=[InputSpec(input_shape, input_names_from(module)[0], input_dtype or "float32")],
                     source=ref, output_names=[])  # named from its outputs by check_forward


# [issue #7] Can loading an untrusted .pt2 run code? Yes, with torch 2.13 (checked in
# torch/export/__init__.py `load`, torch/export/pt2_archive/_package.py `_load_state_dict`,
# `_load_constants`, `_load_exported_programs`, torch/_export/serde/serialize.py
# `deserialize_torch_artifact`, `ExportedProgramDeserializer._parse_sym_expr`; torch's own
# docstring: "uses pickle under the hood ... Never load data from an untrusted source"):
#   - weights / tensor constants whose config says `use_pickle` -> torch.load(weights_only=False);
#   - constants `opaque_obj_*` -> pickle.loads; `custom_obj_*` -> torchbind's pickle loader;
#   - sample inputs (`data/sample_inputs/<model>.pt`), legacy `data/{weights,constants}/<model>.pt`
#     and the pre-2.8 `serialized_*.pt` -> torch.load(weights_only=True), and on failure it
#     *falls back to weights_only=False*;
#   - symbolic shape expressions (`expr_str` in the graph JSON) -> sympy.sympify, i.e. eval;
#   - files under `data/aotinductor/` -> `_load_aoti` loads the compiled shared library.
# A crafted sample-inputs or weight entry ran `open(marker, "w")` during torch.export.load here.
# So `_check_pt2_archive` reads the zip first and refuses any of those payloads unless the user
# trusts the file (environment EDGECOMPRESS_TRUST_PT2=1); plain torch.export.save output of
# an ordinary model passes (raw weights, weights_only-loadable sample inputs, symbols like "s0").
TRUST_PT2_ENV = "EDGECOMPRESS_TRUST_PT2"
_PICKLED_CONSTANT_PREFIXES = ("custom_obj_", "opaque_obj_")
# what sympify may see: numbers, operators and names that are symbols (s0, u12) or sympy functions
_SYM_EXPR = re.compile(r"[A-Za-z0-9_+\-*/%()<>=!&|~^., ]*")
# sympy srepr as torch writes it: Symbol('s31', positive=True, integer=True), Float('1.5', precision=53)
_SYM_QUOTED = re.compile(r"'[a-z]{1,4}[0-9]+'|'[0-9][0-9.eE+-]*'|\"[a-z]{1,4}[0-9]+\"")
_SYM_NUMBER = re.compile(r"(?<![A-Za-z0-9_])[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_SYM_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYM_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]+")
_SYM_FUNCS = {
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "Mod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "LShift",
    "RShift",
    "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat",
    "TruncToInt",
    "RoundToInt",
    "RoundDecimal",
    "ToFloat",
    "FloatPow",
    "PowByNatural",
    "IntTrueDiv",
    "FloatTrueDiv",
    "OpaqueUnaryFn_sqrt",
    "Max",
    "Min",
    "Abs",
    "floor",
    "ceiling",
    "sqrt",
    "oo",
    "zoo",
    "nan",
    "Integer",
    "Rational",
    "Float",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "And",
    "Or",
    "Not",
    "True",
    "False",
    "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or",
    "Identity",
    "pi",
    "E",
    # srepr constructors and assumptions
    "Symbol",
    "Dummy",
    "Add",
    "Mul",
    "Pow",
    "Equality",
    "Unequality",
    "StrictLessThan",
    "LessThan",
    "StrictGreaterThan",
    "GreaterThan",
    "true",
    "false",
    "precision",
    "positive",
    "negative",
    "nonnegative",
    "nonpositive",
    "integer",
    "real",
    "finite",
    "nonzero",
    "zero",
    "even",
    "odd",
    "One",
    "Zero",
    "NegativeOne",
    "Half",
    "Infinity",
    "NegativeInfinity",
}


def _unsafe_sym_expr(expr: str) -> bool:
    """True unless `expr` is numbers, operators, symbols and known sympy functions only."""
    expr = _SYM_QUOTED.sub(" s0 ", expr)  # quoted symbol names and numbers only; no other strings
    if not _SYM_EXPR.fullmatch(expr) or "__" in expr:
        return True
    rest = _SYM_NUMBER.sub(" ", expr)
    if "." in rest:  # a dot outside a number literal: attribute access
        return True
    return any(not _SYM_SYMBOL.fullmatch(n) and n not in _SYM_FUNCS for n in _SYM_NAMES.findall(rest))


def _expr_strs(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr_str" and isinstance(v, str):
                yield v
            else:
                yield from _expr_strs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _expr_strs(v)


def _check_pt2_archive(path: Path) -> None:
    """Refuse a .pt2 whose loading would unpickle objects or eval expressions (see above)."""
    import io
    import json
    import zipfile

    import torch

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: torch.export.load fails on it with its own (caught) error
    bad: list[str] = []
    corrupt: list[str] = []  # JSON torch could not parse either: a broken file, not a payload
    with zf:
        for name in zf.namelist():
            member = name.rsplit("/", 1)[-1]
            try:
                if "data/aotinductor/" in name:
                    bad.append(f"{member} (AOTInductor native code)")
                elif name.endswith(("_weights_config.json", "_constants_config.json")):
                    for fqn, meta in json.loads(zf.read(name)).get("config", {}).items():
                        if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(
                            _PICKLED_CONSTANT_PREFIXES
                        ):
                            bad.append(f"{fqn} (pickled, in {member})")
                elif name.endswith(".json") and ("/models/" in f"/{name}" or member.startswith("serialized_")):
                    exprs = _expr_strs(json.loads(zf.read(name)))
                    bad += [f"expression {e[:40]!r}" for e in exprs if _unsafe_sym_expr(e)]
                elif name.endswith(".pt"):
                    # torch retries these with weights_only=False when the safe load fails
                    torch.load(io.BytesIO(zf.read(name)), map_location="cpu", weights_only=True)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                corrupt.append(f"{member}: {type(e).__name__}")
            except (ValueError, KeyError, AttributeError, TypeError, RecursionError) as e:
                bad.append(f"{member} (unreadable: {type(e).__name__})")
            except Exception:  # weights_only refused it: a pickle beyond tensors and containers
                bad.append(f"{member} (pickle beyond plain tensors)")
    bad = list(dict.fromkeys(bad))
    if corrupt and not bad:  # do not advise trusting a file that is merely broken
        raise InputFileError(f"{named('model', path)}: not a readable ExportedProgram .pt2 ({', '.join(corrupt[:2])})")
    if bad:
        raise ModelLoadError(
            f"{named('model', path)}: refused, loading it would run pickled code or eval ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); if you trust this file set {TRUST_PT2_ENV}=1"
        )


def _load_pt2(ref: str, input_shape: tuple[int, ...] | None = None, **_: Any) -> ModelSpec:
    import os

    import torch

    path = Path(ref)
    if not path.is_file():
        raise InputFileError(f"{named('model', path)}: no such file")
    if os.environ.get(TRUST_PT2_ENV, "") in ("", "0"):
        _check_pt2_archive(path)
    import logging

    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.ERROR)  # [issue #7] torch logs a traceback for a corrupt file: one line only
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise InputFileError(
            f"{named('model', path)}: not a readable ExportedProgram .pt2 "
            f"({type(e).__name__}: {first_line(e, 160, empty='')})"
        ) from e
    finally:
        log.setLevel(level)
    user = [spec.arg.name for spec in ep.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    if len(user) != 1:
        # No other route takes several inputs either (a factory gets one --input-shape), except
        # the text encoders of the Transformers path: say so rather than send users round in circles.
        raise ModelLoadError(
            f"{named('model', path)}: the ExportedProgram takes {len(user)} inputs; edgecompress exports single-input "
            "models (.pt2, module:factory); several inputs only for Hugging Face text encoders (zoo:minilm-l6, "
            "hf:DIR). Wrap the model so forward takes one tensor")
    # A program traced at a fixed batch bakes it into its reshapes: it cannot be re-exported with a
    # dynamic one. Batch 1 (torch.export's default, what apps run) is exported as it is, fixed, and
    # fed one sample at a time; another fixed batch is refused with the fix.
    val = next((n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name == user[0]), None)
    fixed = val.shape[0] if val is not None and getattr(val, "ndim", 0) > 0 and isinstance(val.shape[0], int) \
        else None
    if fixed is not None and fixed != 1:
        raise ModelLoadError(
            f"{named('model', path)}: exported with a fixed batch of {fixed}; re-export it with a dynamic "
            "batch, torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},)), "
            "or at batch 1, or pass the module as module:factory")
    if input_shape is None:
        example = getattr(ep, "example_inputs", None)
        args = example[0] if example else ()
        if not args:
            raise InputShapeError(f"{named('model', path)}: "
                                  f"holds no example inputs; pass {opt('--input-shape', 'input_shape')}")
        input_shape = (1, *tuple(args[0].shape[1:]))
    from edgecompress.models.exported import ExportedModule

    # [audit #27] the program fixes its input's dtype (a program traced on token ids takes int64)
    dtype = str(val.dtype).removeprefix("torch.") if val is not None and hasattr(val, "dtype") else "float32"
    extra = SpecExtra(fixed_batch=fixed) if fixed else SpecExtra()
    if (vocab := _program_vocab(ep, user[0])) is not None:
        extra["vocab_size"] = vocab
    # output_names: named by check_forward from what the program returns (its out_spec: a dict
    # stays a dict), as a module's are
    program = ep.module()  # its forward() keeps the traced module's parameter name: the input's
    return ModelSpec(name=path.stem, module=ExportedModule(program, fixed).eval(),
                     inputs=[InputSpec(input_shape, input_names_from(program)[0], dtype)], source=str(path),
                     output_names=[], extra=extra)


def _program_vocab(ep: Any, name: str) -> int | None:
    """Rows of the embedding table a program's input indexes straight away (aten.embedding of the
    input placeholder), else None: its random example ids must stay below it."""
    import torch

    for n in ep.graph.nodes:
        if n.op == "call_function" and n.target == torch.ops.aten.embedding.default and len(n.args) > 1 \
                and getattr(n.args[1], "name", None) == name:
            table = n.args[0].meta.get("val") if hasattr(n.args[0], "meta") else None
            return int(table.shape[0]) if table is not None else None
    return None


def _check_external_data(path: Path, model: Any) -> None:
    """Weights kept beside the .onnx (onnx.save(..., save_as_external_data=True)) are read from
    the file's folder by every consumer. A missing or short data file got as far as an "export"
    that copied a weightless stub, or an ONNX Runtime error naming a temporary folder: refuse it
    here, naming the file. The model proto itself is read without the data (it can be large)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from edgecompress.exporters._onnx_file import onnx_tensors

    sizes: dict[str, int] = {}  # location -> bytes the tensors need
    for t in onnx_tensors(model):
        if uses_external_data(t):
            info = ExternalDataInfo(t)
            end = (info.offset or 0) + (info.length or 0)
            sizes[info.location] = max(sizes.get(info.location, 0), end)
    folder = path.resolve().parent
    for location, need in sizes.items():
        data = (folder / location).resolve()
        # a model file must not make us read files elsewhere (onnx and ONNX Runtime refuse it too)
        if Path(location).is_absolute() or not data.is_relative_to(folder):
            raise InputFileError(f"{named('model', path)}: its external data location {location!r} is outside the "
                                 "model's folder")
        if not data.is_file():
            raise InputFileError(f"{named('model', path)}: its weights are kept in the external data file "
                                 f"{path.parent / location}, which is missing (copy it beside the .onnx)")
        if data.stat().st_size < need:
            raise InputFileError(f"{named('model', path)}: "
                                 f"its external data file {path.parent / location} is truncated "
                                 f"({data.stat().st_size} bytes, the tensors need {need})")


# domains whose ops the ONNX checker validates against their schemas (ONNX Runtime inlines the
# function-defined ones it has no kernel for)
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _check_onnx_ops(path: Path, model: Any) -> None:
    """Refuse an op of another domain (a custom op, or a com.microsoft op this ONNX Runtime lacks)
    at load. The checker lets any op of an unknown domain through, and such a file got as far as a
    copied artifact and a failed validation (exit 4) naming no node. ONNX Runtime's CPU kernel list
    is read without building a session (0.3 s, whatever the model's size)."""
    from onnxruntime.capi import _pybind_state as ort_c

    local = {(f.domain, f.name) for f in model.functions}  # model-local functions are inlined
    known: set[tuple[str, str]] | None = None
    nodes = [n for n in model.graph.node if n.domain not in _STANDARD_DOMAINS and (n.domain, n.op_type) not in local]
    for node in nodes:
        if known is None:
            known = {(k.domain, k.op_name) for k in ort_c.get_all_opkernel_def()
                     if k.provider == "CPUExecutionProvider"}
        if (node.domain, node.op_type) not in known:
            raise ExportError(
                f"{named('model', path)}: "
                f"node {node.name or '(unnamed)'!r} is op {node.domain}:{node.op_type}, which ONNX "
                f"Runtime {_ort_version()} does not implement on CPU (a custom op); neither ONNX Runtime nor "
                "OpenVINO can run or quantize this file: export the model without it, or from its PyTorch source")


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _load_onnx(ref: str, input_shape: tuple[int, ...] | None = None, **_: Any) -> ModelSpec:
    import onnx

    path = Path(ref)
    if not path.is_file():
        raise InputFileError(f"{named('model', path)}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        _check_external_data(path, model)
        # by path: the checker then finds external data beside the model; given the proto it
        # looked in the working directory and refused a complete model run from elsewhere
        onnx.checker.check_model(str(path))
    except EdgeCompressError:
        raise
    except Exception as e:
        raise InputFileError(
            f"{named('model', path)}: not a valid ONNX model ({type(e).__name__}: "
            f"{first_line(e, 160, empty='')})"
        ) from e
    _check_onnx_ops(path, model)
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    # [audit C #7] checked here as _load_pt2 does, not left to an ONNX Runtime traceback later.
    # A fixed batch other than 1 cannot be fed per sample (only batch 1 is; see _load_pt2) nor
    # re-exported with another batch.
    for gi in graph_inputs:
        dims = gi.type.tensor_type.shape.dim
        if dims and dims[0].dim_value > 1:
            raise ModelLoadError(
                f"{named('model', path)}: input {gi.name!r} has a fixed batch of {dims[0].dim_value}; export it with a "
                f"dynamic batch (torch.onnx.export(..., dynamic_axes={{{gi.name!r}: {{0: 'batch'}}}})) or at batch 1")
    inputs = []
    sizes: dict[str, int] = {}  # symbolic dim name -> the size --input-shape gives it (in input 0)
    for i, gi in enumerate(graph_inputs):
        file_dims = gi.type.tensor_type.shape.dim
        if input_shape and i == 0:  # (the checker requires a graph input's shape: its rank is known)
            _check_onnx_shape(path, gi.name, file_dims, input_shape)
            shape = tuple(input_shape)
            sizes = {d.dim_param: n for d, n in zip(file_dims, shape, strict=True) if d.dim_param}
        else:
            shape = (1, *_onnx_fixed_dims(path, gi.name, file_dims, sizes, first=i == 0))
        elem = onnx.helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type)
        inputs.append(InputSpec(shape, gi.name, str(elem)))
    first = graph_inputs[0].type.tensor_type.shape.dim if graph_inputs else []
    # batch fixed at 1 in the file: calibrate and validate it one sample at a time (see _load_pt2)
    fixed = SpecExtra(fixed_batch=1) if first and first[0].dim_value == 1 else SpecExtra()
    if len(inputs) == 1 and inputs[0].is_integer and (vocab := _onnx_vocab(model, inputs[0].name)) is not None:
        fixed["vocab_size"] = vocab  # calibration / evaluation ids are checked against it, as a torch model's
    # Several inputs (input_ids + attention_mask / token_type_ids): each integer input's bound
    # where the graph shows one, the rows of the table it is gathered from (`_onnx_vocab`).
    # An input that indexes no table (an attention mask, multiplied in; a position offset
    # added to an index) has no bound the file states: it is not checked, and not guessed.
    elif len(inputs) > 1 and (bounds := onnx_input_vocab(model, [i.name for i in inputs if i.is_integer])):
        fixed["input_vocab"] = bounds
    return ModelSpec(
        name=path.stem,
        module=None,
        inputs=inputs,
        source=str(path),
        onnx_path=path,
        output_names=[o.name for o in model.graph.output],
        extra=fixed,
    )


def _dims_text(file_dims: Any) -> str:
    """An ONNX input's shape as its file has it: `[N, 3, H, W]` (a dimension of no size or name is `?`)."""
    return "[" + ", ".join(str(d.dim_value) if d.dim_value > 0 else (d.dim_param or "?") for d in file_dims) + "]"


def _onnx_fixed_dims(path: Path, name: str, file_dims: Any, sizes: dict[str, int], first: bool) -> list[int]:
    """The non-batch sizes of an input --input-shape does not give. A symbolic one (`H`, `W`, a
    sequence length) takes the size --input-shape gave the first input's dimension of that name
    (an attention mask's `seq` is input_ids'), else is refused in one line: it became 1, and a
    `[N, 3, H, W]` model was calibrated, converted and timed at 1x1. The batch stays as it is."""
    rest = list(file_dims[1:])
    free = [i for i, d in enumerate(rest, 1) if d.dim_value <= 0 and d.dim_param not in sizes]
    if free:
        what = ", ".join(rest[i - 1].dim_param or f"dimension {i}" for i in free)
        if not first:
            raise InputShapeError(f"{named('model', path)}: "
                                  f"input {name!r} {_dims_text(file_dims)} has no fixed {what}, and "
                                  f"{opt('--input-shape', 'input_shape')} (the first input's shape) names no such "
                                  "dimension; export the file with it fixed")
        slots = ", ".join(dict.fromkeys(rest[i - 1].dim_param or "?" for i in free))
        example = ",".join(["1", *(str(d.dim_value) if d.dim_value > 0 else (d.dim_param or "?") for d in rest)])
        raise InputShapeError(f"{named('model', path)}: "
                              f"input {name!r} {_dims_text(file_dims)} has no fixed {what}; pass "
                              f"its shape with {opt('--input-shape', 'input_shape')} ({example} with numbers for "
                              f"{slots})")
    return [d.dim_value if d.dim_value > 0 else sizes[d.dim_param] for d in rest]


def onnx_input_vocab(model: Any, names: list[str]) -> dict[str, int]:
    """{input: rows of the table it indexes} for the inputs `names` (of ids) that index one
    (`_onnx_vocab`); the rest are left out. A spec's `input_vocab` (`_load_onnx`), and validate's
    bounds for the random ids of a loose .onnx (the onnx format's `read_vocab`)."""
    return {n: v for n in names if (v := _onnx_vocab(model, n)) is not None}


def _onnx_vocab(model: Any, name: str) -> int | None:
    """Rows of the embedding table an ONNX input of ids indexes first, else None: a Gather on axis 0
    of the input (or of a Cast of it) whose table is an initializer or a Constant, or their
    DequantizeLinear (an int8 file's table). Several such tables: the smallest. [audit #27] the
    `.onnx` twin of a torch model's nn.Embedding num_embeddings (`check_forward`)."""
    rows = {i.name: int(i.dims[0]) for i in model.graph.initializer if len(i.dims) >= 1}
    producer = {o: n for n in model.graph.node for o in n.output}

    def table_rows(value: str) -> int | None:
        if value in rows:
            return rows[value]
        node = producer.get(value)
        if node is not None and node.op_type == "DequantizeLinear":
            return table_rows(node.input[0])
        if node is not None and node.op_type == "Constant":
            t = next((a.t for a in node.attribute if a.name == "value"), None)
            return int(t.dims[0]) if t is not None and len(t.dims) >= 1 else None
        return None

    ids, found = {name}, []
    for node in model.graph.node:  # topologically sorted (the checker says so): a Cast comes before its users
        if node.op_type == "Cast" and node.input and node.input[0] in ids:
            ids.update(node.output)
        elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in ids \
                and next((a.i for a in node.attribute if a.name == "axis"), 0) == 0 \
                and (n := table_rows(node.input[0])) is not None:
            found.append(n)
    return min(found) if found else None


def _check_onnx_shape(path: Path, name: str, file_dims: Any, shape: tuple[int, ...]) -> None:
    """--input-shape against the file's static dimensions: an ONNX model has no forward pass to
    try (check_forward), and a wrong flag was reported as wrong calibration data, or as an
    OpenVINO conversion failure. Symbolic dimensions (a sequence length) take any size."""
    text = _dims_text(file_dims)
    given = opt("--input-shape", "input_shape", _shape_text(shape))
    if len(file_dims) != len(shape):
        raise InputShapeError(f"{given}: {path} takes input {name!r} of rank {len(file_dims)} "
                              f"{text}, not rank {len(shape)}")
    for i, (d, want) in enumerate(zip(file_dims, shape, strict=True)):
        if i > 0 and d.dim_value > 0 and d.dim_value != want:
            raise InputShapeError(f"{given}: {path} fixes dimension {i} of input {name!r} to "
                                  f"{d.dim_value} (its shape is {text}); pass it as it is or leave "
                                  f"{say('the flag', 'it')} out")
    named: dict[str, int] = {}
    for i, (d, want) in enumerate(zip(file_dims, shape, strict=True)):
        # one name is one size in the graph: [N, 3, S, S] is a square input of any side
        if i > 0 and d.dim_value <= 0 and d.dim_param and named.setdefault(d.dim_param, want) != want:
            raise InputShapeError(f"{given}: {path} gives input {name!r} the shape {text}, so its "
                                  f"dimensions named {d.dim_param!r} take one size, not "
                                  f"{named[d.dim_param]} and {want}")


LOADERS.register("zoo", (lambda r: r.startswith("zoo:"), _load_zoo))
LOADERS.register("pt2", (lambda r: r.endswith(".pt2"), _load_pt2))
LOADERS.register("onnx", (lambda r: r.endswith(".onnx"), _load_onnx))
LOADERS.register(
    "factory",
    (
        # not zoo:NAME, nor hf:DIR (`hf:tinybert`, a folder, was read as module `hf`, factory `tinybert`)
        lambda r: re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", r) is not None and not r.startswith(("zoo:", "hf:")),
        _load_factory,
    ),
)

# Hugging Face model directories and zoo:minilm-l6 register themselves on import (models/hf.py).
import edgecompress.models.hf  # noqa: E402, F401


def _check_batch_1(shape: tuple[int, ...] | None) -> None:
    """The first dimension of an input shape is the batch, and the shape describes one sample:
    every loader replaces it (files get a dynamic batch, or batch 1) and `--batch N` times other
    batches. `--input-shape 2,64` was accepted, recorded in the report as [2, 64], and ignored."""
    if shape is None or shape[0] == 1:
        return
    given = opt("--input-shape", "input_shape", _shape_text(shape))
    if len(shape) == 1:
        raise InputShapeError(f"{given}: the first dimension is the batch, 1; give it first, "
                              f"e.g. {_shape_text((1, shape[0]))}")
    batch = say(f"pass --batch {shape[0]}", f"pass ValidateSettings(batches=(1, {shape[0]}))",
                f"set options.batch: [{shape[0]}]")
    raise InputShapeError(f"{given}: the first dimension is the batch and must be 1 (the "
                          f"files take a dynamic batch or batch 1); to time batch {shape[0]} {batch}, "
                          f"with {opt('--input-shape', 'input_shape', _shape_text((1, *shape[1:])))}")


def _describe_ref(ref: Any) -> str:
    """What a wrong `load_model` argument is, with the likely fix."""
    import torch

    if isinstance(ref, type) and issubclass(ref, torch.nn.Module):
        return f"the class {ref.__name__} (pass an instance, {ref.__name__}(...))"
    if isinstance(ref, dict):
        if ref and all(isinstance(v, torch.Tensor) for v in ref.values()):
            return ("a state_dict (it has no architecture: load it into the module, or pass "
                    "'module:factory' with weights=)")
        return "dict"
    if isinstance(ref, (list, tuple)):
        return f"a {type(ref).__name__} (pass one model at a time)"
    return type(ref).__name__


def load_model(
    ref: ModelLike,
    input_shape: ShapeLike | None = None,
    weights: str | os.PathLike[str] | None = None,
    preprocess: str | Transform | None = None,
    name: str | None = None,
    output_names: Sequence[str] | None = None,
    input_dtype: str | None = None,
    input_names: Sequence[str] | None = None,
) -> ModelSpec:
    """Load a model from a reference string (see module doc) or wrap an `nn.Module` (copied).

    `input_dtype` (float32, int64, int32) is what a module:factory or nn.Module takes: int64 / int32
    for token or class ids. Unset: float32, or int64 for a model whose first layer is an
    nn.Embedding (a note says so). Files and zoo / Hugging Face models carry their own dtype; a
    different `input_dtype` is refused.

    A `ModelSpec` comes back as it is, or, with `name` / `preprocess` / `output_names`, as a
    relabelled copy with its own `extra` that shares the module object (deep-copy the module for
    a separate one). `output_names` names the first outputs (the others are named from the
    outputs: `check_forward`); `input_names` names every input, one name each (default: forward()'s
    parameter names); an `.onnx` keeps its file's names, and a text encoder its tokenizer's.
    """
    import torch

    shape = parse_shape(input_shape)
    given = _given_output_names(ref, output_names)
    given_inputs = _given_names("input", ref, input_names)
    dtype = check_input_dtype(input_dtype) if input_dtype is not None else None
    if isinstance(ref, ModelSpec):
        if shape is not None and tuple(shape) != tuple(ref.input_shape):
            raise InputShapeError(f"{opt('--input-shape', 'input_shape', _shape_text(shape))}: the ModelSpec "
                                  f"{ref.name} takes {_shape_text(tuple(ref.input_shape))}")
        _check_declared_dtype(ref, dtype)
        if weights is not None:
            raise ConfigError(f"{_weights_opt(weights)}: load them into the module before wrapping it in a ModelSpec")
        if not (name or preprocess or given is not None or given_inputs is not None):
            return ref
        # a relabelled copy (name / preprocess were ignored before); its records are its own, so a
        # pass appending to one spec's `passes` no longer shows in the other; the module is shared
        ref = dataclasses.replace(ref, extra={**ref.extra, "passes": list(ref.extra.get("passes", []))})
        if preprocess:
            if isinstance(preprocess, str):
                from edgecompress.data.presets import PRESETS

                PRESETS.get(preprocess, "--preprocess", "preprocess")
            ref.preprocess = preprocess
        if name:
            ref.name = name
        if given_inputs is not None:
            ref.inputs = _renamed_inputs(ref, given_inputs)
            check_output_names(ref.output_names, f"model {ref.name}", given_inputs)
        if given is not None:
            from edgecompress.models.modes import kept_modes

            with kept_modes(ref.module):
                # a spec built by hand may hold a module in train mode (its forward would move
                # BatchNorm statistics); a QAT graph is in eval already and refuses .eval()
                if ref.module is not None and ref.module.training:
                    ref.module.eval()
                check_forward(ref, given)
        return ref
    _check_batch_1(shape)
    if isinstance(ref, torch.nn.Module):
        if shape is None:
            raise InputShapeError("input_shape is required when loading an nn.Module")
        _refuse_torchscript(ref, "the model is")
        # A copy: the exporters and passes call .eval() on the spec's module, and a caller's
        # training loop went on in eval mode after load_model / prune / export. A module that
        # cannot be copied (locks, open files) is used as it is.
        try:
            module = copy.deepcopy(ref)
        except Exception:
            module = ref
        if weights is not None:  # into the copy; it was dropped without a word (untrained weights exported)
            _load_weights(module, weights)
        spec = ModelSpec(
            name=name or type(ref).__name__,
            module=module.eval(),
            inputs=[InputSpec(shape, input_names_from(module)[0], dtype or "float32")],
            source=f"python:{type(ref).__name__}",
            output_names=[],  # named from its outputs by check_forward
        )
    else:
        if not isinstance(ref, (str, os.PathLike)):
            # str(ref) made a state_dict's or a list's repr a "file name" (OSError: File name too
            # long) and a class a missing file
            raise ConfigError(f"load_model: model must be a path / 'zoo:NAME' / 'module:factory' / nn.Module / "
                              f"ModelSpec, got {_describe_ref(ref)}")
        ref = os.fspath(ref)
        from edgecompress.fileio import require_utf8_name

        require_utf8_name(ref, "model")
        for kind, (accepts, loader) in LOADERS:
            if accepts(ref):
                if weights is not None and kind != "factory":  # it was silently ignored
                    raise ConfigError(f"{_weights_opt(weights)}: {ref} carries its own weights; "
                                      f"{opt('--weights', 'weights')} loads a state_dict into a module:factory model")
                spec = loader(ref, input_shape=shape, weights=weights, input_dtype=dtype)
                if kind != "factory":  # files, zoo and Hugging Face models fix their own dtype
                    _check_declared_dtype(spec, dtype)
                break
        else:
            if not Path(ref).exists() and Path(ref).suffix:  # before the checkpoint advice below
                raise InputFileError(f"{named('model', ref)}: no such file")
            if Path(ref).suffix in (".pt", ".pth", ".bin", ".ckpt"):
                raise ModelLoadError(
                    f"{named('model', ref)}: a bare checkpoint has no architecture; pass {_factory_with_weights()} "
                    "or a .pt2 ExportedProgram"
                )
            raise ModelLoadError(f"{named('model', ref)}: not a zoo:NAME, module:factory, .pt2 or .onnx reference")
    if preprocess:
        if isinstance(preprocess, str):  # checked now, not only when image files are read
            from edgecompress.data.presets import PRESETS

            PRESETS.get(preprocess, "--preprocess", "preprocess")
        spec.preprocess = preprocess
    if name:
        spec.name = name
    if given is not None and spec.module is None:
        raise ConfigError(f"output_names={given}: {spec.source} is an ONNX model, whose outputs keep the names in "
                          f"its file ({spec.output_names}); rename them there")
    if given_inputs is not None:
        spec.inputs = _renamed_inputs(spec, given_inputs)
    _check_finite_weights(spec, _weights_opt(weights) if weights is not None else
                          named("model", ref) if isinstance(ref, str) else f"model {spec.name}")
    check_forward(spec, given, dtype_declared=dtype is not None)
    return spec


def _check_finite_weights(spec: ModelSpec, where: str) -> None:
    """Refuse a model with NaN in a weight or buffer, or Inf in a weight: a diverged training run or
    a corrupt checkpoint. It loaded and exported: the fp32 reference's top-1 was read off NaN
    logits (argmax 0), each artifact then failed validation as 'outputs hold NaN or Inf' (exit 4,
    read as a regression), and int8 failed as an export error ('supplied range of [nan, nan] is not
    finite', exit 3), none of them naming the file or the tensor. A buffer may hold Inf (a mask)."""
    import torch

    module = spec.module
    if not isinstance(module, torch.nn.Module):
        return
    weights = {id(p) for p in module.parameters()}
    with torch.no_grad():
        for key, t in module.state_dict(keep_vars=True).items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.device.type == "meta":
                continue
            nan = bool(torch.isnan(t).any())
            if nan or (id(t) in weights and not bool(torch.isfinite(t).all())):
                raise ModelLoadError(f"{where}: {key} holds {'NaN' if nan else 'Inf'} values (a diverged "
                                     "training run or a corrupt checkpoint?)")


def _given_output_names(ref: Any, names: Sequence[str] | None) -> list[str] | None:
    """load_model's `output_names` as a list (None: not given); a bare string is refused, as
    it would read as one name per character."""
    return _given_names("output", ref, names)


def _given_names(kind: str, ref: Any, names: Sequence[str] | None) -> list[str] | None:
    """load_model's `output_names` / `input_names` (`kind`) as a list (None: not given); a bare
    string is refused, as it would read as one name per character, and so is a ModelSpec of an
    .onnx file, whose names are in the file."""
    if names is None:
        return None
    example = "['logits', 'embedding']" if kind == "output" else "['pixels']"
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{kind}_names={names!r}: a list of names, one per {kind}, e.g. {example}")
    if isinstance(ref, ModelSpec) and ref.module is None:
        held = ref.output_names if kind == "output" else [i.name for i in ref.inputs]
        raise ConfigError(f"{kind}_names={list(names)}: {ref.source or ref.name} is an ONNX model, whose {kind}s "
                          f"keep the names in its file ({held}); rename them there")
    return list(names)


def _renamed_inputs(spec: ModelSpec, names: list[str]) -> list[InputSpec]:
    """`spec`'s inputs under `names` (load_model's `input_names`): one valid, distinct name per
    input. Refused for an .onnx (its file's names) and a text encoder (its tokenizer's names key
    the data and the exporters' calls)."""
    where = f"input_names={names}"
    if spec.module is None:
        raise ConfigError(f"{where}: {spec.source} is an ONNX model, whose inputs keep the names in its file "
                          f"({[i.name for i in spec.inputs]}); rename them there")
    if spec.is_text:
        raise ConfigError(f"{where}: {spec.name} is a text encoder, whose inputs take its tokenizer's names "
                          f"({[i.name for i in spec.inputs]})")
    if len(names) != len(spec.inputs):
        raise ConfigError(f"{where}: {len(names)} name(s) for the {len(spec.inputs)} input(s) of model {spec.name} "
                          f"({[i.name for i in spec.inputs]}); give one name per input")
    check_input_names(names, where)
    return [dataclasses.replace(i, name=n) for i, n in zip(spec.inputs, names, strict=True)]


def _check_declared_dtype(spec: ModelSpec, dtype: str | None) -> None:
    """--input-dtype / input_dtype= against a model that fixes its own (a file, a zoo or Hugging
    Face model, a ModelSpec): it would be ignored, or change what the file takes."""
    if dtype is None or not spec.inputs or spec.inputs[0].dtype == dtype:
        return
    first = spec.inputs[0]
    raise InputShapeError(f"{opt('--input-dtype', 'input_dtype', dtype, quoted=True)}: {spec.source or spec.name} "
                          f"takes input {first.name!r} as {first.dtype}; leave {say('the flag', 'it')} out (only a "
                          "module:factory or nn.Module takes it)")


def count_params_macs(spec: ModelSpec) -> tuple[int, int]:
    """Parameters and multiply-accumulates of one sample (batch 1), via Torch-Pruning's counter.

    The counter runs the model with forward hooks: a module it cannot hook or run raises a
    one-line ModelLoadError (callers that only report the numbers fall back, see pipeline). A
    converted QAT graph cannot be traced by it: the QAT pass recorded its float model's counts."""
    if spec.extra.get("quantized") and "params" in spec.extra:
        return int(spec.extra["params"]), int(spec.extra["macs"])
    if spec.module is None:
        return 0, 0
    import torch

    from edgecompress.models.exported import ExportedModule
    from edgecompress.models.macs import count_ops_and_params

    try:
        with torch.no_grad():
            if isinstance(spec.module, ExportedModule):
                macs, params = _program_ops_and_params(spec)
            else:
                macs, params = count_ops_and_params(spec.module, spec.example_inputs(1))
    except Exception as e:
        first = first_line(e, 160, empty="")
        raise ModelLoadError(f"model {spec.name}: cannot count its parameters and MACs "
                             f"({type(e).__name__}: {first})") from e
    return int(params), int(macs)


def _program_ops_and_params(spec: ModelSpec) -> tuple[int, int]:
    """MACs and parameters of a .pt2 program (`ExportedModule`).

    Its graph has no nn.Conv2d / nn.Linear modules for Torch-Pruning's hooks, which counted 0 MACs
    (a recipe's beta read 0.000, "all removed"); `program_macs` counts its graph as the hooks count
    the same model in eager (BatchNorm and pooling included), so a .pt2 and its module agree.
    """
    from edgecompress.models.exported import ExportedModule, program_macs

    assert isinstance(spec.module, ExportedModule)  # count_params_macs's branch
    macs = program_macs(spec.module.graph_module, *spec.example_inputs(1))
    return macs, sum(p.numel() for p in spec.module.parameters())
