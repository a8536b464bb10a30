"""sparsefx: prune models to GPU-friendly sparsity patterns and run them on sparse kernels.

    sm = sparsefx.compile(model, example_inputs, pattern="tile", G=128, sparsity=0.75)
    print(sm.log)
    sparsefx.export_onnx(sm, example_inputs, "model.onnx")
"""
from sparsefx import runtime  # noqa: F401  (registers the torch.ops.sparsefx ops)
from sparsefx.api import compile, prune
from sparsefx.errors import CaptureError, ConfigError, ExportError, PassError, SparsefxError
from sparsefx.export import export_onnx, load, save
from sparsefx.log import PassLog

__version__ = "0.1.0"
__all__ = ["compile", "prune", "export_onnx", "save", "load", "PassLog", "SparsefxError",
           "ConfigError", "CaptureError", "PassError", "ExportError", "__version__"]
