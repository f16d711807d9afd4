"""Models: the ModelSpec contract, the zoo and the loaders."""

from edgecompress.models.loaders import count_params_macs, load_model
from edgecompress.models.spec import InputSpec, ModelSpec, SpecExtra

__all__ = ["InputSpec", "ModelSpec", "SpecExtra", "count_params_macs", "load_model"]
