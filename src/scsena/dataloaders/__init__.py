"""Data splitting for SENAVAE: folds, held-out targets and the data splitter.

The paired dataset, the perturbation-pure sampler and the Lightning data module the
splitter builds are in :mod:`scsena.train`.
"""

from ._folds import assign_folds, resolve_heldout
from ._splitter import PerturbationDataSplitter

__all__ = ["PerturbationDataSplitter", "assign_folds", "resolve_heldout"]
