"""Predictions and baselines written for the field's evaluators (Arc Institute's cell-eval).

Imported by :mod:`scsena.evaluate`; see :func:`scsena.evaluate.export_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scsena._constants import FOLD_DOUBLE, FOLD_TEST, FOLD_TRAIN
from scsena.data import display_labels


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
    from scsena.evaluate import BASELINES, _baseline_predictions, _EvaluationData

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
    shown = dict(
        zip(
            [p for p, _ in perts],
            display_labels([p for p, _ in perts], model.control_value_, model.delimiter_),
        )
    )
    control_label = control_label or display_labels([""], model.control_value_, "+")[0]
    methods = ["scsena", *baselines]
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
        base, missing = _baseline_predictions(data, pert, start, baselines)
        if missing:
            said = "; ".join(f"{b}: {why}" for b, why in missing.items())
            raise ValueError(
                f"Baseline(s) not defined for {shown[pert]!r} ({fold} fold): {said}. Leave "
                "them out of `baselines`, or export the folds separately."
            )
        for name, cells_ in base.items():
            blocks[name].append(np.asarray(cells_, dtype=np.float32))
        labels += [shown[pert]] * len(cells)
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
