"""Helpers shared by the plotting functions: axes, saving, labels, term names."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from scsena._constants import REGISTRY_KEYS

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from scsena.model import SENAVAE

#: Label used for control cells in plots (their raw label is often the empty string).
CONTROL_LABEL = "control"


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the Axes of a new figure of size ``figsize``."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def finish(fig: Figure, save: str | Path | None, show: bool) -> None:
    """Save the figure (tight bounding box) and/or show it."""
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, bbox_inches="tight")
    if show:
        plt.show()


def rna_of(model: SENAVAE, adata) -> ad.AnnData:
    """The AnnData the model reads (the RNA modality of a registered MuData)."""
    return model.data_splitter(adata).adata


def cell_labels(model: SENAVAE, adata) -> np.ndarray:
    """Registered perturbation label of every cell, control shown as ``"control"``.

    ``adata``: the registered AnnData or MuData (``None``: the model's).
    """
    manager = model.data_splitter(adata).adata_manager
    labels = np.asarray(manager.get_from_registry(REGISTRY_KEYS.PERTURBATION_KEY)).ravel()
    labels = np.array([str(x).strip() for x in labels], dtype=object)
    labels[labels == model.control_value_.strip()] = CONTROL_LABEL
    return labels


def target_set(label: str, delimiter: str) -> frozenset[str]:
    """The targets of a perturbation label, in any order (``"B,A"`` == ``"A,B"``)."""
    return frozenset(p.strip() for p in str(label).split(delimiter) if p.strip())


def dense(matrix) -> np.ndarray:
    """A dense array of a dense or sparse matrix."""
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def wrap(text: str, width: int) -> str:
    """``text`` wrapped at ``width`` characters, words never broken."""
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


def order_groups(groups: Sequence[str], delimiter: str) -> list[str]:
    """Control first, then single perturbations, then combinations, each sorted."""

    def key(g: str):
        n = 0 if g == CONTROL_LABEL else len(target_set(g, delimiter))
        return (n, g)

    return sorted(groups, key=key)


def term_tick_labels(model: SENAVAE, ids: Sequence[str], how: str, width: int) -> list[str]:
    """Term labels as ``how`` says (``"name"``, ``"id"``, ``"both"``); names wrapped, never cut."""
    names = dict(zip(model.term_ids_, model.term_names_))
    if how == "id":
        return list(ids)
    if how == "name":
        return [wrap(names.get(t, t) or t, width) for t in ids]
    if how == "both":
        return [wrap(f"{names.get(t, t) or t} ({t})", width) for t in ids]
    raise ValueError(f"term_labels must be 'name', 'id' or 'both', got {how!r}.")
