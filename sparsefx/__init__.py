"""sparsefx: prune models to GPU-friendly sparsity patterns and run them on sparse kernels.

    sm = sparsefx.compile(model, example_inputs, pattern="tile", G=128, sparsity=0.75)
    print(sm.log)
"""
from sparsefx import runtime  # noqa: F401  (registers the torch.ops.sparsefx ops)
from sparsefx.api import compile, prune
from sparsefx.errors import CaptureError, ConfigError, PassError, SparsefxError
from sparsefx.log import PassLog

__version__ = "0.1.0"
__all__ = ["compile", "prune", "PassLog", "SparsefxError", "ConfigError", "CaptureError",
           "PassError", "__version__"]
