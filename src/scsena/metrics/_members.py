"""Gene-level evidence behind a pathway call, and model-free gene-set scores.

A pathway readout is only as good as the genes behind it. For every perturbation and
term this module reports what the term's measured member genes did (their weighted
mean log-fold change, the share that went up, the genes that moved most), and scores
cells on the same terms without a model (the mean of member genes; decoupler's
univariate linear model), so a model's readout can be set beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

#: Columns :func:`members_lfc` returns, in order.
MEMBER_COLUMNS = (
    "perturbation",
    "term",
    "members_lfc",
    "members_up",
    "members_down",
    "driver_genes",
)
#: Methods of :func:`gene_set_scores`.
SCORE_METHODS = ("mean", "ulm")


def gene_set_matrix(
    gene_sets: Mapping[str, Sequence[str]] | pd.DataFrame,
    var_names: Sequence[str],
    missing: Literal["error", "drop"] = "error",
) -> tuple[list[str], sparse.csr_matrix]:
    """Terms and their ``(n_terms, n_genes)`` member weights over ``var_names``.

    Parameters
    ----------
    gene_sets
        Term -> member genes (each weighs ``1 / n``, the plain mean), or a ``terms x
        genes`` DataFrame of non-negative weights (0: not a member).
    var_names
        The data's genes.
    missing
        ``"error"`` (default): a member not among ``var_names`` is an error that names
        the term and the genes; ``"drop"``: members not measured are left out (and
        terms left with no member).

    Returns
    -------
    Term IDs and a CSR matrix whose rows sum to 1.
    """
    var = pd.Index([str(g) for g in var_names])
    if isinstance(gene_sets, pd.DataFrame):
        table = gene_sets.astype(np.float64)
        if (table.to_numpy() < 0).any() or not np.isfinite(table.to_numpy()).all():
            raise ValueError("Member weights must be finite and non-negative.")
        sets = {str(t): row[row > 0] for t, row in table.iterrows()}
    else:
        sets = {
            str(t): pd.Series(1.0, index=pd.Index([str(g) for g in genes]).unique())
            for t, genes in gene_sets.items()
        }
    terms, rows, cols, vals = [], [], [], []
    for term, weights in sets.items():
        pos = var.get_indexer(weights.index)
        if (pos < 0).any() and missing == "error":
            absent = weights.index[pos < 0].tolist()
            raise ValueError(
                f"Term {term!r}: member gene(s) {absent[:10]}"
                f"{' ...' if len(absent) > 10 else ''} ({len(absent)} of {len(pos)}) are not "
                "in the data's var_names. Pass gene sets restricted to the measured genes "
                "(e.g. the model's mask), data that has them, or missing='drop'."
            )
        keep = pos >= 0
        if not keep.any():
            continue
        w = weights.to_numpy()[keep]
        if w.sum() <= 0:
            continue
        rows.append(np.full(keep.sum(), len(terms)))
        cols.append(pos[keep])
        vals.append(w / w.sum())
        terms.append(term)
    if not terms:
        raise ValueError("No term has a member gene among the data's var_names.")
    mat = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(terms), len(var)),
    )
    return terms, mat


def member_evidence(
    mean_diff: np.ndarray,
    perturbations: Sequence[str],
    terms: Sequence[str],
    weights: sparse.spmatrix,
    gene_names: Sequence[str],
    n_drivers: int = 3,
    min_lfc: float = 0.1,
) -> pd.DataFrame:
    """What the members of each term did, per perturbation.

    Parameters
    ----------
    mean_diff
        ``perturbations x genes``: mean log expression of the perturbed cells minus
        that of the control cells (a log-fold change).
    perturbations
        Row labels of ``mean_diff``.
    terms
        Term IDs (rows of ``weights``).
    weights
        ``(n_terms, n_genes)`` weight of each member gene in each term (any sign;
        only members listed).
    gene_names
        Names shown in ``driver_genes``.
    n_drivers
        Number of driver genes listed per row.
    min_lfc
        A member *moves* when its log-fold change is at least this in size (smaller
        changes are counted neither up nor down; ``0``: every non-zero change counts).

    Returns
    -------
    One row per perturbation and term: ``members_lfc`` (the weighted mean log-fold
    change of the members, ``sum(w * lfc) / sum(abs(w))`` over them), ``members_up``
    and ``members_down`` (numbers of members that move up / down), ``driver_genes``
    (the members with the largest ``|w_g lfc_g|``, each with its own log-fold
    change).
    """
    if int(n_drivers) != n_drivers or n_drivers < 0:
        raise ValueError(f"n_drivers must be a whole number >= 0, got {n_drivers!r}.")
    if not min_lfc >= 0:
        raise ValueError(f"min_lfc must be >= 0, got {min_lfc!r}.")
    w = sparse.csr_matrix(weights, dtype=np.float64)
    w.eliminate_zeros()
    mean_diff = np.asarray(mean_diff, dtype=np.float64)
    abs_sum = np.asarray(abs(w).sum(axis=1)).ravel()
    row_of = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    names = np.asarray([str(g) for g in gene_names], dtype=object)
    frames = []
    for p, lfc in zip(perturbations, mean_diff):
        contrib = w.data * lfc[w.indices]
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.bincount(row_of, contrib, minlength=w.shape[0]) / abs_sum
        member_lfc = lfc[w.indices]
        up = np.bincount(row_of, (member_lfc > 0) & (member_lfc >= min_lfc), minlength=len(abs_sum))
        down = np.bincount(
            row_of, (member_lfc < 0) & (member_lfc <= -min_lfc), minlength=len(abs_sum)
        )
        frames.append(
            pd.DataFrame(
                {
                    "perturbation": str(p),
                    "term": list(terms),
                    "members_lfc": value,
                    "members_up": up.astype(np.int64),
                    "members_down": down.astype(np.int64),
                    "driver_genes": _drivers(w, row_of, contrib, lfc, names, n_drivers),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(MEMBER_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(MEMBER_COLUMNS)]


def consistent_sign(effect, members_lfc, tol: float = 1e-6) -> pd.Series:
    """Whether each effect has the sign of its members' log-fold change.

    Values within ``tol`` of 0 count as 0 (so two near-zero values agree); a missing
    ``members_lfc`` (a layer without member genes) gives a missing answer.

    Parameters
    ----------
    effect, members_lfc
        Columns of equal length (:meth:`~scsena.SENAVAE.differential_activity`).
    tol
        Values this close to 0 have no sign.

    Returns
    -------
    A nullable boolean Series (pandas ``"boolean"``), indexed as ``effect``.
    """
    effect = pd.Series(effect)
    members = pd.Series(members_lfc, index=effect.index)
    a = np.sign(np.where(np.abs(effect) <= tol, 0.0, effect))
    b = np.sign(np.where(np.abs(members) <= tol, 0.0, members))
    same = pd.Series(a == b, index=effect.index, dtype="boolean")
    same[members.isna().to_numpy()] = pd.NA
    return same


def _drivers(
    w: sparse.csr_matrix,
    row_of: np.ndarray,
    contrib: np.ndarray,
    lfc: np.ndarray,
    names: np.ndarray,
    n: int,
) -> list[str]:
    """``"GENE (lfc), ..."``: each row's members with the largest ``|contribution|``."""
    order = np.lexsort((-np.abs(contrib), row_of))  # rows in order, strongest first
    starts = w.indptr[:-1]
    out = []
    for row, start in enumerate(starts):
        take = order[start : min(start + n, w.indptr[row + 1])]
        genes = w.indices[take]
        out.append(", ".join(f"{names[g]} ({lfc[g]:+.2f})" for g in genes))
    return out


def group_mean_difference(
    X, labels: Sequence[str], perturbations: Sequence[str], control_value: str = ""
) -> np.ndarray:
    """``perturbations x genes``: each group's mean expression minus the control cells'."""
    labels = np.asarray(labels, dtype=object)
    control = labels == control_value
    if not control.any():
        raise ValueError(f"No control cells (label {control_value!r}).")

    def mean(rows: np.ndarray) -> np.ndarray:
        return np.asarray(X[rows].mean(axis=0), dtype=np.float64).ravel()

    base = mean(np.flatnonzero(control))
    out = np.zeros((len(perturbations), X.shape[1]))
    for i, p in enumerate(perturbations):
        rows = np.flatnonzero(labels == p)
        if rows.size == 0:
            raise ValueError(f"No cells with label {p!r}.")
        out[i] = mean(rows) - base
    return out


def _expression(adata: ad.AnnData, layer: str | None):
    X = adata.X if layer is None else adata.layers[layer]
    return sparse.csr_matrix(X) if sparse.issparse(X) else np.asarray(X)


def members_lfc(
    adata: ad.AnnData,
    gene_sets: Mapping[str, Sequence[str]] | pd.DataFrame,
    perturbation_key: str,
    control_value: str = "",
    perturbations: Sequence[str] | None = None,
    layer: str | None = None,
    gene_symbols: str | None = None,
    n_drivers: int = 3,
    min_lfc: float = 0.1,
    missing: Literal["error", "drop"] = "error",
) -> pd.DataFrame:
    """What each term's member genes did under each perturbation, without a model.

    Parameters
    ----------
    adata
        Log-normalised expression; ``obs[perturbation_key]`` labels the cells.
    gene_sets
        Term -> member genes (a plain mean), or a ``terms x genes`` DataFrame of
        non-negative member weights.
    perturbation_key
        Column of ``obs`` with each cell's perturbation label.
    control_value
        Label of the control cells.
    perturbations
        Labels to report (default: every other label).
    layer
        Layer with the expression (default ``X``).
    gene_symbols
        Column of ``var`` with the names shown in ``driver_genes`` (default:
        ``var_names``), as in scanpy.
    n_drivers
        Driver genes listed per row.
    min_lfc
        Smallest log-fold change in size that counts a member as moving up or down.
    missing
        ``"error"``: a member gene the data lacks is an error naming the term and the
        genes; ``"drop"``: leave unmeasured members out.

    Returns
    -------
    One row per perturbation and term: ``perturbation``, ``term``, ``members_lfc``
    (the weighted mean, over members, of the difference of mean log expression,
    perturbed minus control), ``members_up`` and ``members_down`` (members that moved
    up / down by at least ``min_lfc``), ``driver_genes`` (the members that moved most,
    with their own log-fold changes).
    """
    if perturbation_key not in adata.obs:
        raise ValueError(
            f"perturbation_key={perturbation_key!r} is not a column of adata.obs; "
            f"columns: {list(adata.obs.columns)[:10]}."
        )
    terms, weights = gene_set_matrix(gene_sets, adata.var_names, missing)
    labels = adata.obs[perturbation_key].astype(str).to_numpy(dtype=object)
    if perturbations is None:
        perturbations = sorted(set(labels[labels != control_value].tolist()))
    diff = group_mean_difference(_expression(adata, layer), labels, perturbations, control_value)
    names = adata.var_names if gene_symbols is None else adata.var[gene_symbols].astype(str)
    return member_evidence(diff, perturbations, terms, weights, names, n_drivers, min_lfc)


def gene_set_scores(
    adata: ad.AnnData,
    gene_sets: Mapping[str, Sequence[str]] | pd.DataFrame,
    method: Literal["mean", "ulm"] = "mean",
    layer: str | None = None,
    missing: Literal["error", "drop"] = "drop",
) -> pd.DataFrame:
    """Model-free per-cell scores of gene sets: the comparators of a pathway readout.

    Parameters
    ----------
    adata
        Log-normalised expression.
    gene_sets
        Term -> member genes, or a ``terms x genes`` DataFrame of member weights.
    method
        ``"mean"``: the (weighted) mean log expression of the measured members;
        ``"ulm"``: decoupler's univariate linear model (the t-value of a regression
        of each cell's expression on the term's membership; needs the ``eval`` extra,
        ``pip install 'scsena[eval]'``), run on every term with at least one measured
        member.
    layer
        Layer with the expression (default ``X``).
    missing
        As in :func:`gene_set_matrix` (default ``"drop"``: score the measured members).

    Returns
    -------
    ``cells x terms`` DataFrame (terms in the order of ``gene_sets``).
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {list(SCORE_METHODS)}, got {method!r}.")
    terms, weights = gene_set_matrix(gene_sets, adata.var_names, missing)
    X = _expression(adata, layer)
    if method == "mean":
        prod = weights @ X.T  # terms x cells
        scores = (prod.toarray() if sparse.issparse(prod) else np.asarray(prod)).T
        return pd.DataFrame(scores, index=adata.obs_names, columns=terms)
    return _ulm(X, adata.obs_names, adata.var_names, terms, weights)


def _ulm(X, obs_names, var_names, terms: list[str], weights: sparse.csr_matrix) -> pd.DataFrame:
    try:
        import decoupler as dc
    except ImportError as err:
        raise ImportError(
            "method='ulm' runs decoupler's univariate linear model: install it with "
            "pip install 'scsena[eval]' (or pip install decoupler)."
        ) from err
    coo = weights.tocoo()
    net = pd.DataFrame(
        {
            "source": np.asarray(terms, dtype=object)[coo.row],
            "target": np.asarray(var_names, dtype=object)[coo.col],
            "weight": 1.0,
        }
    )
    data = ad.AnnData(
        X=X.astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(obs_names).astype(str)),
        var=pd.DataFrame(index=pd.Index(var_names).astype(str)),
    )
    dc.mt.ulm(data, net, tmin=1, verbose=False)
    scores = data.obsm["score_ulm"]
    return scores.reindex(columns=terms).astype(np.float64)
