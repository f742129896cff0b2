"""Mean-expression metrics of one perturbation, as used by the field.

Inputs are ``cells x genes`` samples (dense arrays or :mod:`scipy.sparse` matrices)
or, where stated, 1-D mean-expression vectors (e.g. a baseline that predicts a mean
and no cell distribution). Every metric works on the per-gene mean over cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._distribution import energy_distance, mmd

__all__ = [
    "additive_baseline",
    "delta_metrics",
    "l2_top_expressed",
    "perturbation_metrics",
    "top_de_genes",
]


def _mean_profile(x, name: str = "x") -> np.ndarray:
    """Per-gene mean of a ``cells x genes`` sample, or a 1-D mean vector as is."""
    if sparse.issparse(x):
        if x.shape[0] == 0:
            raise ValueError(f"{name} has no cells.")
        return np.asarray(x.mean(axis=0), dtype=np.float64).ravel()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (a mean) or 2-D (cells x genes), got {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no cells.")
    return arr.mean(axis=0)


def _means(pred, real, control) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _mean_profile(pred, "pred")
    r = _mean_profile(real, "real")
    c = _mean_profile(control, "control")
    if not (len(p) == len(r) == len(c)):
        raise ValueError(
            f"pred, real and control have different numbers of genes "
            f"({len(p)}, {len(r)}, {len(c)})."
        )
    return p, r, c


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either vector is constant or shorter than 2."""
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0:
        return float("nan")
    return float(np.mean((a - b) ** 2))


def delta_metrics(pred, real, control, de_genes=None) -> dict[str, float]:
    """MSE and Pearson correlation of the predicted vs observed shift from control.

    ``delta = mean(cells) - mean(control cells)`` per gene, for the prediction and
    for the observed cells. (The MSE of the deltas equals the MSE of the means, since
    the control mean cancels; the Pearson correlation does not.)

    Parameters
    ----------
    pred
        Predicted cells (``cells x genes``) or a 1-D predicted mean.
    real
        Observed perturbed cells (``cells x genes``) or their 1-D mean.
    control
        Control cells (``cells x genes``) or their 1-D mean.
    de_genes
        Optional gene indices (integer positions or a boolean mask over genes), e.g.
        from :func:`top_de_genes`, on which the metrics are computed again.

    Returns
    -------
    ``{"mse_delta", "pearson_delta"}`` on all genes, plus ``"mse_delta_de"`` and
    ``"pearson_delta_de"`` when ``de_genes`` is given. A Pearson correlation is NaN
    (not an error) when either delta vector is constant; an MSE over an empty gene
    set is NaN.
    """
    p, r, c = _means(pred, real, control)
    dp, dr = p - c, r - c
    out = {"mse_delta": _mse(dp, dr), "pearson_delta": _pearson(dp, dr)}
    if de_genes is not None:
        idx = np.asarray(de_genes)
        if idx.dtype != bool:
            idx = idx.astype(np.intp)
        out["mse_delta_de"] = _mse(dp[idx], dr[idx])
        out["pearson_delta_de"] = _pearson(dp[idx], dr[idx])
    return out


def top_de_genes(
    adata: AnnData,
    groupby: str,
    group: str,
    reference: str,
    n_genes: int = 20,
    method: str = "t-test",
    layer: str | None = None,
) -> np.ndarray:
    """Indices of the top differentially expressed genes of one group vs a reference.

    Runs :func:`scanpy.tl.rank_genes_groups` (``group`` vs ``reference`` only) on a
    light-weight copy that holds just the cells of the two groups, so ``adata``
    (``.uns`` included) is left untouched. Genes are then ordered by the
    **absolute** value of scanpy's score (for ``"t-test"`` the t statistic), largest
    first, so strongly down-regulated genes count as much as up-regulated ones;
    genes with a NaN score (e.g. constant in both groups) come last. Ties keep the
    order of ``var_names``.

    Parameters
    ----------
    adata
        Annotated data, expression in ``.X`` (or ``layer``), log-normalised as scanpy
        expects (scanpy's warnings, e.g. about count data, are silenced).
        ``adata.uns["log1p"]``, when present, is passed on to scanpy.
    groupby
        Column of ``adata.obs`` with the group labels (e.g. the perturbation).
    group
        The group to test (e.g. ``"CBL,PTPN12"``).
    reference
        The reference group (e.g. the control label ``""``).
    n_genes
        Number of genes to return (all genes when larger than ``adata.n_vars``).
    method
        Test of :func:`scanpy.tl.rank_genes_groups` (``"t-test"``, ``"wilcoxon"``,
        ``"t-test_overestim_var"``, ``"logreg"``).
    layer
        Layer to use instead of ``.X``.

    Returns
    -------
    Integer positions into ``adata.var_names``, most differentially expressed first.
    """
    if groupby not in adata.obs:
        raise KeyError(f"{groupby!r} is not a column of adata.obs.")
    labels = adata.obs[groupby].astype(str).to_numpy()
    for g in (group, reference):
        if not np.any(labels == g):
            raise ValueError(f"No cells with {groupby} == {g!r}.")
    if group == reference:
        raise ValueError("group and reference must differ.")
    sub = _two_group_copy(adata, groupby, labels, group, reference, layer)
    scores = _rank_genes_quietly(sub, groupby, group, reference, method)
    by_gene = np.full(adata.n_vars, -np.inf)
    by_gene[scores.index.to_numpy()] = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-by_gene, kind="stable")
    return order[: min(int(n_genes), adata.n_vars)].astype(np.intp)


def _two_group_copy(
    adata: AnnData, groupby: str, labels: np.ndarray, group: str, reference: str, layer
) -> AnnData:
    """A light AnnData of the cells of ``group`` and ``reference`` only (float64).

    Genes are named by position, which keeps the mapping back robust to duplicated
    gene names; ``uns["log1p"]``'s base is passed on to scanpy.
    """
    keep = (labels == group) | (labels == reference)
    x = adata.layers[layer] if layer is not None else adata.X
    x = x[keep]
    sub = AnnData(
        X=x.astype(np.float64) if not sparse.issparse(x) else x.astype(np.float64).tocsr(),
        obs=pd.DataFrame(
            {groupby: pd.Categorical(labels[keep], categories=[group, reference])},
            index=np.arange(int(keep.sum())).astype(str),
        ),
        var=pd.DataFrame(index=np.arange(adata.n_vars).astype(str)),
    )
    log1p = adata.uns.get("log1p")
    if isinstance(log1p, Mapping):
        sub.uns["log1p"] = {"base": log1p.get("base")}
    return sub


def _rank_genes_quietly(
    sub: AnnData, groupby: str, group: str, reference: str, method: str
) -> pd.Series:
    """``|score|`` of every gene of ``sub`` (indexed by gene position), scanpy silenced."""
    import scanpy as sc

    key = "scsena_top_de"
    verbosity = sc.settings.verbosity
    try:
        # scanpy warns (through warnings and its logger) about e.g. count data;
        # the ranking is what is asked for here, so keep it quiet.
        sc.settings.verbosity = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.rank_genes_groups(
                sub,
                groupby,
                groups=[group],
                reference=reference,
                method=method,
                n_genes=sub.n_vars,
                use_raw=False,
                key_added=key,
            )
    finally:
        sc.settings.verbosity = verbosity
    res = sub.uns[key]
    names = np.asarray(res["names"][group]).astype(int)
    return pd.Series(np.abs(np.asarray(res["scores"][group], dtype=np.float64)), index=names)


def l2_top_expressed(pred, real, control, n_genes: int = 1000) -> float:
    """L2 distance between mean predicted and observed expression on top-expressed genes.

    The metric of Ahlmann-Eltze, Huber & Anders: ``||mean(pred)[g] - mean(real)[g]||_2``
    over the ``n_genes`` most highly expressed genes ``g``. Here "most highly
    expressed" means the highest mean expression in the **control** cells (ties in
    gene order), so the gene set is the same for every perturbation of a data set and
    does not depend on the prediction.

    Parameters
    ----------
    pred
        Predicted cells (``cells x genes``) or a 1-D predicted mean.
    real
        Observed perturbed cells (``cells x genes``) or their 1-D mean.
    control
        Control cells (``cells x genes``) or their 1-D mean; selects the genes.
    n_genes
        Number of genes (all genes when larger than the number of genes).

    Returns
    -------
    The Euclidean distance (not squared, not averaged).
    """
    p, r, c = _means(pred, real, control)
    genes = np.argsort(-c, kind="stable")[: int(n_genes)]
    return float(np.linalg.norm(p[genes] - r[genes]))


def additive_baseline(
    single_means: Mapping[str, np.ndarray],
    control_mean: np.ndarray,
    double: str,
    delimiter: str = ",",
) -> np.ndarray:
    """The additive baseline prediction of a combinatorial perturbation.

    ``y_AB = y_ctrl + (y_A - y_ctrl) + (y_B - y_ctrl) = y_A + y_B - y_ctrl`` on mean
    expression; for ``k`` targets the ``k`` single shifts are added to the control
    mean.

    Parameters
    ----------
    single_means
        Mean expression of every single perturbation, keyed by target.
    control_mean
        Mean expression of the control cells.
    double
        Label of the combination, e.g. ``"CBL,PTPN12"``.
    delimiter
        Separator of the targets in ``double``.

    Returns
    -------
    The predicted mean expression (1-D).
    """
    ctrl = np.asarray(control_mean, dtype=np.float64).ravel()
    targets = [t.strip() for t in double.split(delimiter) if t.strip()]
    if not targets:
        raise ValueError(f"No targets in {double!r}.")
    missing = [t for t in targets if t not in single_means]
    if missing:
        raise KeyError(f"No single-perturbation mean for {missing} (needed by {double!r}).")
    out = ctrl.copy()
    for t in targets:
        single = np.asarray(single_means[t], dtype=np.float64).ravel()
        if single.shape != ctrl.shape:
            raise ValueError(
                f"Mean of {t!r} has {single.size} genes; control mean has {ctrl.size}."
            )
        out += single - ctrl
    return out


def spread_ratio(pred, real) -> float:
    """Cell-to-cell spread of predicted cells relative to observed ones.

    ``sum_g var(pred_g) / sum_g var(real_g)`` over genes (variances across cells):
    1 when generated cells vary as much as real ones, below 1 when they are
    over-smoothed.

    Parameters
    ----------
    pred
        ``cells x genes`` predicted cells (dense or sparse).
    real
        ``cells x genes`` observed cells.

    Returns
    -------
    The ratio (NaN when the observed cells do not vary).
    """

    def total_var(x) -> float:
        x = x.toarray() if sparse.issparse(x) else np.asarray(x, dtype=np.float64)
        return float(np.var(x, axis=0).sum()) if x.shape[0] > 1 else float("nan")

    denom = total_var(real)
    return total_var(pred) / denom if denom > 0 else float("nan")


def perturbation_metrics(
    pred,
    real,
    control,
    de_genes=None,
    sigma: float = 200.0,
    include_distribution: bool = True,
) -> dict[str, float]:
    """Every metric of one perturbation in one dict.

    Parameters
    ----------
    pred
        Predicted cells (``cells x genes``), or a 1-D predicted mean (e.g. the
        additive baseline); with a mean, the distribution metrics are NaN.
    real
        Observed perturbed cells (``cells x genes``).
    control
        Control cells (``cells x genes``) or their 1-D mean.
    de_genes
        Optional DE gene indices for the ``*_de`` metrics (NaN when not given).
    sigma
        Kernel scale of :func:`scsena.metrics.mmd`.
    include_distribution
        Compute the distribution metrics (``mmd``, ``energy``; quadratic in the number
        of cells). When false they are NaN.

    Returns
    -------
    Keys ``mmd``, ``energy`` (:func:`mmd`, :func:`energy_distance`), ``spread_ratio``
    (:func:`spread_ratio`), ``mse_delta``, ``pearson_delta``, ``mse_delta_de``,
    ``pearson_delta_de`` (:func:`delta_metrics`) and ``l2_top1000``
    (:func:`l2_top_expressed` with 1,000 genes). Every key is always present, so a
    loop over perturbations gives a rectangular table.
    """
    nan = float("nan")
    out: dict[str, float] = {"mmd": nan, "energy": nan, "spread_ratio": nan}
    is_2d = all(sparse.issparse(x) or np.ndim(x) == 2 for x in (pred, real))
    if is_2d:
        out["spread_ratio"] = spread_ratio(pred, real)
    if include_distribution and is_2d:
        out["mmd"] = mmd(pred, real, sigma=sigma)
        out["energy"] = energy_distance(pred, real)
    p, r, c = _means(pred, real, control)
    delta = delta_metrics(p, r, c, de_genes=de_genes)
    out["mse_delta"] = delta["mse_delta"]
    out["pearson_delta"] = delta["pearson_delta"]
    out["mse_delta_de"] = delta.get("mse_delta_de", nan)
    out["pearson_delta_de"] = delta.get("pearson_delta_de", nan)
    out["l2_top1000"] = l2_top_expressed(p, r, c, n_genes=1000)
    return out
