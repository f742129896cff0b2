"""Differential activity: each perturbation against control, feature by feature.

Works on any ``cells x features`` matrix: a model's pathway activities, or a
model-free gene-set score of the same terms (so the two can be compared).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Columns of :func:`differential_test`'s result, in order.
DIFFERENTIAL_COLUMNS = (
    "perturbation",
    "rank",
    "term",
    "term_name",
    "n_genes",
    "effect",
    "std_effect",
    "statistic",
    "pvalue",
    "fdr",
    "mean_control",
    "mean_perturbed",
    "n_cells",
    "n_control",
)


def _fdr(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN p-values stay NaN and are not counted."""
    out = np.full(pvalues.shape, np.nan)
    ok = np.isfinite(pvalues)
    if ok.any():
        out[ok] = stats.false_discovery_control(pvalues[ok], method="bh")
    return out


def _one(
    cells: np.ndarray, control: np.ndarray, ctrl_mean: np.ndarray, ctrl_sd: np.ndarray
) -> dict[str, np.ndarray]:
    mean = cells.mean(axis=0)
    effect = mean - ctrl_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        std_effect = np.where(ctrl_sd > 0, effect / ctrl_sd, np.nan)
        if len(cells) > 1 and len(control) > 1:
            with warnings.catch_warnings():  # constant terms: NaN, said in the docstring
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_ind(cells, control, axis=0, equal_var=False)
            statistic, pvalue = np.asarray(test.statistic), np.asarray(test.pvalue)
        else:
            statistic = pvalue = np.full(len(mean), np.nan)
    return {
        "effect": effect,
        "std_effect": std_effect,
        "statistic": statistic,
        "pvalue": pvalue,
        "fdr": _fdr(pvalue),
        "mean_control": ctrl_mean,
        "mean_perturbed": mean,
    }


def differential_test(
    values: np.ndarray,
    labels: Sequence[str] | pd.Series,
    terms: Sequence[str],
    control_value: str = "",
    perturbations: Iterable[str] | None = None,
    term_names: Sequence[str] | None = None,
    n_genes: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Each perturbation against control, per term: effect, standardised effect, test, FDR.

    For perturbation ``p`` and term ``j`` with per-cell values ``a``:

    - ``effect``: ``mean(a | p) - mean(a | control)``;
    - ``std_effect``: ``effect / sd(a | control)`` (sample standard deviation), an
      effect size in units of the control cells' spread, comparable across terms
      whose activities have different scales (NaN when the control spread is 0);
      terms constant in both groups get NaN statistics and are ranked last;
    - ``statistic``, ``pvalue``: Welch's t-test of perturbed against control cells
      (:func:`scipy.stats.ttest_ind` with ``equal_var=False``);
    - ``fdr``: Benjamini-Hochberg adjusted p-values over the terms of ``p``
      (:func:`scipy.stats.false_discovery_control`).

    Rows are ordered by perturbation (in the order given, else sorted), then from the
    strongest to the weakest change: by ``|std_effect|`` descending (NaN last), ties
    by ``|statistic|``. ``rank`` is the 1-based position within the perturbation
    (exact ties share the better one).
    The standardised effect, rather than the t statistic or the p-value, orders the
    terms because it does not grow with the number of cells: a small shift of a term
    in a large group does not outrank a large shift in a small one.

    Parameters
    ----------
    values
        ``cells x terms`` matrix (pathway activities, or gene-set scores).
    labels
        Perturbation label of every cell.
    terms
        Term IDs (columns of ``values``).
    control_value
        Label of control cells.
    perturbations
        Perturbations to test (default: every label other than ``control_value``).
    term_names
        Names of the terms (default: empty).
    n_genes
        Size of every term, for the ``n_genes`` column (default: missing).

    Returns
    -------
    A tidy DataFrame with one row per perturbation and term and the columns
    ``perturbation``, ``rank``, ``term``, ``term_name``, ``n_genes``, ``effect``,
    ``std_effect``, ``statistic``, ``pvalue``, ``fdr``, ``mean_control``,
    ``mean_perturbed``, ``n_cells``, ``n_control``.
    """
    checked = _checked_inputs(values, labels, terms, term_names, n_genes)
    values, labels, terms, names, sizes = checked
    control, ctrl_mean, ctrl_sd = _control_cells(values, labels, control_value)
    if perturbations is None:
        perturbations = sorted(set(labels[labels != control_value].tolist()))
    perturbations = [str(p) for p in perturbations]
    frames = []
    for p in perturbations:
        cells = values[labels == p]
        if len(cells) == 0:
            raise ValueError(f"No cells with label {p!r}.")
        cols = _one(cells, control, ctrl_mean, ctrl_sd)
        frame = _ranked_frame(cols, terms, names, sizes)
        frame.insert(0, "perturbation", p)
        frame["n_cells"] = len(cells)
        frame["n_control"] = len(control)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(DIFFERENTIAL_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    if n_genes is None:
        out["n_genes"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out[list(DIFFERENTIAL_COLUMNS)]


def _checked_inputs(values, labels, terms, term_names, n_genes) -> tuple:
    """``values``, ``labels``, term IDs, names and sizes as arrays of matching lengths."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    terms = [str(t) for t in terms]
    if values.ndim != 2 or values.shape != (len(labels), len(terms)):
        raise ValueError(
            f"values has shape {values.shape}; expected ({len(labels)}, {len(terms)}) "
            "(cells x terms)."
        )
    names = [""] * len(terms) if term_names is None else [str(n) for n in term_names]
    sizes = np.full(len(terms), -1) if n_genes is None else np.asarray(n_genes, dtype=np.int64)
    if len(names) != len(terms) or len(sizes) != len(terms):
        raise ValueError("term_names and n_genes must have one entry per term.")
    return values, labels, terms, names, sizes


def _control_cells(
    values: np.ndarray, labels: np.ndarray, control_value: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The control cells' values, their mean and sample standard deviation per term."""
    control = values[labels == control_value]
    if len(control) == 0:
        raise ValueError(
            f"No control cells (label {control_value!r}): differential activity compares "
            "each perturbation with control cells."
        )
    n_terms = values.shape[1]
    ctrl_sd = control.std(axis=0, ddof=1) if len(control) > 1 else np.zeros(n_terms)
    return control, control.mean(axis=0), ctrl_sd


def _ranked_frame(
    cols: dict[str, np.ndarray], terms: list[str], names: list[str], sizes: np.ndarray
) -> pd.DataFrame:
    """One perturbation's columns, strongest change first, with ``rank`` and term columns.

    Ordered by ``|std_effect|`` descending (NaN last), ties by ``|statistic|``, then
    by term position. Exact ties (terms with identical values, such as terms with
    identical members) share the better ``rank``.
    """
    n = len(terms)
    strength = np.nan_to_num(np.abs(cols["std_effect"]), nan=-1.0)
    tie = np.nan_to_num(np.abs(cols["statistic"]), nan=-1.0)
    order = np.lexsort((np.arange(n), -tie, -strength))
    frame = pd.DataFrame({k: v[order] for k, v in cols.items()})
    # exact ties (terms with identical activities) share the better rank
    position = np.arange(1, n + 1)
    same = np.r_[False, (np.diff(strength[order]) == 0) & (np.diff(tie[order]) == 0)]
    rank = np.maximum.accumulate(np.where(same, 0, position))
    frame.insert(0, "rank", rank)
    frame.insert(1, "term", np.asarray(terms, dtype=object)[order])
    frame.insert(2, "term_name", np.asarray(names, dtype=object)[order])
    frame.insert(3, "n_genes", sizes[order])
    return frame


def rank_genes_groups_uns(results: pd.DataFrame, groupby: str, reference: str, method: str) -> dict:
    """:func:`differential_test` results as scanpy's ``uns["rank_genes_groups"]``.

    Every group lists all terms in the result's order (strongest change first):
    ``names`` the term IDs, ``scores`` the standardised effect, ``logfoldchanges``
    the difference of means (``effect``; activities are not log expression, so this is
    not a fold change), ``pvals`` and ``pvals_adj`` the Welch p-values and their
    Benjamini-Hochberg adjustment.
    """
    groups = list(dict.fromkeys(results["perturbation"].tolist()))
    if not groups:
        raise ValueError("No perturbations to rank.")
    by_group = {g: results[results["perturbation"] == g] for g in groups}

    def rec(column: str, dtype) -> np.recarray:
        data = [by_group[g][column].to_numpy() for g in groups]
        return np.rec.fromarrays(data, dtype=[(g, dtype) for g in groups])

    return {
        "params": {
            "groupby": groupby,
            "reference": reference,
            "method": method,
            "use_raw": False,
            "layer": None,
            "corr_method": "benjamini-hochberg",
        },
        "names": rec("term", "O"),
        "scores": rec("std_effect", "float32"),
        "logfoldchanges": rec("effect", "float32"),
        "pvals": rec("pvalue", "float64"),
        "pvals_adj": rec("fdr", "float64"),
    }
