"""Whether a predicted change can be told from no change at the data's resolution."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scsena._constants import FOLD_TRAIN

#: A predicted change counts as detectable above this many noise levels.
DETECTABLE_RATIO = 1.5


def _control_variance(splitter, batch_size: int = 4096) -> tuple[np.ndarray, int]:
    """Per-gene variance of the control cells, read in batches, and their number."""
    control = splitter.control_indices()
    total = np.zeros(splitter.adata.n_vars)
    squares = np.zeros(splitter.adata.n_vars)
    for rows in splitter.iter_rows(control, batch_size):
        x = rows.numpy().astype(np.float64)
        total += x.sum(axis=0)
        squares += (x * x).sum(axis=0)
    n = max(len(control), 1)
    mean = total / n
    return np.maximum(squares / n - mean * mean, 0.0) * n / max(n - 1, 1), len(control)


def change_table(splitter, X: np.ndarray, start: np.ndarray, codes, targets) -> pd.DataFrame:
    """Per predicted perturbation: its mean change against the noise of the data.

    ``change_l2`` is the L2 norm of the predicted mean expression minus the starting
    control cells' mean. ``noise_l2`` is the L2 norm that the difference of two means
    shows with no change at all, for a perturbation measured on ``n_reference_cells``
    cells (the training cells of its target; of its rarer target for a double)
    against the control cells: ``sqrt(sum_g var_g (1 / n_ref + 1 / n_control))`` with
    the control cells' gene variances. ``detectable`` is ``change_over_noise >
    1.5``.
    """
    var, n_control = _control_variance(splitter)
    labels = splitter.perturbations.labels.to_numpy(dtype=object)
    train = np.asarray(splitter.folds) == FOLD_TRAIN
    n_cells = len(start)
    start_mean = splitter.group_means(start, np.full(n_cells, "", dtype=object), [""])[0]
    rows = []
    for i, code in enumerate(codes):
        names = [targets[j] for j in code if j >= 0]
        block = X[i * n_cells : (i + 1) * n_cells]
        change = float(np.linalg.norm(np.asarray(block).mean(axis=0) - start_mean))
        n_ref = min((int(((labels == t) & train).sum()) for t in names), default=0)
        noise = float(np.sqrt(var.sum() * (1 / max(n_ref, 1) + 1 / max(n_control, 1))))
        ratio = change / noise if noise > 0 else float("nan")
        rows.append((change, noise, ratio, n_ref, bool(names) and ratio > DETECTABLE_RATIO))
    columns = ["change_l2", "noise_l2", "change_over_noise", "n_reference_cells", "detectable"]
    return pd.DataFrame(rows, columns=columns)
