"""Train / test / double folds: which cells train the model and which evaluate it."""

from __future__ import annotations

import numbers
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
from scsena.data import KIND_CONTROL, KIND_DOUBLE, KIND_SINGLE, ParsedPerturbations

FOLD_CATEGORIES = [FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE, FOLD_CONTROL, FOLD_EXCLUDED]


def _random_targets(targets: Sequence[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    drawn = rng.choice(list(targets), size=min(n, len(targets)), replace=False)
    return sorted(str(t) for t in drawn)


def resolve_heldout(
    heldout: str | int | Sequence[str] | None,
    targets: Sequence[str],
    seed: int = 0,
    dataset_heldout: Sequence[str] | None = None,
) -> list[str]:
    """Resolve the held-out single perturbations (their test cells form the test fold).

    Parameters
    ----------
    heldout
        - ``"auto"``: the reference list of the data set when it names one
          (``adata.uns["scsena_dataset"]["heldout"]``, set by the Norman 2019 loader), else
          the Norman 2019 reference list where it overlaps the targets, else 10% of the
          targets (at least one) drawn with ``seed``. On a screen of 25 targets without a
          known list this holds out 2 random targets.
        - ``"all"``: every single target (a share of each target's cells is tested).
        - an ``int`` ``n``: ``n`` targets drawn with ``seed``.
        - a target name or a list of them (a target named ``"auto"`` or ``"all"`` must be
          passed in a list).
        - ``None`` or ``[]``: no test fold.
    targets
        The single targets of the data.
    seed
        Seed of the random draws.
    dataset_heldout
        The data set's reference list, if any.

    Returns
    -------
    list of str
        Sorted held-out targets (plain ``str``).

    Raises
    ------
    ValueError
        For names that are not single targets, or an ``int`` outside ``[0, n_targets]``.
    """
    if heldout is None:
        return []
    if isinstance(heldout, str) and heldout == "auto":
        for ref in (dataset_heldout, NORMAN_HELDOUT):
            if ref is not None:
                hit = sorted(str(t) for t in set(ref) & set(targets))
                if hit:
                    return hit
        return _random_targets(targets, max(1, round(0.1 * len(targets))), seed)
    if isinstance(heldout, str) and heldout == "all":
        return sorted(str(t) for t in targets)
    if isinstance(heldout, numbers.Integral) and not isinstance(heldout, bool):
        if not 0 <= int(heldout) <= len(targets):
            raise ValueError(
                f"heldout={int(heldout)} asks for more targets than the data has "
                f"({len(targets)}) or fewer than 0; pass 0 to {len(targets)}, 'all', 'auto', "
                "or a list of target names."
            )
        return _random_targets(targets, int(heldout), seed)
    if isinstance(heldout, str):
        heldout = [heldout]
    heldout = [str(t) for t in heldout]
    unknown = sorted(set(heldout) - set(targets))
    if unknown:
        raise ValueError(
            f"Held-out perturbation(s) {unknown} are not single targets of the data; known "
            f"targets: {list(targets)[:30]}. heldout also takes 'auto', 'all' (a share of "
            "every target's cells) or a number of random targets."
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
