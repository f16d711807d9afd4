"""Targets: device profiles, runners and the validator."""

from edgecompress.targets.profile import TargetProfile, get_target, list_targets
from edgecompress.targets.validate import Measurement, ValidateSettings, reference_outputs, validate

__all__ = ["Measurement", "TargetProfile", "ValidateSettings", "get_target", "list_targets",
           "reference_outputs", "validate"]
