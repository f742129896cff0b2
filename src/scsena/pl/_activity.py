"""Pathway-activity plots: the activity heatmap, a perturbation's top BPs, differential activity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._common import (
    CONTROL_LABEL,
    cell_labels,
    dense,
    finish,
    new_axes,
    order_groups,
    rna_of,
    term_tick_labels,
    wrap,
)

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes

    from scsena.model import SENAVAE

_TERM_LABELS = ("name", "id", "both")


# ---------------------------------------------------------- pathway heatmap
def _group_labels(model: SENAVAE, adata, rna: ad.AnnData, groupby: str | None) -> np.ndarray:
    """Each cell's group: its perturbation label, or its value of ``obs[groupby]``."""
    if groupby is None:
        return cell_labels(model, adata)
    if groupby not in rna.obs:
        raise KeyError(f"{groupby!r} is not a column of obs: {list(rna.obs.columns)}.")
    return rna.obs[groupby].astype(str).to_numpy()


def _group_mean_activity(
    model: SENAVAE,
    adata,
    groupby: str | None,
    perturbations: Sequence[str] | None,
    relative_to_control: bool,
) -> pd.DataFrame:
    """Mean BP activity of each group (rows in display order), minus control if asked."""
    act = model.pathway_activity_anndata(adata)
    labels = _group_labels(model, adata, rna_of(model, adata), groupby)
    df = pd.DataFrame(dense(act.X), columns=list(act.var_names))
    means = df.groupby(labels, sort=True).mean()
    if perturbations is None:
        order = order_groups(list(means.index), model.delimiter_)
    else:
        order = [CONTROL_LABEL if p == model.control_value_ else str(p) for p in perturbations]
        missing = [p for p in order if p not in means.index]
        if missing:
            raise ValueError(f"No cells for {missing}; groups: {list(means.index)}.")
    if relative_to_control:
        if CONTROL_LABEL not in means.index:
            raise ValueError("relative_to_control needs control cells.")
        means = means - means.loc[CONTROL_LABEL]
    return means.loc[order]


def _heatmap_terms(
    model: SENAVAE, means: pd.DataFrame, terms: Sequence[str] | None, n_terms: int
) -> list[str]:
    """IDs of the BPs shown: ``terms`` (IDs or names), else the most variable across groups."""
    if terms is None:
        var = means.var(axis=0) if len(means) > 1 else means.abs().iloc[0]
        return list(var.sort_values(ascending=False, kind="stable").index[:n_terms])
    by_name = {n: t for t, n in zip(model.term_ids_, model.term_names_)}
    ids = [t if t in means.columns else by_name.get(t, t) for t in terms]
    missing = [t for t in ids if t not in means.columns]
    if missing:
        raise ValueError(f"Unknown terms {missing}: use model.term_ids_ or term_names_.")
    return ids


def _min_max(mat: np.ndarray, axis: int) -> np.ndarray:
    """``mat`` scaled to ``[0, 1]`` along ``axis`` (constant slices give 0)."""
    lo, hi = mat.min(axis=axis, keepdims=True), mat.max(axis=axis, keepdims=True)
    return np.divide(mat - lo, hi - lo, out=np.zeros_like(mat), where=hi > lo)


def _heatmap_colours(
    mat: np.ndarray,
    relative_to_control: bool,
    standard_scale: str | None,
    cmap: str | None,
) -> tuple[np.ndarray, float | None, float | None, str, str]:
    """Matrix as drawn, colour limits, colour map and colour-bar label of the heatmap."""
    if relative_to_control:
        lim = float(np.abs(mat).max()) or 1.0
        return mat, -lim, lim, cmap or "RdBu_r", "activity - control"
    if standard_scale == "var":
        mat = _min_max(mat, axis=0)
    elif standard_scale == "group":
        mat = _min_max(mat, axis=1)
    elif standard_scale is not None:
        raise ValueError(f"standard_scale must be 'var', 'group' or None, not {standard_scale!r}.")
    cbar_label = "mean activity" + (" (scaled)" if standard_scale else "")
    return mat, None, None, cmap or "viridis", cbar_label


def _heatmap_title(relative_to_control: bool, standard_scale: str | None) -> str:
    """What the heatmap's colour shows."""
    if relative_to_control:
        return "BP activity per perturbation, minus control"
    scaled = {"var": " (each BP scaled to [0, 1])", "group": " (each row scaled to [0, 1])"}
    return "Mean BP activity per perturbation" + scaled.get(standard_scale or "", "")


def pathway_activity(
    model: SENAVAE,
    adata=None,
    groupby: str | None = None,
    terms: Sequence[str] | None = None,
    n_terms: int = 20,
    perturbations: Sequence[str] | None = None,
    relative_to_control: bool = False,
    standard_scale: Literal["var", "group"] | None = "var",
    term_labels: Literal["name", "id", "both"] = "name",
    label_width: int = 40,
    cmap: str | None = None,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes:
    """Heatmap of mean biological-process activity per perturbation.

    Rows are perturbations (control first, then singles, then combinations), columns
    BPs; a cell is the mean pathway activity (:meth:`~scsena.SENAVAE.get_pathway_activity`)
    of the group's cells.

    Parameters
    ----------
    model
        Trained model.
    adata
        Registered AnnData or MuData (default: the model's).
    groupby
        Column of ``obs`` to group cells by; ``None`` uses the registered
        perturbation labels (control cells shown as ``"control"``).
    terms
        BPs to show (IDs as in :attr:`~scsena.SENAVAE.term_ids_`, or names);
        default: the ``n_terms`` BPs whose group means vary most across groups.
    n_terms
        Number of BPs shown when ``terms`` is ``None``.
    perturbations
        Groups to show, in this order (default: all).
    relative_to_control
        Show the difference from the control mean (a diverging colour map centred
        at zero) instead of the mean; needs control cells.
    standard_scale
        Scale each BP (``"var"``) or each group (``"group"``) to ``[0, 1]``, as
        :func:`scanpy.pl.matrixplot` does; ignored with ``relative_to_control``.
    term_labels
        Label BPs by ``"name"``, ``"id"`` or ``"both"``.
    label_width
        Wrap BP names at this many characters (never truncated).
    cmap
        Colour map (default ``"viridis"``, or ``"RdBu_r"`` relative to control).
    ax, save, show
        Axes to draw into, path to save the figure to, whether to show it.

    Returns
    -------
    The Axes; its image (``ax.images[0]``) holds the ``groups x terms`` matrix, the
    title says what the colour shows.
    """
    means = _group_mean_activity(model, adata, groupby, perturbations, relative_to_control)
    ids = _heatmap_terms(model, means, terms, n_terms)
    mat, vmin, vmax, cmap, cbar_label = _heatmap_colours(
        means[ids].to_numpy(dtype=float), relative_to_control, standard_scale, cmap
    )
    order = list(means.index)
    xlabels = term_tick_labels(model, ids, term_labels, label_width)
    n_lines = max(lab.count("\n") + 1 for lab in xlabels)
    ax = new_axes(ax, (0.22 * n_lines * len(ids) + 3, 0.3 * len(order) + 0.08 * label_width + 2))
    im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(len(ids)))
    ax.set_xticklabels(xlabels, rotation=90, fontsize=8, linespacing=1.0)
    ax.set_yticks(np.arange(len(order)))
    ax.set_yticklabels(order)
    ax.set_xlabel("biological process")
    ax.set_ylabel("perturbation" if groupby is None else groupby)
    ax.set_title(_heatmap_title(relative_to_control, standard_scale))
    ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.6)
    finish(ax.figure, save, show)
    return ax


# ----------------------------------------------------------------- top BPs
def _top_scores(
    model: SENAVAE,
    perturbation: str,
    scores: pd.DataFrame | None,
    n: int,
    **test_kwargs,
) -> pd.Series:
    """The ``n`` best activation scores of ``perturbation`` (computed when ``scores`` is None)."""
    if scores is None:
        _, scores = model.activation_test(return_scores=True, **test_kwargs)
    if perturbation not in scores.index:
        raise ValueError(
            f"No scores for {perturbation!r}: the test scores single perturbations with "
            f"cells in the data: {list(scores.index)}."
        )
    row = scores.loc[perturbation].astype(float).sort_values(ascending=False, kind="stable")
    return row.iloc[:n]


def _affected_legend(ax: Axes, perturbation: str, colors: tuple[str, str]) -> None:
    """Legend of the bar colours: BPs containing the perturbed gene, other BPs."""
    handles = [
        Patch(color=colors[1], label=f"contains {perturbation}"),
        Patch(color=colors[0], label="other"),
    ]
    ax.legend(handles=handles, loc="lower right", frameon=False)


def top_bps(
    model: SENAVAE,
    perturbation: str,
    adata=None,
    n: int = 15,
    method: Literal["mean_diff", "ttest"] = "mean_diff",
    scores: pd.DataFrame | None = None,
    gene_sets: str | Path | pd.DataFrame | Mapping | None = None,
    term_labels: Literal["name", "id", "both"] = "name",
    label_width: int = 50,
    colors: tuple[str, str] = ("tab:gray", "tab:red"),
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes:
    """Bar chart of the BPs whose activity a single perturbation changes most.

    Scores are those of the activation-score test
    (:meth:`~scsena.SENAVAE.activation_test`); BPs whose gene set contains the
    perturbed gene (the *affected* BPs of the test,
    :meth:`~scsena.SENAVAE.get_affected_terms`) are coloured differently.

    Parameters
    ----------
    model
        Trained model.
    perturbation
        A single-perturbation label (a target).
    adata
        Registered AnnData or MuData (default: the model's).
    n
        Number of BPs shown (the top-scoring ones, best on top).
    method
        ``"mean_diff"`` or ``"ttest"`` (see :meth:`~scsena.SENAVAE.activation_test`).
    scores
        Precomputed ``perturbations x terms`` scores (the second value of
        ``model.activation_test(return_scores=True)``); computed when ``None``.
    gene_sets
        Collection defining the affected BPs (default: as in
        :meth:`~scsena.SENAVAE.get_affected_terms`).
    term_labels
        Label BPs by ``"name"``, ``"id"`` or ``"both"``.
    label_width
        Wrap BP names at this many characters (never truncated).
    colors
        Colours of other and of affected BPs.
    ax, save, show
        Axes to draw into, path to save the figure to, whether to show it.

    Returns
    -------
    The Axes (one bar per BP in ``ax.patches``, BP labels as y tick labels).
    """
    top = _top_scores(
        model, perturbation, scores, n, adata=adata, method=method, gene_sets=gene_sets
    )
    affected = set(model.get_affected_terms(perturbation, gene_sets)[perturbation])
    ids = list(top.index)[::-1]  # best on top
    labels = term_tick_labels(model, ids, term_labels, label_width)
    n_lines = sum(lab.count("\n") + 1 for lab in labels)
    ax = new_axes(ax, (6, 0.18 * n_lines + 0.12 * len(ids) + 1.5))
    ax.barh(
        np.arange(len(ids)),
        top.to_numpy()[::-1],
        color=[colors[1] if t in affected else colors[0] for t in ids],
    )
    ax.set_yticks(np.arange(len(ids)))
    ax.set_yticklabels(labels, linespacing=1.0)
    ax.set_xlabel("activation score" + (" (-log10 p)" if method == "ttest" else ""))
    ax.set_ylabel("biological process")
    ax.set_title(f"BPs most changed by {perturbation}")
    _affected_legend(ax, perturbation, colors)
    finish(ax.figure, save, show)
    return ax


# ------------------------------------------------------ differential activity
def _differential_results(
    data: SENAVAE | pd.DataFrame, perturbations: Sequence[str] | None
) -> pd.DataFrame:
    """The results of ``model.differential_activity()`` (checked), for ``perturbations``."""
    if not isinstance(data, pd.DataFrame):
        return data.differential_activity(perturbations=perturbations)
    needed = {"perturbation", "term", "term_name", "std_effect", "fdr", "rank"}
    missing = sorted(needed - set(data.columns))
    if missing:
        raise ValueError(
            f"The results lack the columns {missing}: pass the DataFrame returned by "
            "model.differential_activity() (or the model itself)."
        )
    if perturbations is None:
        return data
    asked = [str(p) for p in perturbations]
    absent = [p for p in asked if p not in set(data["perturbation"])]
    if absent:
        shown = list(dict.fromkeys(data["perturbation"]))[:10]
        raise ValueError(f"No results for {absent}; results hold {shown}.")
    return data[data["perturbation"].isin(asked)]


def _result_groups(res: pd.DataFrame, perturbations: Sequence[str] | None) -> list[str]:
    """The perturbations shown: those asked for, else all in the results (in their order)."""
    if perturbations is not None:
        groups = [str(p) for p in perturbations]
    else:
        groups = list(dict.fromkeys(res["perturbation"]))
    if not groups:
        raise ValueError("No perturbations in the results.")
    return groups


def _top_terms_per_group(res: pd.DataFrame, groups: Sequence[str], n_terms: int) -> list[str]:
    """Union of each group's ``n_terms`` best-ranked terms, grouped by group, in rank order."""
    top = res[res["rank"] <= n_terms].sort_values(["rank"], kind="stable")
    return list(
        dict.fromkeys(t for g in groups for t in top.loc[top["perturbation"] == g, "term"].tolist())
    )


def _result_term_labels(
    ids: Sequence[str], names: Mapping[str, str], how: str, width: int
) -> list[str]:
    """Term labels from the results' names: the ID, the wrapped name or ``name (ID)``."""
    if how == "id":
        return list(ids)
    if how == "name":
        return [wrap(names.get(t) or t, width) for t in ids]
    return [wrap(f"{names.get(t) or t} ({t})", width) for t in ids]


def _dot_grid(
    res: pd.DataFrame, groups: Sequence[str], ids: Sequence[str]
) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Positions, standardised effects and FDRs of the dots, column (group) by column."""
    cells = res[res["term"].isin(ids)].set_index(["perturbation", "term"])
    xs, ys, colour, qval = [], [], [], []
    for i, g in enumerate(groups):
        for j, t in enumerate(ids):
            row = cells.loc[(g, t)]
            xs.append(i)
            ys.append(j)
            colour.append(float(row["std_effect"]))
            qval.append(float(row["fdr"]))
    return xs, ys, np.asarray(colour), np.asarray(qval)


def _dot_area(log_fdr: np.ndarray | float, max_size: float):
    """Marker area of a dot from its (capped) ``-log10 FDR``."""
    return 15 + 235 * log_fdr / max_size


def _draw_dots(
    ax: Axes,
    xs: Sequence[int],
    ys: Sequence[int],
    colour: np.ndarray,
    qval: np.ndarray,
    fdr: float,
    max_size: float,
    cmap: str,
):
    """Dots coloured by effect (centred at 0), sized by ``-log10 FDR``, edged when significant."""
    logq = np.clip(-np.log10(np.clip(np.nan_to_num(qval, nan=1.0), 1e-300, 1.0)), 0, max_size)
    lim = float(np.nanmax(np.abs(colour))) if np.isfinite(colour).any() else 1.0
    sig = np.nan_to_num(qval, nan=1.0) < fdr
    return ax.scatter(
        xs,
        ys,
        c=colour,
        s=_dot_area(logq, max_size),
        cmap=cmap,
        vmin=-lim,
        vmax=lim,
        edgecolors="black",
        linewidths=np.where(sig, 0.7, 0.0),
    )


def _label_dot_grid(ax: Axes, groups: Sequence[str], labels: Sequence[str]) -> None:
    """Perturbations along x, term labels down y (first on top), a light grid behind the dots."""
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(labels)))
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("perturbation")
    ax.set_ylabel("biological process")


def _fdr_size_legend(ax: Axes, fdr: float, max_size: float) -> None:
    """Legend of the dot sizes (``-log10 FDR``), edged where significant."""
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            markerfacecolor="0.6",
            markeredgecolor="black",
            markeredgewidth=0.7 if q > -np.log10(fdr) else 0.0,
            markersize=np.sqrt(_dot_area(q, max_size)),
            label=f"{q:g}{'+' if q == max_size else ''}",
        )
        for q in (1, 5, 20, max_size)
        if q <= max_size
    ]
    ax.legend(
        handles=handles,
        title=f"-log10 FDR\n(edged: FDR < {fdr:g})",
        loc="upper left",
        bbox_to_anchor=(1.0, -0.02),
        frameon=False,
        fontsize=8,
        title_fontsize=8,
    )


def differential_activity(
    data: SENAVAE | pd.DataFrame,
    perturbations: Sequence[str] | None = None,
    n_terms: int = 3,
    fdr: float = 0.05,
    term_labels: Literal["name", "id", "both"] = "name",
    label_width: int = 50,
    max_size: float = 50.0,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes:
    """Dot plot of the pathways each perturbation changes most, against control.

    Columns are perturbations, rows the union of each perturbation's ``n_terms``
    top-ranked terms of :meth:`~scsena.SENAVAE.differential_activity` (grouped by
    the perturbation that selected them, in rank order). A dot's colour is the
    standardised effect (the change in units of the control cells' spread; red:
    up, blue: down, with the default orientation "up" meaning the term's member genes
    go up), its size ``-log10 FDR`` (capped at ``max_size``); dots at
    ``FDR >= fdr`` are drawn hollow. Full term names are shown, wrapped.

    Parameters
    ----------
    data
        A trained model (its :meth:`~scsena.SENAVAE.differential_activity` is
        computed), or that method's DataFrame.
    perturbations
        Perturbations to show, in this order (default: all in the results).
    n_terms
        Top terms taken from every perturbation.
    fdr
        Dots with a smaller FDR get a black edge.
    term_labels
        Label terms by ``"name"``, ``"id"`` or ``"both"``.
    label_width
        Wrap term names at this many characters (never truncated).
    max_size
        ``-log10 FDR`` at which dot sizes stop growing.
    cmap
        Diverging colour map, centred at 0.
    ax, save, show
        Axes to draw into, path to save the figure to, whether to show it.

    Returns
    -------
    The Axes: ``ax.collections[0]`` holds one dot per perturbation and term (column
    by column; its array the standardised effects), term labels are the y tick
    labels, perturbations the x tick labels.
    """
    if n_terms < 1:
        raise ValueError(f"n_terms must be >= 1, got {n_terms}.")
    if term_labels not in _TERM_LABELS:
        raise ValueError(f"term_labels must be 'name', 'id' or 'both', got {term_labels!r}.")
    res = _differential_results(data, perturbations)
    groups = _result_groups(res, perturbations)
    ids = _top_terms_per_group(res, groups, n_terms)
    names = dict(zip(res["term"], res["term_name"].fillna("")))
    labels = _result_term_labels(ids, names, term_labels, label_width)
    n_lines = sum(lab.count("\n") + 1 for lab in labels)
    width = 0.45 * len(groups) + 0.12 * label_width + 2.5
    ax = new_axes(ax, (width, 0.22 * n_lines + 0.25 * len(ids) + 2))
    dots = _draw_dots(ax, *_dot_grid(res, groups, ids), fdr=fdr, max_size=max_size, cmap=cmap)
    _label_dot_grid(ax, groups, labels)
    ax.set_title(f"Top {n_terms} pathways per perturbation vs control")
    label = "standardised effect\n(control SDs)"
    ax.figure.colorbar(dots, ax=ax, label=label, shrink=0.5, pad=0.02)
    _fdr_size_legend(ax, fdr, max_size)
    finish(ax.figure, save, show)
    return ax
