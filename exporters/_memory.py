"""[issue #7] Keep memory flat when one process exports again and again (used by `api.export`).

Measured on EfficientNet-Lite0 to TFLite, 3-4 exports in one process (benchmarks/RESULTS-load.md):
RSS after each export grew ~150-200 MB per run. Three causes, none a reference of ours
(4-6 were found later):

1. torch 2.13's strict `torch.export` (litert-torch's PT2E path, `_litert_convert._export`)
   installs every captured graph as a global `__compiled_fn_<n>_<uuid>` of
   torch/_dynamo/functional_export.py (dynamo's `install_global_unsafe` writes into the traced
   frame's globals, and that frame is functional_export's wrapper) and never removes it. Each
   entry keeps an OptimizedModule -> dynamo GraphModule -> the model's parameters and FakeTensors
   alive: 18 MB of weights and ~30 k Python objects per EfficientNet-Lite0 export.
   `torch._dynamo.reset()` does not drop them. Also, torch/fx/experimental/proxy_tensor.py's
   `_FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT` holds the last traced graph until the next trace
   (bounded, one graph). `forget_export_state` removes the former (only the keys that appeared
   during our call) and empties the latter; the ExportedPrograms do not use either afterwards.
2. torchao 0.18's `torchao.utils._assert_and_get_unique_device` and torch's
   `torch.ao.quantization.fx.utils.assert_and_get_unique_device` are unbounded `functools.cache`s
   keyed by module; the PT2E prepare/convert steps (TFLite int8) call them on their GraphModules,
   so each int8 export's prepared and converted graphs (observers, weights) stayed in those caches
   (~38 k Python objects per EfficientNet-Lite0 export). `forget_export_state` clears them (a
   device lookup, recomputed on demand).
3. glibc malloc's dynamic mmap threshold: once a large block (an image batch, a weight tensor)
   that was mmap()ed is freed, glibc raises the threshold to that size (up to 32 MB), so later
   blocks of that size come from the heap, where long-lived small allocations of the converter
   pin their pages. With the threshold pinned at glibc's default 128 KiB (what
   `MALLOC_MMAP_THRESHOLD_=131072` does) the same loop grew ~10 MB per run instead of ~130 MB,
   and `malloc_trim` alone did not help. `pin_mmap_threshold` does that once per process, unless
   the user already set the threshold through the environment. Freed large blocks then go back
   to the OS at once; the price is an mmap/munmap per large allocation.
4. OpenVINO's PyTorch frontend (`ov.convert_model` on an nn.Module: openvino/frontend/pytorch/
   ts_decoder.py, `TorchScriptPythonDecoder`) runs `torch.jit.trace`, which compiles every
   submodule's traced `forward` into TorchScript's process-wide CompilationUnit
   (`torch.jit._state._python_cu`, one fresh `QualnameWrapper` class per submodule per trace);
   the CU owns those functions for the life of the process, and
   `torch.jit._recursive.concrete_type_store.methods_compiled` keeps their concrete types.
   234 functions and ~19 MB per EfficientNet-Lite0 trace (about the model's weights), every
   OpenVINO export (fp32, fp16, int8), 52 functions / ~3 MB for digits-cnn; a bare
   `torch.jit.trace` loop grows the same. The CU can only drop all its functions
   (`drop_all_functions`; a ScriptModule still using one would then crash), so
   `forget_export_state` does it only when that is ours alone to drop: the CU held no function
   before the export, every function now in it is a method of a class, no ScriptModule is alive
   and no TorchScript class was scripted. Otherwise (the caller scripts models itself) it leaves
   the CU alone and the old growth stays. A failed conversion's traceback still holds the traced
   ScriptModule when the clean-up runs, so its functions stay; they are remembered as ours
   (`_left_by_us`), and the next export, which finds only those in the CU, drops them with its
   own (otherwise every later export in the process kept its 52-234 functions too).
   ONNX (dynamo exporter) and TFLite do not trace.
5. torch 2.13's dynamo guards (strict `torch.export` again, TFLite's path): `CheckFunctionManager.
   id_ref` registers a `weakref.finalize(obj, partial(self.invalidate, ...))` for every object an
   ID/type/module guard references: classes, code objects, modules, builtins, objects that live
   as long as the process. The finalizer never runs, so CPython's finalize registry keeps each
   export's CheckFunctionManager and its C++ guard tree (with the guards' captured stack
   summaries) for good: 69 finalizers and ~6 k Python objects per TFLite fp32/fp16 export of
   EfficientNet-Lite0, 279 / ~9 k per int8 export, ~12-15 MB RSS per TFLite export (after
   gc.collect + malloc_trim, 5 exports per format in one process: fp32 712 -> 748 MB, fp16
   703 -> 746 MB, dynamic-int8 721 -> 762 MB, i.e. ~55 MB per run of the four TFLite artifacts,
   the bulk of bench_load's growth). torch's own comment in `CheckFunctionManager.__init__` knows
   the finalizer can outlive the entry and only drops `output_graph`. `invalidate` acts only on a
   guard manager installed in a code object's cache (`guard_manager.cache_entry`); export's
   capture installs none, so the callback is a no-op: `forget_export_state` detaches the
   finalizers registered during our call whose CheckFunctionManager has no cache entry, and
   leaves any other (e.g. a `torch.compile` of the caller's) alone.
6. torch.fx keeps the generated Python source of every GraphModule it ever compiled
   (`torch.fx.graph_module._loader.eval_cache`, plus a lazy `linecache` entry each, for
   tracebacks) for the life of the process: 67 graphs per TFLite fp32 export of digits-cnn or
   EfficientNet-Lite0 (export, decompositions, litert-torch's passes), more for int8.
   `forget_export_state` drops the keys that appeared during our call; a GraphModule made during
   the export that someone still held would only lose its source lines in tracebacks.
Left (not ours, not cleared): the ONNX dynamo exporter keeps each export's ShapeEnv with its
fake-tensor dispatch cache (~7 k objects per EfficientNet-Lite0 export, +0-4 MB RSS per run after
malloc_trim); clearing ShapeEnv's method lru_caches and FakeTensorMode.cache does not free it
(something outside the gc-visible graph, probably C++ SymInts, anchors it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from collections.abc import Iterator
from typing import Any

_CAPTURE_MODULE = "torch._dynamo.functional_export"
_PROXY_MODULE = "torch.fx.experimental.proxy_tensor"
# functools.cache'd functions keyed by nn.Module that PT2E quantization calls (cause 2)
_MODULE_CACHES = (
    ("torchao.utils", "_assert_and_get_unique_device"),
    ("torch.ao.quantization.fx.utils", "assert_and_get_unique_device"),
)
_GUARDS_MODULE = "torch._dynamo.guards"
_FX_GRAPH_MODULE = "torch.fx.graph_module"
_JIT_STATE = "torch.jit._state"
_JIT_RECURSIVE = "torch.jit._recursive"
_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value
_pinned: bool | None = None
# qualified names of TorchScript functions our own exports' traces left in the global CU (cause 4)
_left_by_us: set[str] = set()


def _capture_globals() -> dict | None:
    mod = sys.modules.get(_CAPTURE_MODULE)
    return vars(mod) if mod is not None else None


def _jit_names() -> set[str] | None:
    """Qualified names of the functions of TorchScript's global CompilationUnit, or None if
    torch.jit is not loaded."""
    state = sys.modules.get(_JIT_STATE)
    cu = getattr(state, "_python_cu", None)
    return {f.qualified_name for f in cu.get_functions()} if cu is not None else None


def _forget_traced_functions(jit_before: int | None) -> int:
    """Drop the TorchScript functions a trace left in the global CU (cause 4), if none is ours not
    to drop; returns how many were dropped."""
    if jit_before != 0:  # unknown (None), or functions someone else may still run
        return 0
    state = sys.modules[_JIT_STATE]
    cu = state._python_cu
    functions = cu.get_functions()
    if not functions or getattr(state, "_script_classes", None):
        return 0
    if any(cu.get_class(f.qualified_name.rpartition(".")[0]) is None for f in functions):
        return 0  # a free function (torch.jit.script at import time): a module may hold it
    import gc

    import torch

    gc.collect()  # the traced ScriptModules are garbage by now; make sure they are gone
    script_module = torch.jit.ScriptModule  # type(o), not isinstance: no __class__ of lazy proxies
    if any(issubclass(type(o), script_module) for o in gc.get_objects()):
        return 0
    recursive = sys.modules.get(_JIT_RECURSIVE)
    store = getattr(recursive, "concrete_type_store", None)
    if store is not None:  # their types point at the functions: recompile rather than reuse them
        store.methods_compiled.clear()
        store.type_store.clear()
    cu.drop_all_functions()
    _left_by_us.clear()
    return len(functions)


def _finalizers() -> set:
    """The weakref.finalize objects alive now (CPython keeps them in a class-level registry)."""
    return set(getattr(weakref.finalize, "_registry", ()))


def _forget_guard_finalizers(before: set) -> int:
    """Detach the weakref finalizers dynamo's guards registered since `before` whose callback would
    do nothing (cause 5); returns how many."""
    guards = sys.modules.get(_GUARDS_MODULE)
    cfm_type = getattr(guards, "CheckFunctionManager", None)
    registry = getattr(weakref.finalize, "_registry", None)
    if cfm_type is None or registry is None:
        return 0
    dropped = 0
    for f in list(registry.keys() - before):
        info = registry.get(f)
        func = getattr(info, "func", None)
        method = getattr(func, "func", None)  # functools.partial(cfm.invalidate, obj_str=...)
        cfm = getattr(method, "__self__", None)
        if type(cfm) is not cfm_type or getattr(method, "__name__", "") != "invalidate":
            continue
        # invalidate() only acts on a guard manager installed in a code object's cache; export's
        # capture never installs one (cache_entry None), so the callback is a no-op: drop it.
        if getattr(getattr(cfm, "guard_manager", None), "cache_entry", None) is not None:
            continue
        f.detach()
        dropped += 1
    return dropped


def _fx_sources() -> set[str]:
    """Keys of torch.fx's cache of generated GraphModule sources (empty if fx is not loaded)."""
    loader = getattr(sys.modules.get(_FX_GRAPH_MODULE), "_loader", None)
    return set(getattr(loader, "eval_cache", ()))


def _forget_fx_sources(before: set[str]) -> int:
    """Drop the generated GraphModule sources (and their linecache entries) that appeared since
    `before` (cause 6); returns how many."""
    import linecache

    loader = getattr(sys.modules.get(_FX_GRAPH_MODULE), "_loader", None)
    cache = getattr(loader, "eval_cache", None)
    if not isinstance(cache, dict):
        return 0
    new = set(cache) - before
    for key in new:
        cache.pop(key, None)
        linecache.cache.pop(key, None)
    return len(new)


def forget_export_state(
    before: set[str],
    jit_before: int | None = None,
    finalizers_before: set | None = None,
    fx_before: set[str] | None = None,
) -> int:
    """Drop the `__compiled_fn*` globals torch's strict export added since `before` (a snapshot of
    functional_export's global names), empty the fake-tensor proxy map and torchao's device cache,
    drop the TorchScript functions OpenVINO's trace compiled if the global CU had none before
    (`jit_before`, see `_forget_traced_functions`) and detach the no-op guard finalizers
    registered since `finalizers_before` (cause 5) and the GraphModule sources fx cached since
    `fx_before` (cause 6); returns how many entries were dropped."""
    dropped = _forget_traced_functions(jit_before)
    if finalizers_before is not None:
        dropped += _forget_guard_finalizers(finalizers_before)
    if fx_before is not None:
        dropped += _forget_fx_sources(fx_before)
    g = _capture_globals()
    if g is not None:
        for key in set(g) - before:
            if key.startswith("__compiled_fn"):
                g.pop(key, None)
                dropped += 1
    proxy = sys.modules.get(_PROXY_MODULE)
    leak_map = getattr(proxy, "_FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT", None)
    if isinstance(leak_map, dict):
        leak_map.clear()
    for module, name in _MODULE_CACHES:
        cached: Any = getattr(sys.modules.get(module), name, None)
        if hasattr(cached, "cache_info") and cached.cache_info().currsize:
            dropped += cached.cache_info().currsize
            cached.cache_clear()
    return dropped


@contextlib.contextmanager
def released_export_state() -> Iterator[None]:
    """Run an export, then drop what torch's export machinery kept of it (see module doc)."""
    g = _capture_globals()
    before = set(g) if g is not None else set()
    jit = _jit_names()
    # functions an earlier export of ours left (its failure's traceback held them) count as ours
    jit_before = len(jit - _left_by_us) if jit is not None else 0
    finalizers_before = _finalizers()
    fx_before = _fx_sources()
    try:
        yield
    finally:
        jit_after = _jit_names()
        if jit_after is not None and jit_before == 0:
            _left_by_us.update(jit_after - (jit or set()))
        if forget_export_state(before, jit_before, finalizers_before, fx_before):
            import gc

            gc.collect()  # the dropped graphs hold reference cycles (GraphModule <-> Graph <-> Node)


def pin_mmap_threshold() -> bool:
    """Pin glibc malloc's mmap threshold at 128 KiB once per process (see module doc, cause 3).

    No-op (False) off glibc, or when MALLOC_MMAP_THRESHOLD_ / GLIBC_TUNABLES already set it.
    """
    global _pinned
    if _pinned is not None:
        return _pinned
    _pinned = False
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _pinned = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    return _pinned
