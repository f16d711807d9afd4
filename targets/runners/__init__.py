"""Runners: how an artifact reaches a device and gets measured (one module per transport)."""

from edgecompress.registry import Registry

RUNNERS: Registry = Registry("runner", "edgecompress.targets.runners", "edgecompress.runners")
