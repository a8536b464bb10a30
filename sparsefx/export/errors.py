"""The error every deployment path (ONNX, save/load, backends) raises on purpose."""
from sparsefx.errors import SparsefxError


class ExportError(SparsefxError, RuntimeError):
    """A compiled model could not be exported, saved, loaded or handed to a backend.

    The message names the argument, op or file at fault and says what to do.
    """
