"""The pass pipeline. Each pass lives in its own module named verb_object; see
:mod:`sparsefx.passes.infra` for the contract every pass follows.

Order matters and each pass's docstring says what must run before it:

* analysis: ``fold_batchnorm`` (a rewrite, but it must run before scoring so that
  importance is computed on the weights that will run) → ``find_prunable`` →
  ``score_importance`` → ``prune_tiles`` → ``restore_elements``;
* rewrite: ``fold_attention_mask`` → ``pack_weights`` → ``substitute_ops`` → ``fuse_epilogue`` →
  ``fold_pruned_features`` → ``fuse_layernorm`` → ``propagate_layout`` → ``choose_kernel`` →
  ``clean_graph``.
"""
from __future__ import annotations

from sparsefx.passes.choose_kernel import ChooseKernel
from sparsefx.passes.clean_graph import CleanGraph
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.fold_attention_mask import FoldAttentionMask
from sparsefx.passes.fold_batchnorm import FoldBatchnorm
from sparsefx.passes.fold_pruned_features import FoldPrunedFeatures
from sparsefx.passes.fuse_epilogue import FuseEpilogue
from sparsefx.passes.fuse_layernorm import FuseLayernorm
from sparsefx.passes.infra import PassContext, PassManager, PassResult, Record
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.propagate_layout import PropagateLayout
from sparsefx.passes.prune_tiles import PruneTiles
from sparsefx.passes.restore_elements import RestoreElements
from sparsefx.passes.score_importance import ScoreImportance
from sparsefx.passes.substitute_ops import SubstituteOps


def analysis_passes(config=None) -> list:
    """Passes that decide what to prune (plus BN folding, which must precede scoring)."""
    return [FoldBatchnorm(), FindPrunable(), ScoreImportance(), PruneTiles(),
            RestoreElements()]


def rewrite_passes() -> list:
    """Passes that edit the graph to run the decisions."""
    return [FoldAttentionMask(), PackWeights(), SubstituteOps(), FuseEpilogue(),
            FoldPrunedFeatures(), FuseLayernorm(), PropagateLayout(), ChooseKernel(),
            CleanGraph()]


__all__ = ["PassContext", "PassManager", "PassResult", "Record", "analysis_passes",
           "rewrite_passes", "FoldBatchnorm", "FindPrunable", "ScoreImportance",
           "PruneTiles", "RestoreElements", "PackWeights", "SubstituteOps", "FuseEpilogue",
           "FuseLayernorm", "PropagateLayout", "ChooseKernel", "CleanGraph",
           "FoldAttentionMask", "FoldPrunedFeatures"]
