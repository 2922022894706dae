"""Graph-level optimisations applied before export: BatchNorm folding (pruning and quantization next)."""

from edgecnn.optimize.fold_bn import fold_batchnorm

__all__ = ["fold_batchnorm"]
