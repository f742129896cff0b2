"""Train / test / double folds of SPEC section 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from scsena._constants import (
    FOLD_CONTROL,
    FOLD_DOUBLE,
    FOLD_EXCLUDED,
    FOLD_TEST,
    FOLD_TRAIN,
    NORMAN_HELDOUT,
)
from scsena._perturbations import KIND_CONTROL, KIND_DOUBLE, KIND_SINGLE, ParsedPerturbations

FOLD_CATEGORIES = [FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE, FOLD_CONTROL, FOLD_EXCLUDED]


def resolve_heldout(
    heldout: str | Sequence[str] | None,
    targets: Sequence[str],
    seed: int = 0,
    dataset_heldout: Sequence[str] | None = None,
) -> list[str]:
    """Resolve the held-out single perturbations.

    ``"auto"``: the reference list of the data set when it names one
    (``adata.uns["scsena_dataset"]["heldout"]``), else the Norman 2019 reference
    list where it overlaps the targets, else 10% of the targets drawn with ``seed``
    (at least one). ``None`` or ``[]``: no test fold. A list: those targets (each
    must be a single target).
    """
    if heldout is None:
        return []
    if isinstance(heldout, str) and heldout == "auto":
        for ref in (dataset_heldout, NORMAN_HELDOUT):
            if ref is not None:
                hit = sorted(set(ref) & set(targets))
                if hit:
                    return hit
        rng = np.random.default_rng(seed)
        n = max(1, round(0.1 * len(targets)))
        return sorted(rng.choice(list(targets), size=min(n, len(targets)), replace=False))
    if isinstance(heldout, str):
        heldout = [heldout]
    unknown = sorted(set(heldout) - set(targets))
    if unknown:
        raise ValueError(
            f"Held-out perturbation(s) {unknown} are not single targets of the data; known "
            f"targets: {list(targets)[:30]}."
        )
    return sorted(set(heldout))


def assign_folds(
    parsed: ParsedPerturbations,
    heldout: Sequence[str],
    test_fraction: float = 0.2,
    seed: int = 0,
) -> pd.Categorical:
    """Fold of every cell.

    ``control`` for control cells; for each held-out single perturbation,
    ``test_fraction`` of its cells (drawn with ``seed``) go to ``test``, the rest to
    ``train``; other singles are ``train``; doubles whose two targets were seen singly
    are ``double``; anything else is ``excluded``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}.")
    kind = parsed.kind
    fold = np.full(len(kind), FOLD_EXCLUDED, dtype=object)
    fold[kind == KIND_CONTROL] = FOLD_CONTROL
    fold[kind == KIND_SINGLE] = FOLD_TRAIN
    fold[kind == KIND_DOUBLE] = FOLD_DOUBLE
    rng = np.random.default_rng(seed)
    labels = parsed.labels.to_numpy()
    for target in sorted(heldout):
        cells = np.flatnonzero((labels == target) & (kind == KIND_SINGLE))
        n_test = int(round(test_fraction * len(cells)))
        if n_test:
            fold[rng.choice(cells, size=n_test, replace=False)] = FOLD_TEST
    return pd.Categorical(fold, categories=FOLD_CATEGORIES)
