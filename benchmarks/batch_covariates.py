"""Batch covariates: does registering the batch improve predictions within each batch?

A simulated screen with several batches (gene-wise batch effects on the expression
mean) is trained with the default model twice per seed: without ``batch_key``, and with
``batch_key="batch"`` (decoder conditioned on the batch, control partners from the
cell's own batch). For every unseen double perturbation and every batch, the predicted
mean expression, started from that batch's control cells, is compared with the real
cells of that double in that batch (L2 distance of the mean over genes; lower is better),
beside the control baseline (the batch's control mean) and the additive baseline
(control + both singles' shifts, measured in the same batch).

Run: python benchmarks/batch_covariates.py [--seeds 0 1 2] [--epochs 40]
     [--json benchmarks/results/batch_covariates.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_json_option, machine_line, quiet, recording, write_json  # noqa: E402

import scsena  # noqa: E402

SIMULATION = dict(n_cells=4000, n_genes=500, n_targets=8, n_doubles=4, n_batches=3)
TRAIN = dict(batch_size=32, enable_progress_bar=False, enable_model_summary=False)


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _means(adata, label: str, batch: str) -> np.ndarray:
    cells = (adata.obs["guide_ids"] == label) & (adata.obs["batch"] == batch)
    return _dense(adata[cells.to_numpy()].X).mean(axis=0)


def _train(adata, batch_key: str | None, seed: int, epochs: int):
    data = adata.copy()
    scsena.SENAVAE.setup_anndata(data, perturbation_key="guide_ids", batch_key=batch_key)
    model = scsena.SENAVAE(data, seed=seed)
    model.train(max_epochs=epochs, **TRAIN)
    return model, data


def _predicted_mean(model, data, label: str, batch: str, with_batch: bool, seed: int):
    if with_batch:
        pred = model.predict_perturbation(label, n_cells=300, batch=batch, seed=seed)
    else:  # no batch registered: start from that batch's control cells
        start = np.flatnonzero(
            ((data.obs["guide_ids"] == "") & (data.obs["batch"] == batch)).to_numpy()
        )
        pred = model.predict_perturbation(label, control_indices=start, seed=seed)
    return np.asarray(pred.X).mean(axis=0)


def run_seed(seed: int, batch_effect: float, epochs: int) -> list[dict]:
    """Distances of every method for every (double, batch) of one simulated screen."""
    adata = scsena.datasets.simulate_perturbseq(**SIMULATION, batch_effect=batch_effect, seed=seed)
    doubles = sorted({g for g in adata.obs["guide_ids"].unique() if "," in g})
    batches = list(adata.obs["batch"].cat.categories)
    models = {
        "scsena, no batch_key": (*_train(adata, None, seed, epochs), False),
        "scsena, batch_key": (*_train(adata, "batch", seed, epochs), True),
    }
    rows = []
    for label in doubles:
        a, b = label.split(",")
        for batch in batches:
            truth, control = _means(adata, label, batch), _means(adata, "", batch)
            additive = _means(adata, a, batch) + _means(adata, b, batch) - control
            estimates = {"control baseline": control, "additive baseline": additive}
            for name, (model, data, with_batch) in models.items():
                estimates[name] = _predicted_mean(model, data, label, batch, with_batch, seed)
            for name, est in estimates.items():
                rows.append(
                    {
                        "seed": seed,
                        "batch_effect": batch_effect,
                        "method": name,
                        "double": label,
                        "batch": batch,
                        "l2_mean": float(np.linalg.norm(est - truth)),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-effects", type=float, nargs="+", default=[0.0, 0.5])
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    with recording() as lines:
        print(machine_line())
        print(f"simulation: {SIMULATION}, epochs {args.epochs}, seeds {args.seeds}")
        start = time.perf_counter()
        rows = [
            row
            for effect in args.batch_effects
            for seed in args.seeds
            for row in run_seed(seed, effect, args.epochs)
        ]
        df = pd.DataFrame(rows)
        per_seed = df.groupby(["batch_effect", "method", "seed"])["l2_mean"].mean()
        table = per_seed.groupby(["batch_effect", "method"]).agg(["mean", "std"]).round(3)
        print("L2 distance of the predicted mean to the real mean, unseen doubles, per batch")
        print("(mean over doubles and batches; mean and sd over seeds; lower is better)")
        print(table.to_string())
        wide = per_seed.unstack("method")
        paired = wide["scsena, batch_key"] - wide["scsena, no batch_key"]
        print("batch_key minus no batch_key, per seed (negative: batch_key is better)")
        print(paired.round(3).unstack("seed").to_string())
        print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        results = {
            f"{effect}|{method}": {"mean": float(r["mean"]), "std": float(r["std"])}
            for (effect, method), r in table.iterrows()
        }
        differences = {f"{e}|{seed}": float(v) for (e, seed), v in paired.items()}
        write_json(
            args.json,
            __file__,
            {"l2_mean": results, "batch_key_minus_none": differences, "settings": SIMULATION},
            lines,
        )


if __name__ == "__main__":
    main()
