"""The plotting functions of :mod:`scsena.pl` (matplotlib, networkx)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from scsena import gene_sets as gs
from scsena._constants import REGISTRY_KEYS
from scsena.data import rna_modality
from scsena.metrics import affected_terms

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from scsena.model import SENAVAE

#: Label used for control cells in plots (their raw label is often the empty string).
_CONTROL_LABEL = "control"


# ---------------------------------------------------------------- helpers
def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _finish(fig: Figure, save: str | Path | None, show: bool) -> None:
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, bbox_inches="tight")
    if show:
        plt.show()


def _rna(model: SENAVAE, adata) -> ad.AnnData:
    """The AnnData the model reads (the RNA modality of a registered MuData)."""
    return rna_modality(model.adata if adata is None else adata)


def _labels(model: SENAVAE, adata: ad.AnnData) -> np.ndarray:
    """Registered perturbation label of every cell, control shown as ``"control"``."""
    manager = model.get_anndata_manager(adata, required=True)
    labels = np.asarray(manager.get_from_registry(REGISTRY_KEYS.PERTURBATION_KEY)).ravel()
    labels = np.array([str(x).strip() for x in labels], dtype=object)
    labels[labels == model.control_value_.strip()] = _CONTROL_LABEL
    return labels


def _canonical(label: str, delimiter: str) -> frozenset[str]:
    return frozenset(p.strip() for p in str(label).split(delimiter) if p.strip())


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _order_groups(groups: Sequence[str], delimiter: str) -> list[str]:
    """Control first, then single perturbations, then combinations, each sorted."""

    def key(g: str):
        n = 0 if g == _CONTROL_LABEL else len(_canonical(g, delimiter))
        return (n, g)

    return sorted(groups, key=key)


def _term_labels(model: SENAVAE, ids: Sequence[str], how: str, width: int, fit=None) -> list[str]:
    """Term labels as ``how`` says; names fitted to ``width`` by ``fit`` (default: cut)."""
    fit = _short if fit is None else fit
    names = dict(zip(model.term_ids_, model.term_names_))
    if how == "id":
        return list(ids)
    if how == "name":
        return [fit(names.get(t, t) or t, width) for t in ids]
    if how == "both":
        return [f"{fit(names.get(t, t) or t, width)} ({t})" for t in ids]
    raise ValueError(f"term_labels must be 'name', 'id' or 'both', got {how!r}.")


def _affected(model: SENAVAE, perturbation: str, gene_sets) -> set[str]:
    """BPs whose gene set contains a target of ``perturbation`` (as the activation test)."""
    targets = sorted(_canonical(perturbation, model.delimiter_))
    if gene_sets is None:
        gene_sets = model.registry_["setup_args"].get("gene_sets")
    if gene_sets is not None:
        collection = gs.as_gene_sets(gene_sets)
        sample = [g for genes in list(collection.values())[:50] for g in genes][:500]
    else:
        state = model.registry_["field_registries"][REGISTRY_KEYS.MASK_KEY]["state_registry"]
        mask = gs.GeneSetMask.from_uns(state["mask"])
        member = mask.membership.tocsr()
        var = list(mask.var_names)
        collection = {t: [] for t in mask.terms}
        rows, cols = member.nonzero()
        for r, c in zip(rows, cols):
            collection[mask.terms[c]].append(var[r])
        sample = var
    id_type = gs.guess_id_type(sample)
    if gs.guess_id_type(targets) == id_type:
        ids = {t: t for t in targets}
    else:
        mapping = gs.map_gene_ids(targets, to=id_type).mapping
        ids = {t: str(v) for t, v in mapping.items() if isinstance(v, str)}
    hit = affected_terms(targets, collection, model.term_ids_, ids)
    return set().union(*hit.values()) if hit else set()


# ---------------------------------------------------------- pathway heatmap
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
    rna = _rna(model, adata)
    act = model.pathway_activity_anndata(rna)
    if groupby is None:
        labels = _labels(model, rna)
    else:
        if groupby not in rna.obs:
            raise KeyError(f"{groupby!r} is not a column of obs: {list(rna.obs.columns)}.")
        labels = rna.obs[groupby].astype(str).to_numpy()
    df = pd.DataFrame(_dense(act.X), columns=list(act.var_names))
    means = df.groupby(labels, sort=True).mean()
    if perturbations is None:
        order = _order_groups(list(means.index), model.delimiter_)
    else:
        order = [_CONTROL_LABEL if p == model.control_value_ else str(p) for p in perturbations]
        missing = [p for p in order if p not in means.index]
        if missing:
            raise ValueError(f"No cells for {missing}; groups: {list(means.index)}.")
    if relative_to_control:
        if _CONTROL_LABEL not in means.index:
            raise ValueError("relative_to_control needs control cells.")
        means = means - means.loc[_CONTROL_LABEL]
    means = means.loc[order]
    if terms is None:
        var = means.var(axis=0) if len(means) > 1 else means.abs().iloc[0]
        ids = list(var.sort_values(ascending=False, kind="stable").index[:n_terms])
    else:
        by_name = {n: t for t, n in zip(model.term_ids_, model.term_names_)}
        ids = [t if t in means.columns else by_name.get(t, t) for t in terms]
        missing = [t for t in ids if t not in means.columns]
        if missing:
            raise ValueError(f"Unknown terms {missing}: use model.term_ids_ or term_names_.")
    mat = means[ids].to_numpy(dtype=float)
    if relative_to_control:
        lim = float(np.abs(mat).max()) or 1.0
        vmin, vmax, cmap = -lim, lim, cmap or "RdBu_r"
        cbar_label = "activity - control"
    else:
        if standard_scale == "var":
            lo, hi = mat.min(axis=0, keepdims=True), mat.max(axis=0, keepdims=True)
            mat = np.divide(mat - lo, hi - lo, out=np.zeros_like(mat), where=hi > lo)
        elif standard_scale == "group":
            lo, hi = mat.min(axis=1, keepdims=True), mat.max(axis=1, keepdims=True)
            mat = np.divide(mat - lo, hi - lo, out=np.zeros_like(mat), where=hi > lo)
        elif standard_scale is not None:
            raise ValueError(
                f"standard_scale must be 'var', 'group' or None, not {standard_scale!r}."
            )
        vmin = vmax = None
        cmap = cmap or "viridis"
        cbar_label = "mean activity" + (" (scaled)" if standard_scale else "")
    xlabels = _term_labels(model, ids, term_labels, label_width, fit=_wrap)  # never cut
    n_lines = max(lab.count("\n") + 1 for lab in xlabels)
    ax = _axes(ax, (0.22 * n_lines * len(ids) + 3, 0.3 * len(order) + 0.08 * label_width + 2))
    im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(len(ids)))
    ax.set_xticklabels(xlabels, rotation=90, fontsize=8, linespacing=1.0)
    ax.set_yticks(np.arange(len(order)))
    ax.set_yticklabels(order)
    ax.set_xlabel("biological process")
    ax.set_ylabel("perturbation" if groupby is None else groupby)
    if relative_to_control:
        title = "BP activity per perturbation, minus control"
    else:
        title = "Mean BP activity per perturbation" + (
            {"var": " (each BP scaled to [0, 1])", "group": " (each row scaled to [0, 1])"}.get(
                standard_scale or "", ""
            )
        )
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.6)
    _finish(ax.figure, save, show)
    return ax


# ----------------------------------------------------------------- top BPs
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
    perturbed gene (the *affected* BPs of the test) are coloured differently.

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
        :meth:`~scsena.SENAVAE.activation_test`).
    term_labels
        Label BPs by ``"name"``, ``"id"`` or ``"both"``.
    label_width
        Truncate BP names to this many characters.
    colors
        Colours of other and of affected BPs.
    ax, save, show
        Axes to draw into, path to save the figure to, whether to show it.

    Returns
    -------
    The Axes (one bar per BP in ``ax.patches``, BP labels as y tick labels).
    """
    if scores is None:
        _, scores = model.activation_test(
            adata, method=method, gene_sets=gene_sets, return_scores=True
        )
    if perturbation not in scores.index:
        raise ValueError(
            f"No scores for {perturbation!r}: the test scores single perturbations with "
            f"cells in the data: {list(scores.index)}."
        )
    row = scores.loc[perturbation].astype(float).sort_values(ascending=False, kind="stable")
    top = row.iloc[:n]
    affected = _affected(model, perturbation, gene_sets)
    is_hit = np.array([t in affected for t in top.index])
    ids = list(top.index)[::-1]
    values = top.to_numpy()[::-1]
    hit = is_hit[::-1]
    ax = _axes(ax, (6, 0.3 * len(ids) + 1.5))
    ax.barh(
        np.arange(len(ids)),
        values,
        color=[colors[1] if h else colors[0] for h in hit],
    )
    ax.set_yticks(np.arange(len(ids)))
    ax.set_yticklabels(_term_labels(model, ids, term_labels, label_width))
    ax.set_xlabel("activation score" + (" (-log10 p)" if method == "ttest" else ""))
    ax.set_title(f"Top BPs: {perturbation}")
    ax.legend(
        handles=[
            Patch(color=colors[1], label=f"contains {perturbation}"),
            Patch(color=colors[0], label="other"),
        ],
        loc="lower right",
        frameon=False,
    )
    _finish(ax.figure, save, show)
    return ax


# ------------------------------------------------------ differential activity
def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


def _differential_results(
    data: SENAVAE | pd.DataFrame, perturbations: Sequence[str] | None
) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        needed = {"perturbation", "term", "term_name", "std_effect", "fdr", "rank"}
        missing = sorted(needed - set(data.columns))
        if missing:
            raise ValueError(
                f"The results lack the columns {missing}: pass the DataFrame returned by "
                "model.differential_activity() (or the model itself)."
            )
        res = data
        if perturbations is not None:
            asked = [str(p) for p in perturbations]
            absent = [p for p in asked if p not in set(res["perturbation"])]
            if absent:
                shown = list(dict.fromkeys(res["perturbation"]))[:10]
                raise ValueError(f"No results for {absent}; results hold {shown}.")
            res = res[res["perturbation"].isin(asked)]
        return res
    return data.differential_activity(perturbations=perturbations)


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
    if term_labels not in ("name", "id", "both"):
        raise ValueError(f"term_labels must be 'name', 'id' or 'both', got {term_labels!r}.")
    res = _differential_results(data, perturbations)
    groups = (
        [str(p) for p in perturbations]
        if perturbations is not None
        else list(dict.fromkeys(res["perturbation"]))
    )
    if not groups:
        raise ValueError("No perturbations in the results.")
    top = res[res["rank"] <= n_terms].sort_values(["rank"], kind="stable")
    ids = list(
        dict.fromkeys(t for g in groups for t in top.loc[top["perturbation"] == g, "term"].tolist())
    )
    names = dict(zip(res["term"], res["term_name"].fillna("")))
    labels = {
        "id": lambda t: t,
        "name": lambda t: _wrap(names.get(t) or t, label_width),
        "both": lambda t: _wrap(f"{names.get(t) or t} ({t})", label_width),
    }[term_labels]
    cells = res[res["term"].isin(ids)].set_index(["perturbation", "term"])
    xs, ys, colour, qval = [], [], [], []
    for i, g in enumerate(groups):
        for j, t in enumerate(ids):
            row = cells.loc[(g, t)]
            xs.append(i)
            ys.append(j)
            colour.append(float(row["std_effect"]))
            qval.append(float(row["fdr"]))
    colour, qval = np.asarray(colour), np.asarray(qval)
    logq = np.clip(-np.log10(np.clip(np.nan_to_num(qval, nan=1.0), 1e-300, 1.0)), 0, max_size)
    sizes = 15 + 235 * logq / max_size
    lim = float(np.nanmax(np.abs(colour))) if np.isfinite(colour).any() else 1.0
    n_lines = sum(labels(t).count("\n") + 1 for t in ids)
    width = 0.45 * len(groups) + 0.12 * label_width + 2.5
    ax = _axes(ax, (width, 0.22 * n_lines + 0.25 * len(ids) + 2))
    sig = np.nan_to_num(qval, nan=1.0) < fdr
    dots = ax.scatter(
        xs,
        ys,
        c=colour,
        s=sizes,
        cmap=cmap,
        vmin=-lim,
        vmax=lim,
        edgecolors="black",
        linewidths=np.where(sig, 0.7, 0.0),
    )
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(ids)))
    ax.set_yticklabels([labels(t) for t in ids], fontsize=9)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("perturbation")
    ax.set_title(f"Top {n_terms} pathways per perturbation vs control")
    label = "standardised effect\n(control SDs)"
    ax.figure.colorbar(dots, ax=ax, label=label, shrink=0.5, pad=0.02)
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            markerfacecolor="0.6",
            markeredgecolor="black",
            markeredgewidth=0.7 if q > -np.log10(fdr) else 0.0,
            markersize=np.sqrt(15 + 235 * q / max_size),
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
    _finish(ax.figure, save, show)
    return ax


# ------------------------------------------------------------- causal graph
def _layered_layout(graph: nx.DiGraph) -> dict:
    """Columns by longest-path depth (edges flow left to right); isolated factors in a row below.

    A factor's column is the length of the longest directed path ending at it, so
    every edge goes to a column further right; within a column, factors are ordered
    by the mean height of their parents. Factors without edges get a row of their own
    under the graph.
    """
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError("The graph has a cycle: use layout='spring' to draw it.")
    isolated = [v for v in graph if graph.degree(v) == 0]
    depth: dict = {}
    for v in nx.topological_sort(graph):
        if v in isolated:
            continue
        depth[v] = max((depth[u] + 1 for u in graph.predecessors(v)), default=0)
        graph.nodes[v]["layer"] = depth[v]
    pos: dict = {}
    for layer in range(max(depth.values(), default=-1) + 1):
        nodes = [v for v in depth if depth[v] == layer]
        bary = {
            v: np.mean([pos[u][1] for u in graph.predecessors(v)]) if layer else 0.0 for v in nodes
        }
        nodes.sort(key=lambda v: (-bary[v], str(v)))
        for i, v in enumerate(nodes):
            pos[v] = np.array([float(layer), (len(nodes) - 1) / 2 - i])
    bottom = min((p[1] for p in pos.values()), default=0.0) - (1.2 if pos else 0.0)
    for i, v in enumerate(isolated):
        graph.nodes[v]["layer"] = None
        pos[v] = np.array([float(i), bottom])
    return pos


def _edge_rad(pos: dict, u, v, clearance: float) -> float:
    """Curvature (matplotlib ``arc3`` rad) of the edge ``u -> v`` that passes no other node.

    Tries a straight line, then arcs bending more and more to either side; the
    path is the quadratic Bezier curve ``arc3`` draws (exact with equal axis scales).
    """
    p0, p2 = np.asarray(pos[u], float), np.asarray(pos[v], float)
    others = np.array([p for w, p in pos.items() if w not in (u, v)], dtype=float)
    if not len(others):
        return 0.0
    t = np.linspace(0.05, 0.95, 60)[:, None]
    d = p2 - p0
    for rad in (0.0, 0.2, -0.2, 0.35, -0.35, 0.5, -0.5, 0.7, -0.7, 0.9, -0.9):
        ctrl = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p2
        gap = np.linalg.norm(curve[:, None, :] - others[None, :, :], axis=2).min()
        if gap > clearance:
            return rad
    return 0.9


def _targets_table(graph: nx.DiGraph, width: int) -> str:
    """One line (wrapped at ``width``) per perturbed factor: ``z3: A, B, C``."""
    rows = []
    for v in graph:
        ts = graph.nodes[v]["targets"]
        if ts:
            rows.append(
                textwrap.fill(
                    ", ".join(ts), width=width, initial_indent=f"{v}: ", subsequent_indent="    "
                )
            )
    return "\n".join(rows)


def causal_graph(
    model: SENAVAE,
    threshold: float = 0.1,
    ax: Axes | None = None,
    label_targets: bool = True,
    temperature: float = 1000.0,
    layout: Literal["layered", "spring"] = "layered",
    hide_isolated: bool = False,
    targets_width: int = 40,
    node_size: float = 600,
    colors: tuple[str, str] = ("tab:red", "tab:blue"),
    seed: int = 0,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes:
    """The learned latent DAG, with the perturbation targets mapped to each factor.

    Edges come from :meth:`~scsena.SENAVAE.get_causal_graph` (``|weight| >=
    threshold``); their colour gives the sign, their width ``|weight|``. Factors that
    perturbations act on (:meth:`~scsena.SENAVAE.get_intervention_targets`) are
    highlighted; a table beside the graph lists every target acting on each factor.

    Parameters
    ----------
    model
        Trained model.
    threshold
        Minimum ``|weight|`` of an edge drawn.
    ax
        Axes to draw into.
    label_targets
        List the targets mapped to each factor beside the graph (all of them,
        wrapped).
    temperature
        Temperature of the perturbation -> factor assignment (reference 1000).
    layout
        ``"layered"``: factors in columns by DAG order (a factor's column is the
        length of the longest path ending at it, so edges flow left to right), edges
        bent around the factors they would cross, factors without edges in a row of
        their own below; ``"spring"``: force-directed.
    hide_isolated
        Leave out factors without edges and targets.
    targets_width
        Wrap each factor's line of the target table at this many characters.
    node_size
        Marker area of the factors.
    colors
        Colours of positive and negative edges.
    seed
        Seed of the spring layout.
    save, show
        Path to save the figure to, whether to show it.

    Returns
    -------
    The Axes; the graph itself is in ``ax.scsena_graph`` (a
    :class:`networkx.DiGraph` with ``weight`` on edges and ``targets`` on nodes) and
    the node positions in ``ax.scsena_pos``.
    """
    edges = model.get_causal_graph(threshold=threshold)
    targets = model.get_intervention_targets(temperature=temperature)
    by_factor: dict[str, list[str]] = {}
    for target, latent in targets["latent"].items():
        by_factor.setdefault(str(latent), []).append(str(target))
    graph = nx.DiGraph()
    for i in range(model.n_latent):
        name = f"z{i}"
        graph.add_node(name, targets=sorted(by_factor.get(name, [])))
    for src, dst, w in edges[["source", "target", "weight"]].itertuples(index=False):
        graph.add_edge(str(src), str(dst), weight=float(w))
    if hide_isolated:
        graph.remove_nodes_from(
            [v for v in list(graph) if graph.degree(v) == 0 and not graph.nodes[v]["targets"]]
        )
    if layout == "layered":
        pos = _layered_layout(graph) if len(graph) else {}
    elif layout == "spring":
        pos = nx.spring_layout(graph, seed=seed) if len(graph) else {}
    else:
        raise ValueError(f"layout must be 'layered' or 'spring', got {layout!r}.")
    if pos:
        xy = np.array(list(pos.values()))
        span_x, span_y = np.ptp(xy[:, 0]) + 1, np.ptp(xy[:, 1]) + 1
    else:
        span_x = span_y = 1.0
    scale = 0.9 if layout == "layered" else 4.0 / max(span_x, span_y)
    table = _targets_table(graph, targets_width) if label_targets else ""
    table_w = 0.075 * min(targets_width + 6, max((len(x) for x in table.split("\n")), default=0))
    ax = _axes(ax, (max(3.0, scale * span_x + 1) + table_w, max(3.0, scale * span_y + 1.2)))
    nodes = list(graph)
    has_t = [bool(graph.nodes[v]["targets"]) for v in nodes]
    nx.draw_networkx_nodes(
        graph,
        pos,
        nodelist=nodes,
        node_color=["#fdd49e" if h else "#d9d9d9" for h in has_t],
        edgecolors="black",
        linewidths=0.5,
        node_size=node_size,
        ax=ax,
    )
    edge_list = list(graph.edges(data="weight"))
    if edge_list:
        wmax = max(abs(w) for *_, w in edge_list)
        by_rad: dict[float, list] = {}
        for u, v, w in edge_list:
            rad = _edge_rad(pos, u, v, 0.3) if layout == "layered" else 0.1
            by_rad.setdefault(rad, []).append((u, v, w))
        for rad, group in by_rad.items():
            nx.draw_networkx_edges(
                graph,
                pos,
                edgelist=[(u, v) for u, v, _ in group],
                edge_color=[colors[0] if w > 0 else colors[1] for *_, w in group],
                width=[0.5 + 3.0 * abs(w) / wmax for *_, w in group],
                arrows=True,
                arrowstyle="-|>",
                arrowsize=12,
                node_size=node_size,
                connectionstyle=f"arc3,rad={rad}",
                ax=ax,
            )
    nx.draw_networkx_labels(graph, pos, labels={v: v for v in nodes}, font_size=8, ax=ax)
    if table:
        ax.text(
            1.02,
            1.0,
            "targets acting on each factor\n" + table,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            family="monospace",
            color="#7f2704",
        )
    ax.legend(
        handles=[
            Line2D([], [], color=colors[0], label="positive edge"),
            Line2D([], [], color=colors[1], label="negative edge"),
            Line2D([], [], marker="o", ls="", mfc="#fdd49e", mec="black", label="perturbed factor"),
        ],
        loc="lower left" if table else "upper left",
        bbox_to_anchor=(1.02, 0.0) if table else (1.0, 1.0),
        frameon=False,
        fontsize=8,
    )
    if layout == "layered":
        ax.set_aspect("equal", adjustable="datalim")
    ax.margins(x=0.12, y=0.15)
    ax.set_title(f"Latent DAG (|weight| >= {threshold:g})")
    ax.set_axis_off()
    ax.scsena_graph = graph
    ax.scsena_pos = pos
    _finish(ax.figure, save, show)
    return ax


# ------------------------------------------------------- predicted vs real
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
    import anndata as ad
    import scanpy as sc

    labels_in = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if not labels_in:
        raise ValueError("Give at least one perturbation to predict.")
    if basis not in ("umap", "pca"):
        raise ValueError(f"basis must be 'umap' or 'pca', got {basis!r}.")
    rna = _rna(model, adata)
    labels = _labels(model, rna)
    delim = model.delimiter_
    canon = np.array([_canonical(x, delim) if x != _CONTROL_LABEL else None for x in labels])
    rng = np.random.default_rng(seed)
    matrix = model.get_anndata_manager(rna, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
    groups = ([_CONTROL_LABEL] if include_control else []) + [s.strip() for s in labels_in]
    real_idx, real_lab = [], []
    for g in groups:
        want = None if g == _CONTROL_LABEL else _canonical(g, delim)
        cells = (
            np.flatnonzero(labels == _CONTROL_LABEL)
            if want is None
            else np.flatnonzero([c == want for c in canon])
        )
        if len(cells) > n_cells:
            cells = np.sort(rng.choice(cells, size=n_cells, replace=False))
        real_idx.append(cells)
        real_lab += [g] * len(cells)
    real_idx = np.concatenate(real_idx).astype(np.int64)
    real = ad.AnnData(
        X=_dense(matrix[real_idx]).astype(np.float32),
        obs=pd.DataFrame(
            {"perturbation": real_lab, "source": "real"},
            index=[f"real-{i}" for i in range(len(real_idx))],
        ),
        var=pd.DataFrame(index=rna.var_names.copy()),
    )
    pred = model.predict_perturbation(
        labels_in, n_cells=n_cells, adata=adata, temperature=temperature, seed=seed
    )
    pred_lab = np.repeat([s.strip() for s in labels_in], n_cells)
    pred = ad.AnnData(
        X=_dense(pred.X).astype(np.float32),
        obs=pd.DataFrame(
            {"perturbation": pred_lab, "source": "predicted"},
            index=[f"pred-{i}" for i in range(pred.n_obs)],
        ),
        var=pd.DataFrame(index=rna.var_names.copy()),
    )
    pooled = ad.concat([real, pred])
    pooled.obs["perturbation"] = pd.Categorical(pooled.obs["perturbation"], categories=groups)
    pooled.obs["source"] = pd.Categorical(pooled.obs["source"], categories=["real", "predicted"])
    n_comps = int(max(2, min(n_pcs, pooled.n_obs - 1, pooled.n_vars - 1)))
    sc.pp.pca(pooled, n_comps=n_comps, random_state=seed)
    if basis == "umap":
        sc.pp.neighbors(pooled, use_rep="X_pca", n_neighbors=15, random_state=seed)
        sc.tl.umap(pooled, random_state=seed)
        coords, axis_names = pooled.obsm["X_umap"], ("UMAP1", "UMAP2")
    else:
        coords, axis_names = pooled.obsm["X_pca"][:, :2], ("PC1", "PC2")
    if palette is None:
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        colours = {g: ("#9e9e9e" if g == _CONTROL_LABEL else None) for g in groups}
        others = [g for g in groups if g != _CONTROL_LABEL]
        colours.update({g: cycle[i % len(cycle)] for i, g in enumerate(others)})
    elif isinstance(palette, Mapping):
        colours = {g: palette[g] for g in groups}
    else:
        colours = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    ax = _axes(ax, (6, 5))
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
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("Predicted vs real cells")
    _finish(ax.figure, save, show)
    return (ax, pooled) if return_data else ax


# --------------------------------------------------------- training curves
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
    history = getattr(model, "history_", None)
    if not history:
        raise ValueError(
            "The model has no training history: train it with the default logger "
            "(not logger=False) to record the loss curves in model.history."
        )
    keys = [keys] if isinstance(keys, str) else list(keys)
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"No history for {missing}; recorded: {sorted(history)}.")
    ncols = ncols or min(len(keys), 4)
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=figsize or (3.2 * ncols, 2.8 * nrows), squeeze=False
    )
    best = getattr(model, "best_epoch_", None)
    for ax, key in zip(axes.ravel(), keys):
        df = history[key]
        ax.plot(df.index.to_numpy(), df.iloc[:, 0].to_numpy(dtype=float), label="train")
        val_key = key.replace("_train", "_validation")
        if val_key != key and val_key in history:
            v = history[val_key]
            ax.plot(v.index.to_numpy(), v.iloc[:, 0].to_numpy(dtype=float), label="validation")
        if mark_best_epoch and best is not None:
            ax.axvline(best, color="gray", ls="--", lw=0.8, label=f"best epoch ({best})")
        if len(ax.lines) > 1:
            ax.legend(frameon=False, fontsize=8)
        if log_y:
            ax.set_yscale("log")
        title, quantity = _curve_names(key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity + (" (log scale)" if log_y else ""))
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    _finish(fig, save, show)
    return fig
