"""Calibration / evaluation data and preprocessing presets."""

from edgecompress.data.datasets import DataLike, Dataset, DataSpec, load_data, load_images
from edgecompress.data.presets import PRESETS, get_transform

__all__ = ["PRESETS", "DataLike", "DataSpec", "Dataset", "get_transform", "load_data", "load_images"]
