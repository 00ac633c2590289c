"""torch -> ONNX export with verification against PyTorch, and onnxruntime graph fusions."""

from edgegolf.export.onnx import ExportReport, export_onnx, verify_onnx
from edgegolf.export.optimize import OptimizeReport, optimize_graph

__all__ = ["ExportReport", "export_onnx", "verify_onnx", "OptimizeReport", "optimize_graph"]
