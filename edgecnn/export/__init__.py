"""Export: one exporter per format behind the formats table, and the pipeline that verifies them."""

from edgecnn.export._formats import FORMATS, Format, resolve_formats
from edgecnn.export.pipeline import ExportConfig, ExportReport, changed_top1_line, export

__all__ = ["FORMATS", "ExportConfig", "ExportReport", "Format", "changed_top1_line", "export", "resolve_formats"]
