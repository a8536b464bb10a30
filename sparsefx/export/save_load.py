"""``save(sm, path)`` / ``load(path)``: one safetensors file, no pickle, no model code.

Why not ``torch.save(sm)``: pickling a GraphModule stores Python code and classes, so
loading executes code from the file and needs the original model's source. Why not only
``torch.export.save``: it needs example inputs at save time and fixes shapes.

The file is a ``.safetensors`` file whose tensors are every parameter, buffer and tensor
constant of the compiled model — the sparse layers stay in the packed format
(``sparsefx_packed.<layer>.values`` ...) — and whose string metadata holds, as JSON:

* ``format`` / ``format_version``: ``"sparsefx.saved"`` / :data:`FORMAT_VERSION`;
  unknown versions are refused;
* ``module``: the module tree — for each module its class (only classes from ``torch``
  and ``sparsefx`` are accepted, so loading imports nothing else), its plain config
  attributes, which tensors are parameters / buffers / constants; for each
  ``GraphModule`` its FX graph as a node list (op, name, target, args) and, for graphs
  from ``torch.export``, the pytree specs of inputs and outputs;
* ``log``: ``sm.log`` as JSON (rebuilt into a :class:`~sparsefx.log.PassLog`).

Graph targets are stored by name (``aten::add.Tensor``, ``sparsefx::tile_linear``,
``_operator.getitem``, ``sparsefx.runtime.conv.tile_conv``) and resolved against
``torch`` / ``sparsefx`` at load time. A graph that calls user code cannot be saved
this way; :func:`save` says which node and what to do.

``torch.export``'s input-guard module (``_guards_fn``) is not saved: it only re-checks
input shapes, and its code is a Python closure.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import fx, nn

import sparsefx
from sparsefx.errors import ExportError
from sparsefx.log import LayerRow, PassLog, PassRow

FORMAT = "sparsefx.saved"
FORMAT_VERSION = 1
#: Python modules whose functions and classes a saved graph may name.
_TRUSTED = ("torch", "operator", "_operator", "builtins", "math", "sparsefx")
_GUARD_CLASSES = ("torch.export._unlift.GuardsFn",)
_MODULE_INTERNALS = set(vars(nn.Module()).keys()) | {"forward"}
_GRAPH_MODULE_INTERNALS = {"_graph", "_code", "_in_spec", "_out_spec", "meta", "log",
                           "_tracer_cls", "_tracer_extras", "_erase_node_hooks",
                           "_create_node_hooks", "_replace_hooks", "_deepcopy_hooks",
                           "_lineno_map", "_prologue_start", "shape_env",
                           "range_constraints", "_is_impure"}


# ===================================================================== save
def save(sm: nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Write a compiled model (packed weights, graph, log) to one safetensors file.

    Raises:
        ExportError: ``path`` cannot be written, or the graph calls code outside
            ``torch``/``sparsefx`` (the message names the node).
    """
    from safetensors.torch import save_file

    path = _writable(path)
    if not isinstance(sm, fx.GraphModule):
        raise ExportError(f"sm must be a torch.fx.GraphModule from sparsefx.compile, got "
                          f"{type(sm).__name__}")
    writer = _Writer()
    spec = writer.module(sm, "")
    log = getattr(sm, "log", None)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "sparsefx_version": sparsefx.__version__, "torch_version": torch.__version__,
                "module": json.dumps(spec),
                "log": log.to_json(indent=None) if isinstance(log, PassLog) else ""}
    try:
        save_file(writer.tensors, str(path), metadata=metadata)
    except OSError as exc:
        raise ExportError(f"cannot write path {str(path)!r}: {exc}") from exc
    return path


def _writable(path) -> Path:
    path = Path(os.fspath(path))
    if path.is_dir():
        raise ExportError(f"path {str(path)!r} is a directory; pass a file name such as "
                          f"{str(path / 'model.safetensors')!r}")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write path {str(path)!r}: folder {str(path.parent)!r} "
                          "does not exist; create it first")
    return path


class _Writer:
    """Walks the module tree; collects tensors (deduplicated by identity) and specs."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self._keys: dict[int, str] = {}

    def tensor(self, key: str, value: torch.Tensor) -> str:
        if id(value) in self._keys:          # tied weights stay tied after load
            return self._keys[id(value)]
        # clone: safetensors refuses views and tensors sharing storage
        self.tensors[key] = value.detach().cpu().clone().contiguous()
        self._keys[id(value)] = key
        return key

    def module(self, module: nn.Module, prefix: str) -> dict:
        cls = _qualname(type(module))
        is_graph = isinstance(module, fx.GraphModule)
        spec: dict[str, Any] = {"class": "torch.fx.GraphModule" if is_graph else cls,
                                "training": module.training, "params": {}, "buffers": {},
                                "constants": {}, "children": {}, "attrs": {}}
        if not is_graph:
            _check_trusted(cls, f"module {prefix or '<root>'!r}",
                           "make it a torch.nn module or compile it with sparsefx")
        dot = prefix + "." if prefix else ""
        for name, param in module._parameters.items():
            spec["params"][name] = None if param is None else \
                [self.tensor(dot + name, param), param.requires_grad]
        for name, buf in module._buffers.items():
            spec["buffers"][name] = None if buf is None else \
                [self.tensor(dot + name, buf), name not in module._non_persistent_buffers_set]
        for name, child in module._modules.items():
            if child is not None and _qualname(type(child)) not in _GUARD_CLASSES:
                spec["children"][name] = self.module(child, dot + name)
        skip = _MODULE_INTERNALS | (_GRAPH_MODULE_INTERNALS if is_graph else set())
        for name, value in vars(module).items():
            if name in skip or name.startswith("__"):
                continue
            if isinstance(value, torch.Tensor):
                spec["constants"][name] = self.tensor(dot + name, value)
            elif not is_graph:
                spec["attrs"][name] = _encode_attr(value, f"{prefix or '<root>'}.{name}")
        if is_graph:
            spec["graph"] = _encode_graph(module, prefix)
        return spec


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _check_trusted(name: str, where: str, advice: str) -> None:
    if name.split(".")[0] not in _TRUSTED:
        raise ExportError(
            f"{where} uses {name}, which is not part of torch or sparsefx; sparsefx.load "
            f"would need your model code to rebuild it, so save() refuses it ({advice}). "
            "To keep such a model, ship its code and use torch.save(sm) / torch.load("
            "weights_only=False), or torch.export.save an ExportedProgram of it")


def _encode_attr(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return {"tuple" if isinstance(value, tuple) else "list":
                [_encode_attr(v, where) for v in value]}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise ExportError(f"attribute {where} holds a {type(value).__name__}, which save() "
                      "cannot store without pickle; make it an int/float/str/tuple or a "
                      "tensor buffer")


def _encode_graph(gm: fx.GraphModule, prefix: str) -> dict:
    guards = {name for name, child in gm.named_children()
              if _qualname(type(child)) in _GUARD_CLASSES}
    nodes = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in guards:
            if node.users:
                raise ExportError(f"node {node.name!r} uses the result of torch.export's "
                                  "guard module; save() cannot store it")
            continue
        nodes.append({"op": node.op, "name": node.name,
                      "target": _encode_target(node, prefix),
                      "args": _encode_arg(node.args, node), "kwargs": _encode_arg(
                          node.kwargs, node)})
    graph = {"nodes": nodes}
    codegen = gm.graph._codegen
    info = getattr(codegen, "pytree_info", None)
    if info is not None:
        from torch.utils import _pytree as pytree
        graph["pytree"] = {"orig_args": list(info.orig_args),
                           "in_spec": pytree.treespec_dumps(info.in_spec),
                           "out_spec": pytree.treespec_dumps(info.out_spec)}
    return graph


def _encode_target(node: fx.Node, prefix: str) -> Any:
    target = node.target
    if node.op in ("placeholder", "output", "get_attr", "call_module", "call_method"):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return {"op": [target.namespace, target._schema.name.split("::")[1],
                       target._overloadname]}
    if isinstance(target, torch._ops.HigherOrderOperator):
        return {"hop": target.name()}
    name = _qualname(target) if hasattr(target, "__qualname__") else repr(target)
    module = getattr(target, "__module__", None) or ""
    _check_trusted(module + "." if module else name,
                   f"node {node.name!r} of graph {prefix or '<root>'!r}",
                   "only torch, operator, math and sparsefx functions can be stored")
    return {"py": [module, target.__qualname__]}


def _encode_arg(arg: Any, node: fx.Node) -> Any:
    if isinstance(arg, fx.Node):
        return {"node": arg.name}
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return arg
    if isinstance(arg, (tuple, list)):
        return {"tuple" if isinstance(arg, tuple) else "list":
                [_encode_arg(a, node) for a in arg]}
    if isinstance(arg, dict):
        return {"dict": [[k, _encode_arg(v, node)] for k, v in arg.items()]}
    if isinstance(arg, torch.dtype):
        return {"dtype": str(arg).removeprefix("torch.")}
    if isinstance(arg, torch.device):
        return {"device": str(arg)}
    if isinstance(arg, torch.memory_format):
        return {"memory_format": str(arg).removeprefix("torch.")}
    if isinstance(arg, torch.layout):
        return {"layout": str(arg).removeprefix("torch.")}
    if isinstance(arg, slice):
        return {"slice": [_encode_arg(a, node) for a in (arg.start, arg.stop, arg.step)]}
    if arg is Ellipsis:
        return {"ellipsis": True}
    raise ExportError(f"node {node.name!r} has an argument of type {type(arg).__name__} "
                      "that save() cannot store")


# ===================================================================== load
def load(path: Union[str, os.PathLike]) -> fx.GraphModule:
    """Rebuild a model written by :func:`save`; needs only torch and sparsefx.

    Raises:
        ExportError: the file is missing, not a sparsefx save, or has a format version
            this sparsefx does not read.
    """
    from safetensors import safe_open

    path = Path(os.fspath(path))
    if not path.is_file():
        raise ExportError(f"no file at path {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:
        raise ExportError(f"path {str(path)!r} is not a safetensors file ({exc})") from exc
    _check_format(metadata, path)
    reader = _Reader(tensors)
    sm = reader.module(json.loads(metadata["module"]), "")
    sm.log = _log_from_json(metadata.get("log", ""))
    return sm


def _check_format(metadata: dict, path: Path) -> None:
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{str(path)!r} was not written by sparsefx.save (no "
                          f"'format: {FORMAT}' metadata)")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ExportError(
            f"{str(path)!r} has sparsefx save format version {version!r}, but this "
            f"sparsefx ({sparsefx.__version__}) reads only version {FORMAT_VERSION}; load "
            f"it with the sparsefx version that wrote it "
            f"({metadata.get('sparsefx_version', 'unknown')})")


class _Reader:
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self._params: dict[str, nn.Parameter] = {}

    def param(self, key: str, requires_grad: bool) -> nn.Parameter:
        if key not in self._params:                  # tied weights: one object
            self._params[key] = nn.Parameter(self.tensors[key], requires_grad=requires_grad)
        return self._params[key]

    def module(self, spec: dict, prefix: str) -> nn.Module:
        is_graph = spec["class"] == "torch.fx.GraphModule"
        module = nn.Module() if is_graph else _new_module(spec["class"], prefix)
        for name, value in spec["attrs"].items():
            setattr(module, name, _decode_attr(value))
        for name, entry in spec["params"].items():
            module.register_parameter(name, None if entry is None else self.param(*entry))
        for name, entry in spec["buffers"].items():
            module.register_buffer(name, None if entry is None else self.tensors[entry[0]],
                                   persistent=True if entry is None else entry[1])
        for name, key in spec["constants"].items():
            setattr(module, name, self.tensors[key])
        for name, child in spec["children"].items():
            module.add_module(name, self.module(child, f"{prefix}.{name}" if prefix else name))
        if is_graph:
            module = fx.GraphModule(module, _decode_graph(spec["graph"], prefix))
        module.train(spec["training"])
        return module


def _resolve(dotted_module: str, qualname: str, where: str) -> Any:
    _check_trusted(dotted_module + ".", where, "the file names code outside torch/sparsefx")
    try:
        obj = importlib.import_module(dotted_module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"{where}: {dotted_module}.{qualname} does not exist in this "
                          f"installation (torch {torch.__version__}); load with the torch "
                          "and sparsefx versions that saved the file") from exc
    return obj


def _new_module(dotted: str, prefix: str) -> nn.Module:
    """An instance of a trusted module class without running its ``__init__`` (the
    saved attributes, parameters and buffers are set on it afterwards)."""
    module_path, _, qualname = dotted.rpartition(".")
    cls = _resolve(module_path, qualname, f"module {prefix or '<root>'!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ExportError(f"module {prefix!r}: {dotted} is not an nn.Module class")
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    return module


def _decode_attr(value: Any) -> Any:
    if isinstance(value, dict):
        if "tuple" in value:
            return tuple(_decode_attr(v) for v in value["tuple"])
        if "list" in value:
            return [_decode_attr(v) for v in value["list"]]
        if "dtype" in value:
            return getattr(torch, value["dtype"])
    return value


def _decode_graph(spec: dict, prefix: str) -> fx.Graph:
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for entry in spec["nodes"]:
        args = _decode_arg(entry["args"], env)
        kwargs = _decode_arg(entry["kwargs"], env)
        target = _decode_target(entry, prefix)
        node = graph.create_node(entry["op"], target, args, kwargs, name=entry["name"])
        env[entry["name"]] = node
    if "pytree" in spec:
        graph._codegen = _pytree_codegen(spec["pytree"], prefix)
    graph.lint()
    return graph


def _decode_target(entry: dict, prefix: str) -> Any:
    target = entry["target"]
    if not isinstance(target, dict):
        return target
    where = f"node {entry['name']!r} of graph {prefix or '<root>'!r}"
    if "op" in target:
        namespace, name, overload = target["op"]
        try:
            return getattr(getattr(getattr(torch.ops, namespace), name), overload)
        except (AttributeError, RuntimeError) as exc:
            raise ExportError(f"{where} calls {namespace}::{name}.{overload}, which is not "
                              "registered; import the library that defines it (sparsefx "
                              "ops register on `import sparsefx`) or use the torch version "
                              "that saved the file") from exc
    if "hop" in target:
        return getattr(torch.ops.higher_order, target["hop"])
    module, qualname = target["py"]
    return _resolve(module, qualname, where)


def _decode_arg(arg: Any, env: dict) -> Any:
    if isinstance(arg, list):
        raise ExportError("corrupt sparsefx save file: bare list in graph arguments")
    if not isinstance(arg, dict):
        return arg
    if "node" in arg:
        return env[arg["node"]]
    if "tuple" in arg:
        return tuple(_decode_arg(a, env) for a in arg["tuple"])
    if "list" in arg:
        return [_decode_arg(a, env) for a in arg["list"]]
    if "dict" in arg:
        return {k: _decode_arg(v, env) for k, v in arg["dict"]}
    if "dtype" in arg:
        return getattr(torch, arg["dtype"])
    if "device" in arg:
        return torch.device(arg["device"])
    if "memory_format" in arg:
        return getattr(torch, arg["memory_format"])
    if "layout" in arg:
        return getattr(torch, arg["layout"])
    if "slice" in arg:
        return slice(*(_decode_arg(a, env) for a in arg["slice"]))
    if "ellipsis" in arg:
        return Ellipsis
    raise ExportError(f"corrupt sparsefx save file: unknown graph argument {arg!r}")


def _pytree_codegen(spec: dict, prefix: str):
    """Rebuild the input/output flattening of a ``torch.export`` graph.

    Output types of HF models (``ModelOutput`` subclasses) are pytree nodes registered
    by their library on import; import it when the spec names it.
    """
    from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
    from torch.utils import _pytree as pytree

    specs = {}
    for key in ("in_spec", "out_spec"):
        try:
            specs[key] = pytree.treespec_loads(spec[key])
        except Exception:
            for type_name in _type_names(json.loads(spec[key])):
                _import_owner(type_name)
            try:
                specs[key] = pytree.treespec_loads(spec[key])
            except Exception as exc:
                raise ExportError(
                    f"graph {prefix or '<root>'!r} takes or returns types "
                    f"{sorted(_type_names(json.loads(spec[key])))} that are not pytree-"
                    "registered here; install and import the library that defines them "
                    "(e.g. transformers for HF model outputs)") from exc
    return _PyTreeCodeGen(_PyTreeInfo(spec["orig_args"], specs["in_spec"],
                                      specs["out_spec"]))


def _type_names(tree: Any) -> set:
    names = set()
    if isinstance(tree, dict):
        if isinstance(tree.get("type"), str):
            names.add(tree["type"])
        for value in tree.values():
            names |= _type_names(value)
    elif isinstance(tree, list):
        for value in tree:
            names |= _type_names(value)
    return names


def _import_owner(type_name: str) -> None:
    module = type_name.rpartition(".")[0]
    while module:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            module = module.rpartition(".")[0]


def _log_from_json(text: str) -> PassLog:
    if not text:
        return PassLog()
    data = json.loads(text)
    return PassLog(passes=[PassRow(**row) for row in data.get("passes", [])],
                   layers=[LayerRow(**row) for row in data.get("layers", [])],
                   capture=data.get("capture", {}), summary=data.get("summary", {}))
