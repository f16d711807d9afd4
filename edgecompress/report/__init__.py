"""Reports: the JSON model, Markdown / HTML rendering and the trade-off plot."""

from edgecompress.report.model import Report, artifact_row
from edgecompress.report.write import write_report

__all__ = ["Report", "artifact_row", "write_report"]
