"""Exceptions raised by sparsefx. Each message names the argument, layer or pass at
fault and says what to do about it."""


class SparsefxError(Exception):
    """Base class of every error sparsefx raises on purpose."""


class ConfigError(SparsefxError, ValueError):
    """A bad argument to a public function (pattern, sparsity, G, exclude, ...)."""


class CaptureError(SparsefxError, RuntimeError):
    """The model could not be turned into an FX graph, or its example inputs do not run."""


class PassError(SparsefxError, RuntimeError):
    """A pass failed or left the graph broken; the message names the pass and the
    pipeline that ran before it."""


class ExportError(SparsefxError, RuntimeError):
    """A compiled model could not be exported, saved, loaded or handed to a backend.

    The message names the argument, op or file at fault and says what to do.
    """
