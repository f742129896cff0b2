"""Training curves: loss components per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ._common import finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from scsena.model import SENAVAE

#: Readable names of the history keys (without their ``_train``/``_validation`` suffix).
_QUANTITIES = {
    "loss": "Total loss",
    "mmd": "MMD",
    "mse": "Reconstruction MSE",
    "kl": "KL divergence",
    "l1": "L1 penalty (DAG)",
    "mean_shift": "Mean-shift loss",
    "balance": "Balance penalty",
    "alpha": "alpha (MMD weight)",
    "beta": "beta (KL weight)",
    "tau": "tau (temperature)",
    "distinct_factors": "Distinct factors",
    "assignment_entropy": "Assignment entropy",
}


def _curve_names(key: str) -> tuple[str, str]:
    """Panel title and y label of a history key: ``mmd_train`` -> ``("MMD (train)", "MMD")``."""
    for suffix in ("train", "validation"):
        if key.endswith(f"_{suffix}"):
            base = key[: -len(suffix) - 1]
            quantity = _QUANTITIES.get(base, base.replace("_", " "))
            return f"{quantity} ({suffix})", quantity
    quantity = _QUANTITIES.get(key, key.replace("_", " "))
    return quantity, quantity


def _checked_history(model: SENAVAE, keys: Sequence[str]) -> Mapping[str, pd.DataFrame]:
    """The model's history, refused when empty or lacking one of ``keys``."""
    history = getattr(model, "history_", None)
    if not history:
        raise ValueError(
            "The model has no training history: train it with the default logger "
            "(not logger=False) to record the loss curves in model.history."
        )
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"No history for {missing}; recorded: {sorted(history)}.")
    return history


def _draw_curve(
    ax: Axes,
    history: Mapping[str, pd.DataFrame],
    key: str,
    best: int | None,
    log_y: bool,
) -> None:
    """One panel: the curve of ``key``, its validation curve, the best epoch; named axes."""
    # epochs counted from 1, as the training log prints them (history is 0-based)
    df = history[key]
    ax.plot(df.index.to_numpy() + 1, df.iloc[:, 0].to_numpy(dtype=float), label="train")
    val_key = key.replace("_train", "_validation")
    if val_key != key and val_key in history:
        v = history[val_key]
        ax.plot(v.index.to_numpy() + 1, v.iloc[:, 0].to_numpy(dtype=float), label="validation")
    if best is not None:
        ax.axvline(best + 1, color="gray", ls="--", lw=0.8, label=f"best epoch ({best + 1})")
    if len(ax.lines) > 1:
        ax.legend(frameon=False, fontsize=8)
    if log_y:
        ax.set_yscale("log")
    title, quantity = _curve_names(key)
    ax.set_title(title)
    ax.set_xlabel("epoch (1 = first)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(quantity + (" (log scale)" if log_y else ""))


def training_curves(
    model: SENAVAE,
    keys: Sequence[str] = ("loss_train", "mmd_train", "mse_train", "kl_train"),
    ncols: int | None = None,
    log_y: bool = False,
    mark_best_epoch: bool = True,
    figsize: tuple[float, float] | None = None,
    save: str | Path | None = None,
    show: bool = False,
) -> Figure:
    """Loss components per epoch, one panel per key of ``model.history``.

    The matching ``*_validation`` curve is drawn too when it was logged
    (``train(validate_on_test=True)``); the epoch kept by best-epoch selection is
    marked (a dashed line, named in the panel's legend). Panels are titled with the
    quantity's name (``mmd_train``: "MMD (train)"), the y axis with the quantity.

    Parameters
    ----------
    model
        A model trained with a logger (the default one records ``model.history``).
    keys
        History keys (``loss_train``, ``mmd_train``, ``mse_train``, ``kl_train``,
        ``l1_train``, ``alpha``, ``beta``, ``tau`` ...).
    ncols
        Panels per row (default: all in one row, at most 4).
    log_y
        Logarithmic y axes.
    mark_best_epoch
        Draw a dashed line at ``model.best_epoch_`` (when best-epoch selection
        kept an epoch).
    figsize
        Figure size (default from the number of panels).
    save, show
        Path to save the figure to, whether to show it.

    Returns
    -------
    The Figure (``fig.axes``: one Axes per key).

    Raises
    ------
    ValueError
        When the model has no training history (not trained, or trained with
        ``logger=False``) or lacks a requested key.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    history = _checked_history(model, keys)
    ncols = ncols or min(len(keys), 4)
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=figsize or (3.2 * ncols, 2.8 * nrows), squeeze=False
    )
    best = getattr(model, "best_epoch_", None) if mark_best_epoch else None
    for ax, key in zip(axes.ravel(), keys):
        _draw_curve(ax, history, key, best, log_y)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    finish(fig, save, show)
    return fig
