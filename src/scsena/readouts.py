"""Pathway readouts: beside model-free scores, agreed over seeds, checked against truth.

- :func:`compare_readouts`: a model's :meth:`~scsena.SENAVAE.differential_activity`
  beside the same test on two model-free scores of the same terms (the mean of member
  genes; decoupler's univariate linear model), so every table shows whether the model
  adds anything over them.
- :func:`consensus_activity`: per perturbation and term, how many models (seeds)
  agree on the direction and on the top-k.
- :func:`score_readouts`: on a simulated screen, how often the readouts find the true
  program, with the true direction, and stay quiet on null targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from scsena.data import KIND_CONTROL
from scsena.datasets import SIMULATION_UNS_KEY
from scsena.metrics import (
    consistent_sign,
    differential_test,
    member_evidence,
)

#: Readout methods of :func:`compare_readouts`: the model and the model-free scores.
READOUT_METHODS = ("model", "mean", "ulm")


def compare_readouts(
    model,
    adata=None,
    methods: Sequence[str] = READOUT_METHODS,
    gene_symbols: str | None = None,
    min_lfc: float = 0.1,
) -> pd.DataFrame:
    """The model's differential activity beside model-free scores of the same terms.

    Every method is tested the same way (:func:`scsena.metrics.differential_test`:
    effect, standardised effect, Welch's test, FDR, rank by ``|std_effect|``) on the
    same cells and the model's terms, with the same gene-level evidence
    (``members_lfc`` weighted by each method's own member weights: the model's, or the
    plain mean for the model-free scores).

    Parameters
    ----------
    model
        A trained :class:`~scsena.SENAVAE`.
    adata
        Registered AnnData (default: the model's).
    methods
        Any of ``"model"`` (:meth:`~scsena.SENAVAE.differential_activity`), ``"mean"``
        (mean log expression of the measured members) and ``"ulm"`` (decoupler's
        univariate linear model; needs ``pip install 'scsena[eval]'``).
    gene_symbols
        Column of ``adata.var`` with the names shown in ``driver_genes``.
    min_lfc
        Smallest log-fold change in size that counts a member as moving.

    Returns
    -------
    The tables of :meth:`~scsena.SENAVAE.differential_activity` stacked, with a first
    column ``method``.
    """
    unknown = [m for m in methods if m not in READOUT_METHODS]
    if unknown:
        raise ValueError(f"Unknown readout method(s) {unknown}; known: {list(READOUT_METHODS)}.")
    splitter = model.data_splitter(adata)
    parsed = splitter.perturbations
    labels = parsed.labels.to_numpy(dtype=object)
    groups = sorted(set(labels[parsed.kind != KIND_CONTROL].tolist()), key=_label_order)
    frames = []
    for method in methods:
        if method == "model":
            table = model.differential_activity(
                adata, gene_symbols=gene_symbols, min_lfc=min_lfc
            )
        else:
            options = (gene_symbols, min_lfc)
            table = _model_free(model, adata, splitter, labels, groups, method, options)
        frames.append(table.assign(method=method))
    out = pd.concat(frames, ignore_index=True)
    return out[["method", *[c for c in out.columns if c != "method"]]]


def _label_order(label: str) -> tuple[int, str]:
    return label.count(","), label


def _model_free(model, adata, splitter, labels, groups, method: str, options) -> pd.DataFrame:
    """:func:`differential_test` of a model-free score, with plain-mean evidence."""
    sets = model.gene_set_mask.gene_sets()
    rna = splitter.adata
    keep = np.flatnonzero((labels == "") | np.isin(labels, groups))
    scores = model.gene_set_scores(adata, indices=keep, method=method)
    table = differential_test(
        scores.to_numpy(),
        labels[keep],
        model.term_ids_,
        control_value="",
        perturbations=groups,
        term_names=model.term_names_,
        n_genes=[len(sets[t]) for t in model.term_ids_],
    )
    mask = sparse.csr_matrix(model.gene_set_mask.membership, dtype=np.float64).T.tocsr()
    sizes = np.maximum(np.diff(mask.indptr), 1)
    weights = sparse.diags(1.0 / sizes) @ mask
    gene_symbols, min_lfc = options
    names = rna.var_names if gene_symbols is None else rna.var[gene_symbols].astype(str)
    means = splitter.group_means(keep, labels[keep], ["", *groups])
    diff = means[1:] - means[0]
    evidence = member_evidence(diff, groups, model.term_ids_, weights, names, 3, min_lfc)
    table = table.merge(evidence, on=["perturbation", "term"], how="left", sort=False)
    table["consistent"] = consistent_sign(table["effect"], table["members_lfc"])
    return table


# ------------------------------------------------------------------- consensus
def _check_models_alike(models: Sequence) -> None:
    """Refuse models with other genes, terms or targets than the first, naming the change."""
    first = models[0]
    for i, other in enumerate(models[1:], start=1):
        for what, a, b in (
            ("genes", first.gene_set_mask.var_names, other.gene_set_mask.var_names),
            ("terms", first.term_ids_, other.term_ids_),
            ("targets", first.targets_, other.targets_),
        ):
            a, b = [str(x) for x in a], [str(x) for x in b]
            if a != b:
                only_a = sorted(set(a) - set(b))[:5]
                only_b = sorted(set(b) - set(a))[:5]
                raise ValueError(
                    f"Model {i} has other {what} than model 0 ({len(b)} vs {len(a)}; only in "
                    f"model 0: {only_a}, only in model {i}: {only_b}"
                    f"{'; same ones in another order' if not only_a and not only_b else ''}). "
                    "A consensus compares models trained on the same data and gene sets."
                )


def _check_tables_alike(tables: Sequence[pd.DataFrame]) -> None:
    first = tables[0]
    for i, other in enumerate(tables[1:], start=1):
        for what in ("term", "perturbation"):
            a, b = set(first[what]), set(other[what])
            if a != b:
                raise ValueError(
                    f"Table {i} has other {what}s than table 0 (only in table 0: "
                    f"{sorted(a - b)[:5]}, only in table {i}: {sorted(b - a)[:5]}). A "
                    "consensus compares models trained on the same data and gene sets."
                )


def consensus_activity(
    results: Sequence,
    adata=None,
    top_k: int = 5,
    fdr: float = 0.05,
) -> pd.DataFrame:
    """How far models of several seeds agree on each pathway call.

    Parameters
    ----------
    results
        Trained :class:`~scsena.SENAVAE` models of the same data and gene sets (one
        per seed), or their :meth:`~scsena.SENAVAE.differential_activity` tables.
        Models with other genes, terms or targets (tables with other terms or
        perturbations) are refused, naming the difference.
    adata
        Registered AnnData the models are tested on (default: each model's own).
    top_k
        A call is in a seed's top-k when its ``rank`` is at most ``top_k``.
    fdr
        A call is significant in a seed when its ``fdr`` is below this.

    Returns
    -------
    One row per perturbation and term: ``perturbation``, ``term``, ``term_name``,
    ``n_seeds``, ``n_up`` and ``n_down`` (seeds whose effect is positive / negative),
    ``direction`` (``"up"``, ``"down"`` or ``"split"``: no majority),
    ``agree_direction`` (seeds on the majority side), ``n_top_k`` (seeds that rank
    the term in their top ``top_k``), ``n_significant``, ``median_rank``,
    ``mean_effect``, ``mean_std_effect``, ``members_lfc`` (mean over seeds). Ordered
    within each perturbation by ``n_top_k`` (descending), then ``median_rank``.
    """
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}.")
    if not 0 < fdr <= 1:
        raise ValueError(f"fdr must be in (0, 1], got {fdr!r}.")
    results = list(results)
    if len(results) < 2:
        raise ValueError(f"A consensus needs at least 2 models or tables, got {len(results)}.")
    if all(isinstance(r, pd.DataFrame) for r in results):
        tables = results
    elif any(isinstance(r, pd.DataFrame) for r in results):
        raise ValueError("Pass either models or differential_activity tables, not both.")
    else:
        _check_models_alike(results)
        tables = [m.differential_activity(adata) for m in results]
    _check_tables_alike(tables)
    both = pd.concat([t.assign(seed=i) for i, t in enumerate(tables)], ignore_index=True)
    both["up"] = both["effect"] > 0
    both["down"] = both["effect"] < 0
    both["top"] = both["rank"] <= top_k
    both["sig"] = both["fdr"] < fdr
    grouped = both.groupby(["perturbation", "term"], sort=False)
    out = grouped.agg(
        term_name=("term_name", "first"),
        n_seeds=("seed", "nunique"),
        n_up=("up", "sum"),
        n_down=("down", "sum"),
        n_top_k=("top", "sum"),
        n_significant=("sig", "sum"),
        median_rank=("rank", "median"),
        mean_effect=("effect", "mean"),
        mean_std_effect=("std_effect", "mean"),
        members_lfc=("members_lfc", "mean") if "members_lfc" in both else ("effect", "size"),
    ).reset_index()
    if "members_lfc" not in both:
        out["members_lfc"] = np.nan
    out["agree_direction"] = out[["n_up", "n_down"]].max(axis=1)
    out["direction"] = np.where(
        out["n_up"] > out["n_down"], "up", np.where(out["n_down"] > out["n_up"], "down", "split")
    )
    out = out.sort_values(
        ["perturbation", "n_top_k", "median_rank"], ascending=[True, False, True], kind="stable"
    ).reset_index(drop=True)
    columns = ["perturbation", "term", "term_name", "n_seeds", "n_up", "n_down", "direction"]
    columns += ["agree_direction", "n_top_k", "n_significant", "median_rank", "mean_effect"]
    columns += ["mean_std_effect", "members_lfc"]
    out.attrs.update(top_k=top_k, fdr=fdr)
    return out[columns]


# ------------------------------------------------------------------- truth
def _truth(adata) -> Mapping:
    truth = adata.uns.get(SIMULATION_UNS_KEY)
    if not isinstance(truth, Mapping) or "target_gene_effect" not in truth:
        raise ValueError(
            "score_readouts needs a simulated screen's ground truth in "
            f"adata.uns[{SIMULATION_UNS_KEY!r}] (scsena.datasets.simulate_perturbseq)."
        )
    return truth


def _program_terms(truth: Mapping, target: str) -> set[str]:
    terms = {str(t) for t in np.asarray(truth["target_terms"].get(target, []))}
    twins = truth.get("twin_terms", {})
    for term in list(terms):
        terms |= {str(t) for t in np.asarray(twins.get(term, []))}
    return terms


@dataclass(frozen=True)
class _Truth:
    """What :func:`score_readouts` reads of a simulated screen's ground truth."""

    targets: list[str]
    ensembl: dict[str, str]
    effect: dict[str, bool]
    programs: dict[str, set[str]]
    term_change: dict[str, np.ndarray]  # term -> true mean member change per target

    @classmethod
    def of(cls, adata, gene_sets: Mapping[str, Sequence[str]]) -> _Truth:
        truth = _truth(adata)
        targets = [str(t) for t in np.asarray(truth["targets"])]
        gene_effect = np.asarray(truth["target_gene_effect"], dtype=np.float64)
        var = pd.Index(adata.var_names)
        change = {}
        for term, genes in gene_sets.items():
            pos = var.get_indexer(list(genes))
            change[term] = gene_effect[:, pos[pos >= 0]].mean(axis=1)
        return cls(
            targets=targets,
            ensembl=dict(zip(targets, [str(e) for e in np.asarray(truth["target_ensembl"])])),
            effect=dict(zip(targets, np.asarray(truth["target_effect"], dtype=bool).tolist())),
            programs={t: _program_terms(truth, t) for t in targets},
            term_change=change,
        )


def score_readouts(
    table: pd.DataFrame,
    adata,
    gene_sets: Mapping[str, Sequence[str]],
    top_k: int = 5,
    fdr: float = 0.05,
    one_way: float = 0.75,
) -> pd.DataFrame:
    """Readouts scored against a simulated screen's ground truth, per method.

    The truth's direction of a term under a target is the sign of the mean, over the
    term's measured members, of the noise-free change of their log-rates
    (``uns["scsena_simulation"]["target_gene_effect"]``). A target's program terms are
    the GO terms of the factors it shifts, with their twins.

    Parameters
    ----------
    table
        :func:`compare_readouts`'s table (or one
        :meth:`~scsena.SENAVAE.differential_activity` table, scored as ``"model"``).
    adata
        The simulated screen (``simulate_perturbseq``), with its truth in ``uns``.
    gene_sets
        Term -> measured member genes (the model's mask).
    top_k, fdr
        Cut-offs of a top call and of a significant one.
    one_way
        Members "move one way" when at least this share of those that move
        (``members_up + members_down``, see ``min_lfc`` of
        :meth:`~scsena.SENAVAE.differential_activity`) share a sign.

    Returns
    -------
    One row per method: ``sign_one_way`` (of the significant rows whose members move
    one way, the share whose effect has the members' sign) and ``n_one_way``;
    ``top_k_recall`` (targets with an effect whose program term is in the top
    ``top_k``), ``top_k_direction`` (the same, with the truth's direction),
    ``program_sign`` (the best-ranked program term has the truth's direction),
    ``truth_sign`` (of the significant rows of single targets whose members' true
    mean change is at least 0.1 in size, the share with its sign), ``null_quiet``
    (null targets with no significant term other than those containing the
    knocked-out gene), ``identical_max_diff`` (largest effect difference between
    terms with identical members, over all perturbations).
    """
    truth = _Truth.of(adata, gene_sets)
    if "method" not in table:
        table = table.assign(method="model")
    rows = []
    for method, sub in table.groupby("method", sort=False):
        scores = {"method": method, **_sign_one_way(sub, fdr, one_way)}
        scores.update(_target_scores(sub, truth, gene_sets, top_k, fdr))
        scores["identical_max_diff"] = _identical_max_diff(sub, gene_sets)
        rows.append(scores)
    return pd.DataFrame(rows)


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _sign_one_way(sub: pd.DataFrame, fdr: float, one_way: float) -> dict:
    sig = sub[sub["fdr"] < fdr]
    up = sig["members_up"].to_numpy(dtype=np.float64)
    down = sig["members_down"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = up / (up + down)
    majority = np.where(share >= one_way, 1, np.where(share <= 1 - one_way, -1, 0))
    moving = majority != 0
    ok = np.sign(sig["effect"].to_numpy())[moving] == majority[moving]
    return {"sign_one_way": _mean(ok.tolist()), "n_one_way": int(moving.sum())}


def _target_scores(sub: pd.DataFrame, truth: _Truth, gene_sets, top_k: int, fdr: float) -> dict:
    got: dict[str, list] = {k: [] for k in ("recall", "direction", "program", "truth", "quiet")}
    for i, target in enumerate(truth.targets):
        rows = sub[sub["perturbation"] == target]
        if rows.empty:
            continue
        sig = rows[rows["fdr"] < fdr]
        for r in sig.itertuples():
            change = truth.term_change[r.term][i]
            if abs(change) >= 0.1:
                got["truth"].append(np.sign(r.effect) == np.sign(change))
        if not truth.effect[target]:
            own = truth.ensembl[target]
            got["quiet"].append(all(own in gene_sets[t] for t in sig["term"]))
            continue
        prog = rows[rows["term"].isin(truth.programs[target])]
        top = prog[prog["rank"] <= top_k]
        change = truth.term_change
        right = [np.sign(r.effect) == np.sign(change[r.term][i]) for r in prog.itertuples()]
        got["recall"].append(not top.empty)
        got["direction"].append(any(ok for ok, rank in zip(right, prog["rank"]) if rank <= top_k))
        if right:
            got["program"].append(right[0])  # the best-ranked program term
    return {
        "top_k_recall": _mean(got["recall"]),
        "top_k_direction": _mean(got["direction"]),
        "program_sign": _mean(got["program"]),
        "truth_sign": _mean(got["truth"]),
        "null_quiet": _mean(got["quiet"]),
    }


def _identical_max_diff(sub: pd.DataFrame, gene_sets: Mapping[str, Sequence[str]]) -> float:
    """Largest ``|effect|`` difference between terms with identical member sets."""
    key = {t: tuple(sorted(g)) for t, g in gene_sets.items()}
    frame = sub.assign(members=sub["term"].map(key))
    spread = frame.groupby(["perturbation", "members"])["effect"].agg(lambda e: e.max() - e.min())
    return float(spread.max()) if len(spread) else 0.0
