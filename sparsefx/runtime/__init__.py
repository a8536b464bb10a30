"""Runtime: the ``sparsefx`` torch.library ops and their kernels.

Importing this package registers the ops with their CPU reference implementations;
:func:`sparsefx.runtime.cuda.register_cuda_kernels` adds the CUDA kernels when a GPU
and Triton are present (it is called on import and is a no-op otherwise).
"""
from sparsefx.runtime import ops  # noqa: F401  (registers torch.ops.sparsefx.*)
from sparsefx.runtime.ops import ACTIVATIONS, SPARSEFX_OPS, tew_linear, tile_linear

__all__ = ["ACTIVATIONS", "SPARSEFX_OPS", "tile_linear", "tew_linear"]
