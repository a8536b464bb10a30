"""Deployment paths out of sparsefx that keep the sparse format.

* :func:`export_onnx` — ONNX with ``com.sparsefx`` custom ops (bodies attached as ONNX
  functions, so stock onnxruntime runs the file) or standard ops only;
* :func:`save` / :func:`load` — packed weights in safetensors plus the graph, versioned;
* ``torch.export.export(sm, ...)`` and ``torch.compile(sm)`` work on a compiled model
  directly (the ops have fake kernels and autograd).
"""
from sparsefx.errors import ExportError
from sparsefx.export.onnx import export_onnx
from sparsefx.export.save_load import FORMAT_VERSION, load, save

__all__ = ["ExportError", "export_onnx", "save", "load", "FORMAT_VERSION"]
