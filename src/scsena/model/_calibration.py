"""Calibrated predictions: each seen target's mean shift as the training data support it.

A trained model reproduces the training-fold mean of a seen target only a few percent
off, and predicts some change where the data show none. Calibration measures, per
target, the model's mean predicted shift ``m_t`` on control cells and the training
fold's observed shift ``s_t`` (mean of the target's single-perturbation cells minus
the control cells' mean), shrinks ``s_t`` gene by gene towards 0 where its standard
error does not support it (``c_t = s_t max(0, 1 - k se_t^2 / s_t^2)``, a non-negative
garrote with strength ``k``), and stores the correction ``r_t = c_t - m_t``. A
prediction for a perturbation adds the corrections of its targets and is clipped at 0
(log-normalised expression is non-negative). A seen single is then predicted with the
model's cell-to-cell variation around the calibrated mean; an unseen double with the
mean ``control + c_a + c_b + (m_ab - m_a - m_b)``: the additive baseline of the
calibrated singles plus the model's own interaction.
"""

from __future__ import annotations

import numpy as np

from scsena._constants import FOLD_TRAIN
from scsena.data import KIND_SINGLE

#: Garrote strength ``k`` of the default calibration (measured in docs/results.md).
DEFAULT_SHRINKAGE = 1.0
#: Control cells the model's mean shift is measured on.
CALIBRATION_CELLS = 1000


def observed_shifts(splitter, targets, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk training-fold mean shift of each target, and its number of cells.

    Returns ``(shifts, n_cells)``: ``targets x genes`` and ``targets``; targets without
    single-perturbation training cells get a zero row and ``n_cells`` 0.
    """
    parsed = splitter.perturbations
    train = (np.asarray(splitter.folds) == FOLD_TRAIN) & (parsed.kind == KIND_SINGLE)
    labels = parsed.labels.to_numpy(dtype=object)
    present = [t for t in targets if (train & (labels == t)).any()]
    control = splitter.control_indices()
    n_c, mean_c, var_c = splitter.group_moments(
        control, np.full(len(control), "", dtype=object), [""]
    )
    shifts = np.zeros((len(targets), splitter.adata.n_vars))
    n_cells = np.zeros(len(targets), dtype=np.int64)
    if not present:
        return shifts, n_cells
    idx = np.flatnonzero(train)
    n_t, mean_t, var_t = splitter.group_moments(idx, labels[idx], present)
    s = mean_t - mean_c
    se2 = var_c / n_c[0] + var_t / n_t[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(s != 0, 1.0 - shrinkage * se2 / (s * s), 0.0)
    rows = [targets.index(t) for t in present]
    shifts[rows] = s * np.clip(factor, 0.0, 1.0)
    n_cells[rows] = n_t
    return shifts, n_cells


def check_shrinkage(shrinkage) -> float:
    """``shrinkage`` as a float when it is a finite number >= 0; otherwise a clear error."""
    ok = isinstance(shrinkage, (int, float, np.number)) and not isinstance(shrinkage, bool)
    if not ok or not np.isfinite(shrinkage) or shrinkage < 0:
        raise ValueError(
            f"`shrinkage` must be a finite number >= 0 (0: the training means as they are; "
            f"default {DEFAULT_SHRINKAGE}), got {shrinkage!r}."
        )
    return float(shrinkage)
