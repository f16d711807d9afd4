"""Models: the ModelSpec contract, the zoo and the loaders."""

from edgecompress.models.loaders import count_params_macs, load_model
from edgecompress.models.spec import InputSpec, ModelLike, ModelSpec, ShapeLike, SpecExtra

__all__ = ["InputSpec", "ModelLike", "ModelSpec", "ShapeLike", "SpecExtra", "count_params_macs", "load_model"]
