"""The activation-score test of interpretability of the SENA paper.

For every perturbation, each biological process (BP) is scored by how much its
activity differs between control and perturbed cells; a BP is *affected* if its gene
set contains the perturbed gene. Good interpretability ranks affected BPs high.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from scsena.data import split_label


def activation_scores(
    activity: np.ndarray,
    labels: Sequence[str] | pd.Series,
    terms: Sequence[str],
    control_value: str = "",
    perturbations: Iterable[str] | None = None,
    method: Literal["mean_diff", "ttest"] = "mean_diff",
) -> pd.DataFrame:
    """Score every BP for every perturbation.

    Parameters
    ----------
    activity
        ``cells x terms`` pathway activities.
    labels
        Perturbation label of every cell.
    terms
        Term IDs (columns of ``activity``).
    control_value
        Label of control cells.
    perturbations
        Perturbations to score (default: every non-control label).
    method
        ``"mean_diff"``: ``|mean(control) - mean(perturbed)|`` min-max normalised
        within the perturbation; ``"ttest"``: Welch t-test ``-log10 p``.

    Returns
    -------
    ``perturbations x terms`` scores.
    """
    activity = np.asarray(activity, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    if activity.shape != (len(labels), len(terms)):
        raise ValueError(
            f"activity has shape {activity.shape}; expected ({len(labels)}, {len(terms)})."
        )
    control = activity[labels == control_value]
    if len(control) == 0:
        raise ValueError(f"No control cells (label {control_value!r}).")
    if perturbations is None:
        perturbations = sorted(set(labels.tolist()) - {control_value})
    perturbations = list(perturbations)
    ctrl_mean = control.mean(axis=0)
    out = np.zeros((len(perturbations), len(terms)))
    for i, p in enumerate(perturbations):
        cells = activity[labels == p]
        if len(cells) == 0:
            raise ValueError(f"No cells with label {p!r}.")
        if method == "mean_diff":
            diff = np.abs(ctrl_mean - cells.mean(axis=0))
            span = diff.max() - diff.min()
            out[i] = (diff - diff.min()) / span if span > 0 else 0.0
        elif method == "ttest":
            with np.errstate(divide="ignore", invalid="ignore"):
                pval = stats.ttest_ind(control, cells, axis=0, equal_var=False).pvalue
            pval = np.nan_to_num(pval, nan=1.0)
            out[i] = -np.log10(np.clip(pval, np.finfo(float).tiny, 1.0))
        else:
            raise ValueError(f"method must be 'mean_diff' or 'ttest', got {method!r}.")
    return pd.DataFrame(
        out, index=pd.Index(perturbations, name="perturbation"), columns=list(terms)
    )


def affected_terms(
    targets: Iterable[str],
    gene_sets: Mapping[str, Iterable[str]],
    terms: Sequence[str],
    target_ids: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """BPs among ``terms`` whose gene set contains each target gene.

    Parameters
    ----------
    targets
        Target names (as in the perturbation labels).
    gene_sets
        Term -> member gene IDs (the full collection, not restricted to the data's genes).
    terms
        Terms to consider (the model's kept terms).
    target_ids
        Target name -> gene ID in ``gene_sets`` (e.g. symbol -> Ensembl); targets
        without an ID have no affected term.

    Returns
    -------
    Target -> affected terms.
    """
    members = {t: set(gene_sets.get(t, ())) for t in terms}
    out = {}
    for target in targets:
        gene = target if target_ids is None else target_ids.get(target)
        out[target] = [t for t in terms if gene is not None and gene in members[t]]
    return out


def interpretability_metrics(
    scores: pd.DataFrame,
    affected: Mapping[str, Sequence[str]],
    ks: Sequence[int] = (25, 100),
) -> pd.DataFrame:
    """Recall@k and z-diff of the activation-score test, per perturbation.

    Parameters
    ----------
    scores
        Output of :func:`activation_scores`.
    affected
        Target -> affected terms (:func:`affected_terms`); a double's affected terms
        are the union of its targets'.
    ks
        Cut-offs of recall@k.

    Returns
    -------
    Per perturbation with at least one affected term: ``n_affected``,
    ``recall@k`` (share of the affected BPs found among the ``k`` top-scoring BPs)
    and ``z_diff`` (mean score of affected BPs minus the median score of all BPs).
    """
    rows = []
    cols = np.asarray(scores.columns)
    for pert, row in scores.iterrows():
        parts = split_label(str(pert))
        hit = sorted(set().union(*[set(affected.get(p, ())) for p in parts])) if parts else []
        hit = [h for h in hit if h in scores.columns]
        if not hit:
            continue
        values = row.to_numpy(dtype=float)
        order = cols[np.argsort(-values, kind="stable")]
        rec = {f"recall@{k}": len(set(order[:k]) & set(hit)) / len(hit) for k in ks}
        rows.append(
            {
                "perturbation": pert,
                "n_affected": len(hit),
                **rec,
                "z_diff": float(row[hit].mean() - np.median(values)),
            }
        )
    return pd.DataFrame(rows)


def random_recall(n_terms: int, k: int) -> float:
    """Expected recall@k of a random ranking of ``n_terms`` terms (``k / n_terms``)."""
    return min(k, n_terms) / n_terms
