"""Runtime: the ``sparsefx`` torch.library ops and their kernels.

Importing this package registers the ops with their pure-PyTorch reference
implementations (every device) and then, where a CUDA GPU and Triton are present, the
Triton kernels for CUDA tensors (:func:`sparsefx.runtime.cuda.register_cuda_kernels`;
a no-op elsewhere, so the package imports and runs on CPU-only machines).
"""
from sparsefx.runtime import ops  # noqa: F401  (registers torch.ops.sparsefx.*)
from sparsefx.runtime.cuda import register_cuda_kernels
from sparsefx.runtime.ops import ACTIVATIONS, SPARSEFX_OPS, tew_linear, tile_linear

CUDA_KERNELS_ACTIVE = register_cuda_kernels()

__all__ = ["ACTIVATIONS", "SPARSEFX_OPS", "CUDA_KERNELS_ACTIVE", "tile_linear", "tew_linear"]
