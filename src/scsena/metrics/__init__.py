"""Metrics: distribution distances, mean-expression metrics and the activation-score test."""

from ._activation import activation_scores, affected_terms, interpretability_metrics, random_recall
from ._distribution import energy_distance, mmd
from ._expression import (
    additive_baseline,
    delta_metrics,
    l2_top_expressed,
    perturbation_metrics,
    top_de_genes,
)

__all__ = [
    "activation_scores",
    "additive_baseline",
    "affected_terms",
    "delta_metrics",
    "energy_distance",
    "interpretability_metrics",
    "l2_top_expressed",
    "mmd",
    "perturbation_metrics",
    "random_recall",
    "top_de_genes",
]
