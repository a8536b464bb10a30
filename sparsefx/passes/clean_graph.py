"""clean_graph: remove what the rewrite left behind and re-check the module.

Why: after substitution the dense weights of rewritten layers, their ``get_attr`` nodes
and (for ``nn.Linear``/``Conv`` modules) the modules themselves are dead; keeping them
would keep the dense weights in ``state_dict()`` and in exports.

Before: ``substitute_ops`` ran. After: no dead node, no unused submodule, no dense
weight or bias of a rewritten layer; the graph lints and the code is recompiled.
"""
from __future__ import annotations

from torch import fx

from sparsefx.passes.infra import PassContext, PassResult, Record


class CleanGraph:
    name = "clean_graph"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        modified = gm.graph.eliminate_dead_code()
        before = {name for name, _ in gm.named_modules()}
        gm.delete_all_unused_submodules()
        removed_modules = before - {name for name, _ in gm.named_modules()}
        records += [Record("removed", None, {"module": m}) for m in sorted(removed_modules)]
        referenced = {n.target for n in gm.graph.nodes if n.op in ("get_attr", "call_module")}
        for info in ctx.layers.values():
            if info.packed_path is None:
                continue
            for attr in (info.weight_attr, info.bias_attr):
                if attr and attr not in referenced and _delete_attr(gm, attr):
                    records.append(Record("removed", info.name, {"attribute": attr}))
        modified = modified or bool(records)
        gm.graph.lint()
        gm.recompile()
        return PassResult(gm, modified, records)


def _delete_attr(gm: fx.GraphModule, path: str) -> bool:
    owner_path, _, name = path.rpartition(".")
    try:
        owner = gm.get_submodule(owner_path) if owner_path else gm
    except AttributeError:
        return False  # its module was already removed
    if not hasattr(owner, name):
        return False
    delattr(owner, name)
    return True
