"""Metrics: distributions, expression, interpretability, differential activity, members."""

from ._activation import activation_scores, affected_terms, interpretability_metrics, random_recall
from ._assignment import assignment_recovery
from ._differential import differential_test, rank_genes_groups_uns
from ._distribution import energy_distance, mmd
from ._expression import (
    additive_baseline,
    delta_metrics,
    l2_top_expressed,
    perturbation_metrics,
    spread_ratio,
    top_de_genes,
)
from ._members import (
    consistent_sign,
    gene_set_matrix,
    gene_set_scores,
    group_mean_difference,
    member_evidence,
    members_lfc,
)

__all__ = [
    "activation_scores",
    "additive_baseline",
    "affected_terms",
    "assignment_recovery",
    "consistent_sign",
    "delta_metrics",
    "differential_test",
    "energy_distance",
    "gene_set_matrix",
    "gene_set_scores",
    "group_mean_difference",
    "interpretability_metrics",
    "l2_top_expressed",
    "member_evidence",
    "members_lfc",
    "mmd",
    "perturbation_metrics",
    "random_recall",
    "rank_genes_groups_uns",
    "spread_ratio",
    "top_de_genes",
]
