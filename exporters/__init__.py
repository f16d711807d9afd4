"""Exporters: one module per format, each registering a row of the format table."""

from edgecompress.exporters.api import export, resolve_formats
from edgecompress.exporters.base import (
    CALIB_METHODS,
    FORMATS,
    Artifact,
    ExportOptions,
    Format,
    TensorInfo,
    register_format,
)

__all__ = [
    "CALIB_METHODS", "FORMATS", "Artifact", "ExportOptions", "Format", "TensorInfo", "export",
    "register_format", "resolve_formats",
]
