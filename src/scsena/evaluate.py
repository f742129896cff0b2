"""Evaluation protocol: the paper's folds, the field's metrics, and baselines.

For each fold (``train``, ``test``, ``double``) and each perturbation in it, the
real cells of that perturbation are compared with

- ``model`` (the given name): cells predicted by the model from randomly drawn
  control cells (as many as real cells, at most ``max_cells``);
- ``control`` baseline: the drawn control cells themselves (predict no change);
- ``mean`` baseline (a seen single target, the field's "mean baseline"): the drawn
  control cells shifted by the target's train-fold mean shift ``y_A - y_ctrl``;
- ``additive`` baseline (a double ``A,B``): the drawn control cells shifted by the
  sum of its singles' train-fold mean shifts, ``shift_A + shift_B``, so its mean is
  ``y_A + y_B - y_ctrl``.

Shifted cells are clipped at 0, the lower end of log-normalised expression (a shift
can take a gene below it). A baseline is reported only where it is defined: ``mean``
for singles with train-fold cells, ``additive`` for doubles whose two singles have
them; elsewhere it is left out and :attr:`EvaluationResult.meta` ``["notes"]`` says
why.

Metrics per perturbation: reference MMD, energy distance, spread of the generated
cells, MSE and Pearson of the change from control on all genes and on the top DE
genes, and the L2 distance of means over the most expressed genes
(:func:`scsena.metrics.perturbation_metrics`); the fold losses of the published
evaluation loop (``ref_mmd``, ``ref_mse``, ``ref_kl``: batches of 32 stacked in
chunks of 10, one value per fold) and their per-batch averages per perturbation
(``batch_mmd`` ...); the number of distinct latent factors the targets are assigned
to (and, on simulated data, the recovery of the true assignment); and the
activation-score test, of the model's activities and of two model-free scores of the
same gene sets (``mean``: the mean of member genes; ``ulm``: decoupler's univariate
linear model).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scsena._constants import FOLD_CONTROL, FOLD_DOUBLE, FOLD_TEST, FOLD_TRAIN
from scsena.data import CANONICAL_DELIMITER, display_labels, normalise_labels, split_label
from scsena.datasets import SIMULATION_UNS_KEY
from scsena.metrics import (
    additive_baseline,
    assignment_recovery,
    perturbation_metrics,
    top_de_genes,
)

BASELINES = ("control", "mean", "additive")
#: Model-free readouts given the activation-score test beside the model's activities.
READOUT_BASELINES = ("mean", "ulm")
#: Their ``method`` in the results.
READOUT_METHOD_NAMES = {"mean": "gene-set mean", "ulm": "gene-set ULM"}
FOLDS = (FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE)
#: ``perturbation`` of results that describe a whole fold or the whole model.
FOLD_WIDE = "(all)"


@dataclass
class EvaluationResult:
    """Tidy per-perturbation results and their summary.

    Attributes
    ----------
    results
        One row per (method, fold, perturbation, metric): columns ``method``,
        ``fold``, ``perturbation``, ``metric``, ``value``.
    meta
        The evaluation's settings (``seed``, ``temperature``) and ``notes``: why a
        requested baseline is missing for some perturbations.
    """

    results: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean, sd and count over perturbations per method, fold and metric."""
        g = self.results.groupby(["method", "fold", "metric"], sort=True)["value"]
        return g.agg(mean="mean", sd="std", n="count").reset_index()

    def table(self, metrics: Sequence[str] | None = None, fold: str = FOLD_DOUBLE) -> pd.DataFrame:
        """Methods x metrics table of means for one fold."""
        s = self.summary()
        s = s[s["fold"] == fold]
        if metrics is not None:
            s = s[s["metric"].isin(metrics)]
        return s.pivot(index="method", columns="metric", values="mean")

    def write(self, directory: str | Path) -> None:
        """Write ``metrics.tsv`` (tidy) and ``summary.tsv`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.results.to_csv(d / "metrics.tsv", sep="\t", index=False)
        self.summary().to_csv(d / "summary.tsv", sep="\t", index=False)


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def evaluate_model(
    model,
    adata=None,
    name: str = "scsena",
    folds: Sequence[str] = FOLDS,
    baselines: Sequence[str] = BASELINES,
    n_de_genes: int = 20,
    max_cells: int = 500,
    temperature: float = 1000.0,
    activation_test: bool = True,
    seed: int = 0,
    de_cache: dict | None = None,
    readout_baselines: Sequence[str] = READOUT_BASELINES,
) -> EvaluationResult:
    """Evaluate a trained :class:`~scsena.SENAVAE` and baselines on the same cells.

    Parameters
    ----------
    model
        Trained model.
    adata
        Registered AnnData with folds in ``obs["scsena_fold"]`` (default: the model's).
    name
        Method name of the model in the results.
    folds
        Folds to evaluate.
    baselines
        Baselines to add (``"control"``, ``"mean"``, ``"additive"``; see the module's
        description); empty for none. Each is added where it is defined.
    n_de_genes
        Number of top DE genes (vs control, scanpy ``rank_genes_groups``) for the
        ``*_de`` metrics, computed on the expression registered at setup (its
        ``layer``, else ``adata.X``), like every other metric.
    max_cells
        At most this many real and predicted cells per perturbation.
    temperature
        Inference temperature.
    activation_test
        Add recall@25, recall@100 and z-diff (fold ``train``: single perturbations),
        for the model and for each of ``readout_baselines``.
    seed
        Seed of the control draws and of the predictions.
    de_cache
        A dict reused across calls on the same data: DE genes depend on the data only,
        so evaluating several models computes them once.
    readout_baselines
        Model-free scores of the model's gene sets that get the activation-score test
        beside the model's activities (methods ``"mean"``, the mean of member genes,
        and ``"ulm"``, decoupler's univariate linear model): whether the model's
        pathway layer adds anything over them. ``"ulm"`` needs decoupler (``pip
        install 'scsena[eval]'``); without it that row is left out with a warning.

    Returns
    -------
    The results.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown}; known: {list(BASELINES)}.")
    data = _EvaluationData.from_model(model, adata)
    rng = np.random.default_rng(seed)
    rows, notes = [], {}
    for f in folds:
        for pert in sorted(set(data.labels[data.fold == f])):
            cells, start = _draw_cells(data, pert, f, max_cells, rng)
            de = _de_genes(data, pert, n_de_genes, de_cache) if n_de_genes else None
            # labels parse to the canonical "A,B"; the model and the results speak the
            # data's own delimiter ("A+B" in pertpy's files)
            shown = model.delimiter_.join(pert.split(CANONICAL_DELIMITER))
            prediction = model.predict_perturbation(
                shown, adata=data.adata, control_indices=start, temperature=temperature, seed=seed
            ).X
            baseline, missing = _baseline_predictions(data, pert, start, baselines)
            for base, why in missing.items():
                notes.setdefault(f"{base}: {why}", []).append(shown)
            preds = {name: prediction, **baseline}
            real = _dense(data.matrix[cells])
            for method, pred in preds.items():
                values = perturbation_metrics(
                    pred, real, data.control, de_genes=de, sigma=model.module.mmd_sigma
                )
                rows.extend((method, f, shown, k, float(v)) for k, v in values.items())
        rows.extend(_fold_loss_rows(model, data.adata, name, f, temperature, seed))
    rows.extend(_assignment_rows(model, data.adata, name, temperature))
    if activation_test:
        rows.extend(_activation_rows(model, data.adata, name))
        for readout in readout_baselines:
            shown = READOUT_METHOD_NAMES.get(readout, readout)
            rows.extend(_activation_rows(model, data.adata, shown, readout=readout))
    results = pd.DataFrame(rows, columns=["method", "fold", "perturbation", "metric", "value"])
    said = [f"{why} ({', '.join(sorted(set(perts)))})" for why, perts in notes.items()]
    return EvaluationResult(results, {"seed": seed, "temperature": temperature, "notes": said})


@dataclass
class _EvaluationData:
    """The registered expression, labels and folds, the control cells and train shifts."""

    adata: object
    matrix: object
    labels: np.ndarray
    fold: np.ndarray
    control_idx: np.ndarray
    control: np.ndarray
    train_means: dict[str, np.ndarray]
    de_labels: pd.Series

    @classmethod
    def from_model(cls, model, adata) -> _EvaluationData:
        """Read the data through the model's data splitter (``adata`` or the model's)."""
        splitter = model.data_splitter(adata)
        adata, matrix = splitter.adata, splitter.expression
        labels = splitter.perturbations.labels.to_numpy()
        fold = splitter.folds
        control_idx = np.flatnonzero(fold == FOLD_CONTROL)
        control = _dense(matrix[np.sort(control_idx)])
        train_means = _train_means(model.targets_, matrix, labels, fold)
        de_labels = pd.Series(np.where(fold == FOLD_CONTROL, "", labels), index=adata.obs_names)
        return cls(adata, matrix, labels, fold, control_idx, control, train_means, de_labels)


def _train_means(targets, matrix, labels, fold) -> dict[str, np.ndarray]:
    """Mean expression of each target's train-fold cells (targets with cells)."""
    means = {}
    for t in targets:
        cells = np.flatnonzero((labels == t) & (fold == FOLD_TRAIN))
        if len(cells):
            means[t] = _dense(matrix[cells]).mean(0)
    return means


def _draw_cells(
    data: _EvaluationData, pert: str, fold: str, max_cells: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The real cells of ``pert`` in ``fold`` (at most ``max_cells``) and as many controls."""
    cells = np.flatnonzero((data.labels == pert) & (data.fold == fold))
    if len(cells) > max_cells:
        cells = np.sort(rng.choice(cells, max_cells, replace=False))
    n = len(cells)
    start = rng.choice(data.control_idx, size=n, replace=n > len(data.control_idx))
    return cells, start


def _de_genes(data: _EvaluationData, pert: str, n: int, cache: dict | None) -> np.ndarray:
    """Top ``n`` DE genes of ``pert`` vs control, from ``cache`` when it holds them."""
    key = (pert, n)
    if cache is not None and key in cache:
        return cache[key]
    de = _top_de(data.adata, data.matrix, data.de_labels, pert, n)
    if cache is not None:
        cache[key] = de
    return de


def baseline_cells(
    model,
    perturbation: str,
    control_indices: Sequence[int],
    baselines: Sequence[str] = BASELINES,
    adata=None,
) -> dict[str, np.ndarray]:
    """The baselines' cells for one perturbation, started from chosen control cells.

    Parameters
    ----------
    model
        A :class:`~scsena.SENAVAE` (its data, folds and label conventions are used).
    perturbation
        A label in the data's convention (``"A"``, ``"A,B"``).
    control_indices
        Positions of the control cells to start from.
    baselines
        Any of ``"control"``, ``"mean"`` (singles), ``"additive"`` (doubles).
    adata
        Registered AnnData (default: the model's).

    Returns
    -------
    Baseline name -> ``(len(control_indices), n_genes)`` array, clipped at 0, for
    every requested baseline defined for ``perturbation``.

    Raises
    ------
    ValueError
        For an unknown baseline, or one not defined for ``perturbation`` (``mean``
        for a combination, ``additive`` for a single, or a target without train-fold
        cells), naming why.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown}; known: {list(BASELINES)}.")
    data = _EvaluationData.from_model(model, adata)
    pert = str(normalise_labels([perturbation], model.control_value_, model.delimiter_).iloc[0])
    preds, missing = _baseline_predictions(data, pert, np.asarray(control_indices), baselines)
    if missing:
        said = "; ".join(f"{b}: {why}" for b, why in missing.items())
        raise ValueError(f"Baseline(s) not defined for {perturbation!r}: {said}.")
    return preds


def _baseline_predictions(
    data: _EvaluationData, pert: str, start: np.ndarray, baselines: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The baselines defined for ``pert``, and why each other requested one is not.

    ``control``: the drawn control cells; ``mean`` (a single target) and ``additive``
    (a double): the drawn cells shifted by the train-fold mean shifts, clipped at 0.
    """
    start_cells = _dense(data.matrix[start])
    preds: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    if "control" in baselines:
        preds["control"] = start_cells
    parts = split_label(pert)
    wanted = {"mean": len(parts) == 1, "additive": len(parts) >= 2}
    for base, applies in wanted.items():
        if base not in baselines:
            continue
        if not applies:
            kind = "combinations" if base == "mean" else "single perturbations"
            missing[base] = f"not defined for {kind}"
            continue
        absent = [p for p in parts if p not in data.train_means]
        if absent:
            missing[base] = "a target without train-fold cells"
            continue
        control_mean = data.control.mean(0)
        mean = additive_baseline(data.train_means, control_mean, pert)
        shifted = start_cells + (mean - control_mean).astype(start_cells.dtype)
        preds[base] = np.maximum(shifted, 0, dtype=start_cells.dtype)
    return preds, missing


def _activation_rows(model, adata, name: str, readout: str = "model") -> list:
    """recall@25, recall@100 and z-diff of the activation-score test, per target."""
    if readout not in ("model", *READOUT_BASELINES):
        raise ValueError(f"Unknown readout baseline {readout!r}; known: {list(READOUT_BASELINES)}.")
    try:
        act = model.activation_test(adata, ks=(25, 100), readout=readout)
    except ImportError as err:  # ulm without decoupler: said, not silent
        warnings.warn(f"The {readout!r} readout baseline is left out: {err}", stacklevel=3)
        return []
    return [
        (name, FOLD_TRAIN, rec["perturbation"], k, float(rec[k]))
        for rec in act.to_dict("records")
        for k in ("recall@25", "recall@100", "z_diff")
    ]


def _fold_loss_rows(model, adata, name: str, fold: str, temperature: float, seed: int) -> list:
    """The fold losses under both protocols.

    ``batch_*``: per perturbation, averaged over its batches of 32; ``ref_*``: the
    published loop (chunks of 10 batches stacked, mean over chunks), one value for
    the whole fold (perturbation ``FOLD_WIDE``).
    """
    rows = []
    kw = {"adata": adata, "temperature": temperature, "seed": seed}
    for rec in model.get_fold_losses(fold, **kw).to_dict("records"):
        for k in ("mmd", "mse", "kl"):
            rows.append((name, fold, rec["perturbation"], f"batch_{k}", float(rec[k])))
    published = model.get_fold_losses(fold, protocol="published", **kw)
    if len(published):
        for k in ("mmd", "mse", "kl"):
            rows.append((name, fold, FOLD_WIDE, f"ref_{k}", float(published[k].mean())))
    return rows


def _assignment_rows(model, adata, name: str, temperature: float) -> list:
    """Distinct factors of the target assignment, and its recovery of a known truth."""
    targets = model.get_intervention_targets(temperature=temperature)
    rows = [(name, FOLD_TRAIN, FOLD_WIDE, "distinct_factors", float(targets["latent"].nunique()))]
    truth = adata.uns.get(SIMULATION_UNS_KEY, {}).get("target_factors")
    if truth is not None:
        score = assignment_recovery(targets["latent"], truth)
        rows.append((name, FOLD_TRAIN, FOLD_WIDE, "assignment_recovery", score["accuracy"]))
    return rows


def _top_de(adata, matrix, labels: pd.Series, group: str, n: int) -> np.ndarray:
    """Top DE genes of ``group`` vs control, from ``matrix`` (the registered expression)."""
    import anndata as ad

    keep = (labels == group) | (labels == "")
    view = ad.AnnData(
        X=matrix[np.flatnonzero(keep.to_numpy())],
        obs=pd.DataFrame({"g": labels[keep].to_numpy()}, index=adata.obs_names[keep.to_numpy()]),
    )
    view.var_names = adata.var_names
    return top_de_genes(view, "g", group, "", n_genes=n)


def combine(results: Sequence[EvaluationResult], seeds: Sequence[int]) -> EvaluationResult:
    """Stack results of several runs, with a ``seed`` column."""
    frames = []
    for r, s in zip(results, seeds):
        df = r.results.copy()
        df["seed"] = s
        frames.append(df)
    return EvaluationResult(pd.concat(frames, ignore_index=True), {"seeds": list(seeds)})


def seed_summary(result: EvaluationResult) -> pd.DataFrame:
    """Mean over perturbations per seed, then mean and sd over seeds."""
    df = result.results
    per_seed = df.groupby(["method", "fold", "metric", "seed"])["value"].mean().reset_index()
    g = per_seed.groupby(["method", "fold", "metric"])["value"]
    return g.agg(mean="mean", sd="std", n_seeds="count").reset_index()


# ------------------------------------------------------- files for cell-eval
def _cells(matrix, rows) -> np.ndarray:
    block = matrix[np.asarray(rows)]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)


def _frame(blocks, labels, pert_col: str, var_names, prefix: str) -> ad.AnnData:
    X = sp.csr_matrix(np.vstack(blocks)) if blocks else sp.csr_matrix((0, len(var_names)))
    obs = pd.DataFrame({pert_col: pd.Categorical(labels)})
    obs.index = [f"{prefix}-{i}" for i in range(len(obs))]
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(var_names).copy()))


def export_predictions(
    model,
    out_dir: str | Path,
    folds: Sequence[str] = (FOLD_DOUBLE,),
    baselines: Sequence[str] | None = None,
    adata: ad.AnnData | None = None,
    pert_col: str = "target_gene",
    control_label: str | None = None,
    max_cells: int = 300,
    n_control: int = 500,
    seed: int = 0,
) -> dict[str, Path]:
    """Write real and predicted cells in the layout of Arc Institute's ``cell-eval``.

    ``real.h5ad`` holds the real cells of every perturbation of ``folds`` (at most
    ``max_cells`` each) and ``n_control`` control cells; ``pred_<method>.h5ad``, one per
    method (``scsena`` and each baseline), holds as many predicted cells per
    perturbation, started from randomly drawn control cells, and the same control
    cells. Both carry the perturbation label in ``obs[pert_col]`` in the data's own
    convention; every predicted value is clipped at 0, the lower end of log-normalised
    expression (the default model's cells already are; the reference preset's decoded
    cells can fall below it). Run ``cell-eval run -ap pred_scsena.h5ad -ar real.h5ad --control-pert
    <control_label> --pert-col <pert_col>`` on each.

    Parameters
    ----------
    model
        A trained :class:`~scsena.SENAVAE`.
    out_dir
        Directory to write into (created when missing).
    folds
        Folds whose perturbations are exported: ``"double"`` (unseen doubles),
        ``"test"`` (held-out cells of seen singles), ``"train"``.
    baselines
        Baselines written beside the model (:data:`~scsena.evaluate.BASELINES`);
        default: ``control`` and the one defined for the folds (``additive`` for
        doubles, ``mean`` for singles). Every one must be defined for every exported
        perturbation.
    adata
        Registered AnnData (default: the model's).
    pert_col
        Column of ``obs`` with the labels (cell-eval's default: ``"target_gene"``).
    control_label
        Label of the control cells (cell-eval needs a non-empty one); default: the
        data's control value, ``"control"`` when that is ``""``.
    max_cells
        Real (and predicted) cells per perturbation at most.
    n_control
        Control cells in every file.
    seed
        Seed of the cell draws and of the model's sampling.

    Returns
    -------
    File name stem (``"real"``, ``"pred_scsena"``, ``"pred_additive"`` ...) -> path.

    Raises
    ------
    ValueError
        For an unknown fold or baseline, or a baseline not defined for some exported
        perturbation (``mean`` for doubles, ``additive`` for singles), naming them.
    """
    unknown = [f for f in folds if f not in (FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE)]
    if unknown or not len(folds):
        raise ValueError(f"`folds` must name folds among 'train', 'test', 'double'; got {folds}.")
    data = _EvaluationData.from_model(model, adata)
    perts = sorted({(p, f) for f in folds for p in set(data.labels[data.fold == f])})
    if not perts:
        raise ValueError(f"No perturbation has cells in the folds {list(folds)}.")
    has_double = any(f == FOLD_DOUBLE for _, f in perts)
    has_single = any(f != FOLD_DOUBLE for _, f in perts)
    if baselines is None:
        baselines = (
            ["control"] + (["additive"] if has_double else []) + (["mean"] if has_single else [])
        )
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise ValueError(f"Unknown baseline(s) {bad}; known: {list(BASELINES)}.")
    rng = np.random.default_rng(seed)
    control = rng.choice(data.control_idx, min(n_control, len(data.control_idx)), replace=False)
    methods = ["scsena", *baselines]
    blocks, labels = _export_blocks(model, data, perts, methods, max_cells, rng, seed)
    control_label = control_label or display_labels([""], model.control_value_, "+")[0]
    control_cells = _cells(data.matrix, control)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ["real", *methods]:
        stem = "real" if name == "real" else f"pred_{name}"
        frame = _frame(
            [*blocks[name], control_cells],
            labels + [control_label] * len(control),
            pert_col,
            data.adata.var_names,
            stem,
        )
        path = out_dir / f"{stem}.h5ad"
        frame.write_h5ad(path)
        written[stem] = path
    return written


def _export_blocks(model, data, perts, methods, max_cells: int, rng, seed: int):
    """Real, predicted and baseline cells of every perturbation, and their labels."""
    shown = dict(
        zip(
            [p for p, _ in perts],
            display_labels([p for p, _ in perts], model.control_value_, model.delimiter_),
        )
    )
    blocks: dict[str, list] = {m: [] for m in ["real", *methods]}
    labels: list[str] = []
    for pert, fold in perts:
        cells = np.flatnonzero((data.labels == pert) & (data.fold == fold))
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, max_cells, replace=False))
        start = rng.choice(data.control_idx, len(cells), replace=len(cells) > len(data.control_idx))
        blocks["real"].append(_cells(data.matrix, cells))
        pred = model.predict_perturbation(
            shown[pert], adata=data.adata, control_indices=start, seed=seed
        )
        # the valid range of log-normalised data, as the baselines (the reference
        # preset's decoded cells can fall below it; cell-eval refuses such values)
        blocks["scsena"].append(np.maximum(np.asarray(pred.X, dtype=np.float32), 0))
        base, missing = _baseline_predictions(data, pert, start, methods[1:])
        if missing:
            said = "; ".join(f"{b}: {why}" for b, why in missing.items())
            raise ValueError(
                f"Baseline(s) not defined for {shown[pert]!r} ({fold} fold): {said}. Leave "
                "them out of `baselines`, or export the folds separately."
            )
        for name, cells_ in base.items():
            blocks[name].append(np.asarray(cells_, dtype=np.float32))
        labels += [shown[pert]] * len(cells)
    return blocks, labels
