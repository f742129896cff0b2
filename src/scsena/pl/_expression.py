"""Expression plots: predicted and real cells in one shared embedding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._common import CONTROL_LABEL, cell_labels, dense, finish, new_axes, rna_of, target_set

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes

    from scsena.model import SENAVAE

#: Colour of control cells.
_CONTROL_COLOUR = "#9e9e9e"


def _cells_frame(matrix, labels: Sequence[str], source: str, var_names) -> ad.AnnData:
    """An AnnData of dense cells with ``obs["perturbation"]`` and ``obs["source"]``."""
    import anndata as ad

    prefix = "real" if source == "real" else "pred"
    return ad.AnnData(
        X=dense(matrix).astype(np.float32),
        obs=pd.DataFrame(
            {"perturbation": labels, "source": source},
            index=[f"{prefix}-{i}" for i in range(len(labels))],
        ),
        var=pd.DataFrame(index=var_names.copy()),
    )


def _real_cells(
    model: SENAVAE, adata, groups: Sequence[str], n_cells: int, seed: int
) -> ad.AnnData:
    """At most ``n_cells`` real cells of each group (a double's targets in any order)."""
    rna = rna_of(model, adata)
    labels = cell_labels(model, adata)
    delim = model.delimiter_
    canon = np.array([target_set(x, delim) if x != CONTROL_LABEL else None for x in labels])
    rng = np.random.default_rng(seed)
    real_idx, real_lab = [], []
    for g in groups:
        want = None if g == CONTROL_LABEL else target_set(g, delim)
        cells = (
            np.flatnonzero(labels == CONTROL_LABEL)
            if want is None
            else np.flatnonzero([c == want for c in canon])
        )
        if len(cells) > n_cells:
            cells = np.sort(rng.choice(cells, size=n_cells, replace=False))
        real_idx.append(cells)
        real_lab += [g] * len(cells)
    real_idx = np.concatenate(real_idx).astype(np.int64)
    matrix = model.data_splitter(adata).expression
    return _cells_frame(matrix[real_idx], real_lab, "real", rna.var_names)


def _pooled_cells(
    model: SENAVAE,
    adata,
    asked: Sequence[str],
    groups: Sequence[str],
    n_cells: int,
    temperature: float,
    seed: int,
) -> ad.AnnData:
    """Real cells of ``groups`` and ``n_cells`` predicted cells of each ``asked`` label."""
    import anndata as ad

    real = _real_cells(model, adata, groups, n_cells, seed)
    pred = model.predict_perturbation(
        list(asked), n_cells=n_cells, adata=adata, temperature=temperature, seed=seed
    )
    pred = _cells_frame(pred.X, np.repeat(asked, n_cells), "predicted", pred.var_names)
    pooled = ad.concat([real, pred])
    pooled.obs["perturbation"] = pd.Categorical(pooled.obs["perturbation"], categories=groups)
    pooled.obs["source"] = pd.Categorical(pooled.obs["source"], categories=["real", "predicted"])
    return pooled


def _embed(
    pooled: ad.AnnData, basis: str, n_pcs: int, seed: int
) -> tuple[np.ndarray, tuple[str, str]]:
    """2-D coordinates of the pooled cells (PCA, then UMAP if asked) and the axis names."""
    import scanpy as sc

    n_comps = int(max(2, min(n_pcs, pooled.n_obs - 1, pooled.n_vars - 1)))
    sc.pp.pca(pooled, n_comps=n_comps, random_state=seed)
    if basis == "pca":
        return pooled.obsm["X_pca"][:, :2], ("PC1", "PC2")
    sc.pp.neighbors(pooled, use_rep="X_pca", n_neighbors=15, random_state=seed)
    sc.tl.umap(pooled, random_state=seed)
    return pooled.obsm["X_umap"], ("UMAP1", "UMAP2")


def _group_colours(
    groups: Sequence[str], palette: Sequence[str] | Mapping[str, str] | None
) -> dict[str, str]:
    """Colour of each group: grey control, the colour cycle for the others by default."""
    if isinstance(palette, Mapping):
        return {g: palette[g] for g in groups}
    if palette is not None:
        return {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {g: (_CONTROL_COLOUR if g == CONTROL_LABEL else None) for g in groups}
    others = [g for g in groups if g != CONTROL_LABEL]
    colours.update({g: cycle[i % len(cycle)] for i, g in enumerate(others)})
    return colours


def _draw_cells(
    ax: Axes,
    coords: np.ndarray,
    pooled: ad.AnnData,
    groups: Sequence[str],
    colours: Mapping[str, str],
    point_size: float,
) -> None:
    """One scatter per source and group: real cells as dots, predicted as crosses; a legend."""
    lab = pooled.obs["perturbation"].to_numpy()
    src = pooled.obs["source"].to_numpy()
    for source, marker, alpha in (("real", "o", 0.5), ("predicted", "x", 0.7)):
        for g in groups:
            sel = (lab == g) & (src == source)
            if sel.any():
                ax.scatter(
                    coords[sel, 0],
                    coords[sel, 1],
                    s=point_size,
                    color=colours[g],
                    marker=marker,
                    alpha=alpha,
                    linewidths=1.0 if marker == "x" else 0,
                )
    handles = [Patch(color=colours[g], label=g) for g in groups] + [
        Line2D([], [], marker="o", ls="", color="black", label="real"),
        Line2D([], [], marker="x", ls="", color="black", label="predicted"),
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def predicted_vs_real(
    model: SENAVAE,
    adata=None,
    perturbations: str | Sequence[str] = (),
    n_cells: int = 200,
    basis: Literal["umap", "pca"] = "umap",
    include_control: bool = True,
    temperature: float = 1000.0,
    n_pcs: int = 30,
    seed: int = 0,
    palette: Sequence[str] | Mapping[str, str] | None = None,
    point_size: float = 12,
    return_data: bool = False,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes | tuple[Axes, ad.AnnData]:
    """Predicted and real cells of some perturbations in one shared embedding.

    Real cells of each perturbation (and control cells) are pooled with cells
    predicted by :meth:`~scsena.SENAVAE.predict_perturbation`; PCA (and UMAP on its
    neighbour graph) is computed on the pool, so predictions that land on the real
    cells are good predictions. Colour gives the perturbation, the marker whether a
    cell is real (filled circle) or predicted (cross).

    Parameters
    ----------
    model
        Trained model.
    adata
        Registered AnnData or MuData with the real cells (default: the model's).
    perturbations
        Labels to show (``"A"``, ``"A,B"``; a double's targets in any order).
    n_cells
        Cells per group and source (real cells: at most this many, drawn at random).
    basis
        ``"umap"`` (PCA, neighbours, UMAP) or ``"pca"`` (the first two PCs).
    include_control
        Also show real control cells.
    temperature
        Inference temperature of the predictions (reference 1000).
    n_pcs
        Principal components computed (capped by the data's size).
    seed
        Seed of the cell draws, the predictions and UMAP.
    palette
        Colours, a list in group order or a dict group -> colour.
    point_size
        Marker area.
    return_data
        Also return the pooled AnnData (``obs["perturbation"]``, ``obs["source"]``,
        the embedding in ``obsm``).
    ax, save, show
        Axes to draw into, path to save the figure to, whether to show it.

    Returns
    -------
    The Axes (one scatter collection per group and source), or ``(ax, pooled)``.
    """
    labels_in = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if not labels_in:
        raise ValueError("Give at least one perturbation to predict.")
    if basis not in ("umap", "pca"):
        raise ValueError(f"basis must be 'umap' or 'pca', got {basis!r}.")
    asked = [s.strip() for s in labels_in]
    groups = ([CONTROL_LABEL] if include_control else []) + asked
    pooled = _pooled_cells(model, adata, asked, groups, n_cells, temperature, seed)
    coords, axis_names = _embed(pooled, basis, n_pcs, seed)
    ax = new_axes(ax, (6, 5))
    _draw_cells(ax, coords, pooled, groups, _group_colours(groups, palette), point_size)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("Predicted vs real cells")
    finish(ax.figure, save, show)
    return (ax, pooled) if return_data else ax
