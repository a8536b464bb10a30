"""Optional inference backends. Each submodule imports its backend lazily and raises a
clear :class:`~sparsefx.export.ExportError` when the backend is not installed:

* :mod:`sparsefx.backends.tensorrt` — torch-tensorrt converters for the sparsefx ops.
"""
