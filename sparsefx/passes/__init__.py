"""The pass pipeline. Each pass lives in its own module named verb_object; see
:mod:`sparsefx.passes.infra` for the contract every pass follows."""
from __future__ import annotations

from sparsefx.passes.clean_graph import CleanGraph
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.infra import PassContext, PassManager, PassResult, Record
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.prune_tiles import PruneTiles
from sparsefx.passes.restore_elements import RestoreElements
from sparsefx.passes.score_importance import ScoreImportance


def analysis_passes(config=None) -> list:
    """Passes that only decide (they write node meta and the context)."""
    from sparsefx.passes.fold_batchnorm import FoldBatchnorm
    return [FoldBatchnorm(), FindPrunable(), ScoreImportance(), PruneTiles(),
            RestoreElements()]


def rewrite_passes() -> list:
    """Passes that edit the graph to run the decisions."""
    from sparsefx.passes.fuse_epilogue import FuseEpilogue
    from sparsefx.passes.fuse_layernorm import FuseLayernorm
    from sparsefx.passes.propagate_layout import PropagateLayout
    return [PackWeights(), SubstituteOps(), FuseEpilogue(), FuseLayernorm(),
            PropagateLayout(), CleanGraph()]


from sparsefx.passes.substitute_ops import SubstituteOps  # noqa: E402  (needs runtime ops)

__all__ = ["PassContext", "PassManager", "PassResult", "Record", "analysis_passes",
           "rewrite_passes", "FindPrunable", "ScoreImportance", "PruneTiles",
           "RestoreElements", "PackWeights", "SubstituteOps", "CleanGraph"]
