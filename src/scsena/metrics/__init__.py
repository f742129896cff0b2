"""Metrics: distribution distances and the activation-score interpretability test."""

from ._activation import activation_scores, affected_terms, interpretability_metrics, random_recall

__all__ = ["activation_scores", "affected_terms", "interpretability_metrics", "random_recall"]
