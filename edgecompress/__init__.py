"""edgecompress: compress a trained PyTorch model, export it, validate it on edge targets.

Public names are imported lazily (module-level __getattr__) so `import edgecompress` stays light.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# ONNX Runtime 1.32 keeps usage telemetry (1DS: a device ID and a queue of events naming the
# executable, distro and CPU, in ~/.cache/Microsoft/DeveloperTools/.onnxruntime) unless this is set
# before onnxruntime is imported; `ort.disable_telemetry_events()` did not stop it. A build tool
# must not phone home unasked (as for OpenVINO, targets/bench.py `decline_openvino_telemetry`); a
# value the user set is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# `validate` comes from its defining module: imported from edgecompress.targets, mypy took it for the
# submodule edgecompress.targets.validate and typed edgecompress.validate as a module.
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first use
    from edgecompress.data import DataLike, Dataset, DataSpec, load_data
    from edgecompress.exporters import Artifact, ExportOptions, export
    from edgecompress.models import ModelLike, ModelSpec, ShapeLike, load_model
    from edgecompress.passes.distill import distill
    from edgecompress.passes.lowrank import lowrank
    from edgecompress.passes.prune import prune
    from edgecompress.passes.qat import qat
    from edgecompress.passes.resolution import resolution
    from edgecompress.pipeline import ExportJob, run_export
    from edgecompress.recipe import Recipe, load_recipe, run_recipe, save_recipe
    from edgecompress.report import Report, write_report
    from edgecompress.targets.profile import TargetProfile
    from edgecompress.targets.validate import Measurement, ValidateSettings, reference_outputs, validate

# name -> (module, attribute). [issue #4] compression passes and the recipe runner.
_LAZY: dict[str, tuple[str, str]] = {
    # The spine: each stage usable alone.
    "load_model": ("edgecompress.models", "load_model"),
    "load_data": ("edgecompress.data", "load_data"),
    "DataSpec": ("edgecompress.data", "DataSpec"),
    "export": ("edgecompress.exporters", "export"),
    "ExportOptions": ("edgecompress.exporters", "ExportOptions"),
    "validate": ("edgecompress.targets", "validate"),
    "ValidateSettings": ("edgecompress.targets", "ValidateSettings"),
    "reference_outputs": ("edgecompress.targets", "reference_outputs"),
    "write_report": ("edgecompress.report", "write_report"),
    "run_export": ("edgecompress.pipeline", "run_export"),
    "ExportJob": ("edgecompress.pipeline", "ExportJob"),
    "prune": ("edgecompress.passes.prune", "prune"),
    "lowrank": ("edgecompress.passes.lowrank", "lowrank"),
    "distill": ("edgecompress.passes.distill", "distill"),
    "resolution": ("edgecompress.passes.resolution", "resolution"),
    "qat": ("edgecompress.passes.qat", "qat"),
    "run_recipe": ("edgecompress.recipe", "run_recipe"),
    "load_recipe": ("edgecompress.recipe", "load_recipe"),
    "save_recipe": ("edgecompress.recipe", "save_recipe"),
    # the types those functions take and return, so a typed script needs one import
    "ModelSpec": ("edgecompress.models", "ModelSpec"),
    "Dataset": ("edgecompress.data", "Dataset"),
    "Artifact": ("edgecompress.exporters", "Artifact"),
    "Measurement": ("edgecompress.targets", "Measurement"),
    "TargetProfile": ("edgecompress.targets", "TargetProfile"),
    "Report": ("edgecompress.report", "Report"),
    "Recipe": ("edgecompress.recipe", "Recipe"),
    # what those functions' parameters accept (type aliases; strings at run time, as annotations are)
    "DataLike": ("edgecompress.data", "DataLike"),
    "ModelLike": ("edgecompress.models", "ModelLike"),
    "ShapeLike": ("edgecompress.models", "ShapeLike"),
}

__all__ = [  # the same names as _LAZY (tests/test_api.py checks it)
    "Artifact", "DataLike", "DataSpec", "Dataset", "ExportJob", "ExportOptions", "Measurement", "ModelLike",
    "ModelSpec", "Recipe", "Report", "ShapeLike", "TargetProfile", "ValidateSettings", "distill", "export",
    "load_data", "load_model", "load_recipe", "lowrank", "prune", "qat", "reference_outputs", "resolution",
    "run_export", "run_recipe", "save_recipe", "validate", "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
