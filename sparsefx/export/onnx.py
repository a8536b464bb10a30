"""ONNX export that keeps the sparse format: :func:`export_onnx`.

Every ``torch.ops.sparsefx`` op becomes one node in the custom domain ``com.sparsefx``
(version 1) whose inputs are the packed tensors, stored as initializers, so the file
shrinks with sparsity instead of storing dense-with-zeros. Each custom op's reference
body is attached as a model-local ``FunctionProto`` (:mod:`.onnx_functions`), which is
what lets stock onnxruntime run the file.

How: ``torch.onnx.export(..., dynamo=True)`` with a ``custom_translation_table`` that
maps each sparsefx op to a *bare* custom node. The functions are attached to the
``ModelProto`` afterwards, because the dynamo exporter inlines local onnxscript
functions while it exports (onnxscript issue 2813) — that would lose the custom node.
``custom_ops=False`` inlines those same bodies, giving standard ONNX ops only.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional, Union

import onnx
import torch
from onnx.defs import OpSchema
from torch import fx

from sparsefx.capture import normalize_inputs
from sparsefx.errors import ExportError
from sparsefx.export.onnx_functions import (DOMAIN, DOMAIN_VERSION, FUNCTION_ATTRIBUTES,
                                            INPUTS, MIN_OPSET, OP_TYPES, functions_for)
from sparsefx.runtime.ops import ACTIVATIONS

#: The opset used when the caller does not choose one.
DEFAULT_OPSET = 20
_MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit; larger models go to external data


def export_onnx(sm: fx.GraphModule, example_inputs: Any, path: Union[str, os.PathLike], *,
                opset: Optional[int] = None, custom_ops: bool = True,
                dynamic_shapes: Any = None) -> onnx.ModelProto:
    """Export a compiled model to ``path`` as ONNX, keeping its sparse weights packed.

    Args:
        sm: a model from :func:`sparsefx.compile` (any ``nn.Module`` works; its
            ``sparsefx`` ops are what this exporter adds).
        example_inputs: a tensor, a tuple of positional args or a dict of keyword args.
        path: the ``.onnx`` file to write; its folder must exist and be writable.
        opset: the default-domain ONNX opset, at least :data:`MIN_OPSET` (19); defaults
            to :data:`DEFAULT_OPSET`.
        custom_ops: ``True`` writes ``com.sparsefx`` nodes with their bodies attached as
            ONNX functions; ``False`` writes the same computation in standard ops only
            (for runtimes that do not inline model-local functions).
        dynamic_shapes: passed to ``torch.export.export`` (e.g.
            ``{"x": {0: torch.export.Dim("batch")}}``); ``None`` exports static shapes.

    Returns:
        The checked ``onnx.ModelProto`` that was written.

    Raises:
        ExportError: unwritable ``path``, ``opset`` below 19, a sparsefx op with no ONNX
            translation, or shapes ``torch.export`` cannot express.
    """
    path = _check_path(path)
    opset = _check_opset(opset)
    args, kwargs = normalize_inputs(example_inputs)
    program = _capture(sm, args or (), kwargs or {}, dynamic_shapes)
    _check_translatable(program.graph_module)
    model = _to_onnx(program, opset)
    _attach_functions(model, opset)
    if not custom_ops:
        model = _inline_functions(model)
    _check_and_save(model, path)
    return model


# ------------------------------------------------------------------ argument checks
def _check_path(path: Union[str, os.PathLike]) -> Path:
    """Fail before the (slow) export when the file could not be written anyway."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise ExportError(f"path must be a str or os.PathLike naming the .onnx file to "
                          f"write, got {type(path).__name__}") from None
    if path.is_dir():
        raise ExportError(f"path {str(path)!r} is a directory; pass a file name such as "
                          f"{str(path / 'model.onnx')!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write path {str(path)!r}: folder {str(folder)!r} does "
                          "not exist; create it first")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"cannot write path {str(path)!r}: permission denied; choose "
                          "a writable location")
    return path


def _check_opset(opset: Optional[int]) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise ExportError(f"opset must be an int, got {opset!r}")
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old: the com.sparsefx function bodies need opset "
            f">= {MIN_OPSET} (string Equal to dispatch on the activation); pass "
            f"opset={MIN_OPSET} or newer, or leave opset=None for {DEFAULT_OPSET}")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ExportError(f"opset {opset} is newer than this onnx package supports "
                          f"({newest}); pass opset <= {newest} or upgrade onnx")
    return opset


# ------------------------------------------------------------------ torch side
def _capture(sm: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any):
    """``torch.export`` the compiled model, turning its failures into clear errors."""
    if not isinstance(sm, torch.nn.Module):
        raise ExportError(f"sm must be a torch.nn.Module (the result of sparsefx.compile), "
                          f"got {type(sm).__name__}")
    try:
        return torch.export.export(sm, args, kwargs, dynamic_shapes=dynamic_shapes,
                                   strict=False)
    except Exception as exc:
        summary = _first_lines(exc)
        if dynamic_shapes is not None and _is_shape_error(exc):
            raise ExportError(
                "the model's shapes cannot be exported as dynamic as requested by "
                f"dynamic_shapes ({type(exc).__name__}: {summary}). Mark fewer dimensions "
                "dynamic, give them the ranges the model supports (torch.export.Dim(..., "
                "min=, max=)), or export static shapes with dynamic_shapes=None") from exc
        raise ExportError(
            f"torch.export could not capture the model ({type(exc).__name__}: {summary}); "
            "check that example_inputs run the model and that it has no data-dependent "
            "Python control flow") from exc


def _is_shape_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"UserError", "ConstraintViolationError",
                         "GuardOnDataDependentSymNode"}) or "Constraints violated" in str(exc)


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _check_translatable(gm: fx.GraphModule) -> None:
    """Every ``sparsefx`` op in the graph must have an ONNX translation."""
    for module in gm.modules():
        if not isinstance(module, fx.GraphModule):
            continue
        for node in module.graph.nodes:
            name = _sparsefx_op_name(node)
            if name is not None and name not in OP_TYPES:
                raise ExportError(
                    f"op sparsefx::{name} (node {node.name!r}) has no ONNX translation; "
                    f"export_onnx translates {sorted('sparsefx::' + k for k in OP_TYPES)}. "
                    "Add a translation in sparsefx/export/onnx.py or compile the layer "
                    "with another op (e.g. exclude it)")


def _sparsefx_op_name(node: fx.Node) -> Optional[str]:
    if node.op != "call_function":
        return None
    target = node.target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)) and \
            target.namespace == "sparsefx":
        return target.name().split("::")[1].split(".")[0]
    return None


# ------------------------------------------------------------------ ONNX side
def _op_schema(op_type: str) -> OpSchema:
    """A minimal schema so onnxscript can emit a node in our custom domain."""
    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    inputs = [param(name, "I" if _is_index(name) else "T",
                    param_option=optional if name == "bias" and op_type != _LN else
                    OpSchema.FormalParameterOption.Single)
              for name in INPUTS[op_type]]
    kinds = {"int": OpSchema.AttrType.INT, "string": OpSchema.AttrType.STRING,
             "float": OpSchema.AttrType.FLOAT}
    return OpSchema(
        op_type, DOMAIN, DOMAIN_VERSION, inputs=inputs, outputs=[param("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)",
                                 "tensor(double)"], "activations and weights"),
                          ("I", ["tensor(int32)", "tensor(int64)"], "packed indices")],
        attributes=[OpSchema.Attribute(a, kinds[k], a, required=True)
                    for a, k in FUNCTION_ATTRIBUTES[op_type].items()])


_LN = "BiasResidualLayerNorm"


def _is_index(name: str) -> bool:
    return name in ("row_idx", "row_ptr", "col_map", "ew_crow", "ew_col")


def _sparsefx_overload(name: str):
    """``torch.ops.sparsefx.<name>.default``, or None when that op is not registered."""
    try:
        return getattr(torch.ops.sparsefx, name).default
    except (AttributeError, RuntimeError):
        return None


@functools.lru_cache(maxsize=None)
def _translation_table() -> dict:
    """``{torch op overload: onnxscript-traceable function emitting one custom node}``."""
    from onnxscript import values as osv

    opset = osv.Opset(DOMAIN, DOMAIN_VERSION)
    table = {}
    for name, op_type in OP_TYPES.items():
        overload = _sparsefx_overload(name)
        if overload is None:
            continue
        onnx_op = osv.Op(opset, op_type, _op_schema(op_type))
        table[overload] = (_make_layernorm_translation(onnx_op) if op_type == _LN else
                           _make_linear_translation(onnx_op, len(INPUTS[op_type])))
    return table


def _make_linear_translation(onnx_op, n_inputs: int):
    def translate(*args):
        # FX passes the tensors, then out_features, activation, feature_major (the last
        # two may be missing when they hold their schema defaults).
        tensors, attrs = list(args[:n_inputs]), list(args[n_inputs:])
        out_features = attrs[0]
        activation = attrs[1] if len(attrs) > 1 else "none"
        feature_major = attrs[2] if len(attrs) > 2 else False
        if activation not in ACTIVATIONS:
            raise ExportError(f"activation {activation!r} has no ONNX body; expected one "
                              f"of {ACTIVATIONS}")
        return onnx_op(*tensors, out_features=int(out_features), activation=activation,
                       feature_major=int(bool(feature_major)))
    return translate


def _make_layernorm_translation(onnx_op):
    def translate(x, residual, bias, weight, ln_bias, eps, feature_major=False):
        # ONNX functions cannot test whether an optional input is present, so absent
        # vectors become their neutral values (bias 0, weight 1, ln_bias 0).
        features = x.shape[0] if feature_major else x.shape[-1]
        if not isinstance(features, int):
            raise ExportError("bias_residual_layernorm: the feature dimension must be "
                              "static for ONNX export; do not mark it dynamic")
        dtype = x.dtype.numpy()
        bias = _vector_or(bias, 0.0, features, dtype)
        weight = _vector_or(weight, 1.0, features, dtype)
        ln_bias = _vector_or(ln_bias, 0.0, features, dtype)
        return onnx_op(x, residual, bias, weight, ln_bias, eps=float(eps),
                       feature_major=int(bool(feature_major)))
    return translate


def _vector_or(value, fill: float, size: int, dtype):
    if value is not None:
        return value
    import numpy as np
    from onnxscript import ir, opset18

    return opset18.Constant(value=ir.tensor(np.full(size, fill, dtype=dtype)))


def _to_onnx(program, opset: int) -> onnx.ModelProto:
    try:
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset,
                                         custom_translation_table=_translation_table(),
                                         verbose=False)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch.onnx could not convert the exported program "
                          f"({type(exc).__name__}: {_first_lines(exc)}); an aten op may "
                          "lack an ONNX translation at this opset") from exc
    return onnx_program.model_proto


def _used_op_types(model: onnx.ModelProto) -> set[str]:
    used = set()
    for node in _all_nodes(model.graph):
        if node.domain == DOMAIN:
            used.add(node.op_type)
    return used


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _attach_functions(model: onnx.ModelProto, opset: int) -> None:
    """Add the FunctionProto of every com.sparsefx op the graph uses."""
    used = _used_op_types(model)
    present = {(f.domain, f.name) for f in model.functions}
    for function in functions_for(used, _default_opset(model, opset)):
        if (function.domain, function.name) not in present:
            model.functions.append(function)
    domains = {o.domain: o for o in model.opset_import}
    if used and DOMAIN not in domains:
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))


def _default_opset(model: onnx.ModelProto, fallback: int) -> int:
    """The function bodies must import the same default opset as the model."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return fallback


def _inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each com.sparsefx node by its body: standard ONNX ops only."""
    from onnx import inliner

    inlined = inliner.inline_local_functions(model)
    del inlined.functions[:]
    keep = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(keep)
    leftover = _used_op_types(inlined)
    if leftover:
        raise ExportError(f"could not inline {sorted(leftover)} into standard ONNX ops; "
                          "export with custom_ops=True")
    return inlined


def _check_and_save(model: onnx.ModelProto, path: Path) -> None:
    big = model.ByteSize() > _MAX_PROTO_BYTES
    try:
        if not big:
            onnx.checker.check_model(model, full_check=True)
        onnx.save_model(model, str(path), save_as_external_data=big,
                        location=path.name + ".data" if big else None)
        if big:
            onnx.checker.check_model(str(path), full_check=True)
    except OSError as exc:
        raise ExportError(f"cannot write path {str(path)!r}: {exc}") from exc


def _first_lines(exc: BaseException, n: int = 3) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:n])[:600] if lines else type(exc).__name__
