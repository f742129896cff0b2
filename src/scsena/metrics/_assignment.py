"""Scoring learned perturbation-target -> latent-factor assignments against a known truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def assignment_recovery(
    assigned: Mapping[str, object] | pd.Series,
    truth: Mapping[str, Iterable[int]],
) -> dict:
    """How well learned target -> factor assignments recover the true ones.

    Learned factors carry arbitrary names, so they are first matched one-to-one to
    true factors (Hungarian matching maximising the number of targets whose matched
    true factor is one of their true factors); a target is *recovered* when its
    learned factor is matched to one of its true factors.

    Parameters
    ----------
    assigned
        Target -> learned factor (e.g. ``model.get_intervention_targets()["latent"]``).
    truth
        Target -> true factor indices (a target may act on several factors; e.g. a
        simulation's ``uns["scsena_simulation"]["target_factors"]``).

    Returns
    -------
    ``accuracy`` (share of the scored targets recovered), ``n_targets`` (targets in
    both), ``distinct_factors`` (learned factors used), ``matching`` (DataFrame with
    ``learned``, ``true``, ``n_targets``: targets supporting each matched pair) and
    ``per_target`` (DataFrame with ``learned``, ``true``, ``recovered``).

    Examples
    --------
    >>> assignment_recovery({"A": "z3", "B": "z3"}, {"A": [0], "B": [1]})["accuracy"]
    0.5
    """
    assigned = pd.Series(dict(assigned)) if not isinstance(assigned, pd.Series) else assigned
    targets = [t for t in assigned.index if t in truth]
    if not targets:
        raise ValueError(
            "No target is in both the learned assignment and the truth; check that both "
            "use the same target names."
        )
    learned_names = sorted({str(assigned[t]) for t in targets})
    true_sets = {t: {int(k) for k in np.atleast_1d(np.asarray(truth[t]))} for t in targets}
    true_names = sorted(set().union(*true_sets.values()))
    li = {name: i for i, name in enumerate(learned_names)}
    ti = {name: j for j, name in enumerate(true_names)}
    support = np.zeros((len(learned_names), len(true_names)), dtype=np.int64)
    for t in targets:
        for k in true_sets[t]:
            support[li[str(assigned[t])], ti[k]] += 1
    rows, cols = linear_sum_assignment(support, maximize=True)
    match = {learned_names[r]: true_names[c] for r, c in zip(rows, cols)}
    per_target = pd.DataFrame(
        {
            "learned": [str(assigned[t]) for t in targets],
            "true": [sorted(true_sets[t]) for t in targets],
        },
        index=pd.Index(targets, name="target"),
    )
    per_target["recovered"] = [match.get(str(assigned[t])) in true_sets[t] for t in targets]
    matching = pd.DataFrame(
        {
            "learned": [learned_names[r] for r in rows],
            "true": [true_names[c] for c in cols],
            "n_targets": support[rows, cols],
        }
    )
    return {
        "accuracy": float(per_target["recovered"].mean()),
        "n_targets": len(targets),
        "distinct_factors": len(learned_names),
        "matching": matching,
        "per_target": per_target,
    }
