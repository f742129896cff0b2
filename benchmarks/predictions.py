"""Predictions against the field's baselines, perturbation by perturbation.

Three simulated screens, the default model over several seeds, scored with
``scsena.evaluate.evaluate_model`` (energy distance, L2 of means over the 1,000 most
expressed genes, MMD; up to 300 cells per perturbation):

Each trained model is also scored without its calibration (``network alone``) and, on
the knock-out screen, recalibrated with shrinkage 0 and 4 (the default is 1).

- ``knockout``: the knock-out screen with real screens' traps
  (``simulate_perturbseq(n_cells=6000, n_genes=1000, n_targets=12, n_doubles=8,
  perturbation_type="knockout")``), every target's cells held out at 20%
  (``heldout="all"``), at 40 and 100 epochs: per seen target, the model against the
  ``mean`` baseline (targets with an effect) and against ``control`` (null targets);
- ``low data``: ``simulate_perturbseq(n_cells=3000, n_genes=1000, n_targets=24,
  n_doubles=16, seed=3)`` (about 60 cells per perturbation), 40 epochs: per unseen
  double, the model against ``control``;
- ``saturating``: a saturating gene response (``saturation=1.0, effect_size=3.0,
  interaction_strength=0``): doubles are less than the sum of their singles in a way
  single perturbations reveal; the model against ``additive`` on unseen doubles.

Run: python benchmarks/predictions.py [--seeds 0 1 2] [--json benchmarks/results/predictions.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_json_option, machine_line, quiet, recording, write_json  # noqa: E402

import scsena  # noqa: E402
from scsena.evaluate import evaluate_model  # noqa: E402
from scsena.metrics import energy_distance  # noqa: E402

KNOCKOUT = dict(n_cells=6000, n_genes=1000, n_targets=12, n_doubles=8, seed=0)
LOW_DATA = dict(n_cells=3000, n_genes=1000, n_targets=24, n_doubles=16, seed=3)
SATURATING = dict(
    n_cells=6000,
    n_genes=1000,
    n_targets=12,
    n_doubles=8,
    seed=0,
    saturation=1.0,
    effect_size=3.0,
    interaction_strength=0.0,
)
TRAIN = dict(batch_size=32, enable_progress_bar=False, enable_model_summary=False, logger=False)
METRICS = ("energy", "l2_top1000", "mmd")


#: The default model as trained (calibrated, shrinkage 1), and variants of the same
#: trained network: no calibration, and calibrations with other shrinkage strengths.
VARIANTS = {"default": 1.0, "network alone": None, "shrinkage 0": 0.0, "shrinkage 4": 4.0}


def _scores(
    adata, seed: int, epochs: int, folds, heldout="auto", variants=("default",), keep=False
):
    """Per variant: method x perturbation x metric of the default model trained on ``adata``
    (and the model, with ``keep``)."""
    data = adata.copy()
    scsena.SENAVAE.setup_anndata(data, perturbation_key="guide_ids")
    model = scsena.SENAVAE(data, seed=seed, heldout=heldout)
    model.train(max_epochs=epochs, **TRAIN)
    out = {}
    for name in variants:
        shrinkage = VARIANTS[name]
        if shrinkage is None:
            model.shift_calibration_ = None
        else:
            model.calibrate_predictions(shrinkage=shrinkage)
        res = evaluate_model(
            model, folds=folds, n_de_genes=0, activation_test=False, readout_baselines=(), seed=seed
        ).results
        res = res[res["metric"].isin(METRICS) & (res["perturbation"] != "(all)")]
        out[name] = res.pivot_table(
            index=["perturbation", "metric"], columns="method", values="value"
        )
    return (out, model) if keep else out


def knockout(seed: int, epochs: int) -> dict:
    adata = scsena.datasets.simulate_perturbseq(**KNOCKOUT, perturbation_type="knockout")
    truth = adata.uns["scsena_simulation"]
    effect = dict(zip(truth["targets"], truth["target_effect"]))
    tables = _scores(adata, seed, epochs, ("test",), heldout="all", variants=tuple(VARIANTS))
    out = {name: _knockout_counts(table, effect) for name, table in tables.items()}
    return out["default"] | {"variants": out}


def _knockout_counts(table, effect) -> dict:
    out = {}
    for metric in ("energy", "l2_top1000"):
        t = table.xs(metric, level="metric")
        hit = np.asarray([bool(effect[p]) for p in t.index])
        ratio_mean = (t["scsena"] / t["mean"])[hit]
        ratio_control = (t["scsena"] / t["control"])[~hit]
        out[metric] = {
            "effect_within_5pct_of_mean": int((ratio_mean <= 1.05).sum()),
            "n_effect": int(hit.sum()),
            "effect_ratio_to_mean": [round(float(v), 3) for v in ratio_mean],
            "null_within_5pct_of_control": int((ratio_control <= 1.05).sum()),
            "n_null": int((~hit).sum()),
            "null_ratio_to_control": [round(float(v), 3) for v in ratio_control],
        }
    return out


def doubles_against(adata, seed: int, epochs: int, baseline: str) -> dict:
    tables, model = _scores(
        adata, seed, epochs, ("double",), variants=("default", "network alone"), keep=True
    )
    out = _doubles_counts(tables["default"], baseline)
    out["network alone"] = _doubles_counts(tables["network alone"], baseline)
    out["shrunk_additive"] = shrunk_additive(model, seed)
    return out


def shrunk_additive(model, seed: int, n_cells: int = 300) -> dict:
    """Unseen doubles: the default model against the additive baseline of the shrunk
    single shifts the calibration uses (``control + c_a + c_b``, no network), and the
    plain additive one, from the same control cells (energy, L2 of means)."""
    model.calibrate_predictions()
    adata = model.adata
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    labels = adata.obs["guide_ids"].astype(str).to_numpy()
    folds = adata.obs["scsena_fold"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    start = rng.choice(np.flatnonzero(folds == "control"), n_cells, replace=False)
    shift = model.shift_calibration_["shift"]
    targets = list(model.targets_)
    train = folds == "train"
    control_mean = X[folds == "control"].mean(axis=0)
    rows = []
    for double in sorted(set(labels[folds == "double"])):
        a, b = (targets.index(t) for t in double.split(","))
        real = X[labels == double][:n_cells]
        raw = [X[train & (labels == targets[j])].mean(axis=0) - control_mean for j in (a, b)]
        cells = {
            "model": np.asarray(model.predict_perturbation(double, control_indices=start).X),
            "shrunk additive": np.maximum(X[start] + shift[a] + shift[b], 0),
            "additive": np.maximum(X[start] + raw[0] + raw[1], 0),
        }
        for name, pred in cells.items():
            rows.append(
                (
                    double,
                    name,
                    energy_distance(pred, real),
                    float(np.linalg.norm(pred.mean(axis=0) - real.mean(axis=0))),
                )
            )
    frame = pd.DataFrame(rows, columns=["double", "method", "energy", "l2"])
    wide = frame.pivot(index="double", columns="method")
    out = {
        m: {"energy": float(wide["energy"][m].mean()), "l2": float(wide["l2"][m].mean())}
        for m in ("model", "shrunk additive", "additive")
    }
    for metric in ("energy", "l2"):
        out[f"model_better_than_shrunk_{metric}"] = int(
            (wide[metric]["model"] < wide[metric]["shrunk additive"]).sum()
        )
    out["n"] = len(wide)
    return out


def _doubles_counts(table, baseline: str) -> dict:
    out = {}
    for metric in METRICS:
        t = table.xs(metric, level="metric")
        out[metric] = {
            "model_better": int((t["scsena"] < t[baseline]).sum()),
            "n": len(t),
            "model": float(t["scsena"].mean()),
            baseline: float(t[baseline].mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    results: dict = {"knockout_40": {}, "knockout_100": {}, "low_data": {}, "saturating": {}}
    with recording() as lines:
        print(machine_line())
        start = time.perf_counter()
        low = scsena.datasets.simulate_perturbseq(**LOW_DATA)
        sat = scsena.datasets.simulate_perturbseq(**SATURATING)
        for seed in args.seeds:
            for epochs in (40, 100):
                res = knockout(seed, epochs)
                results[f"knockout_{epochs}"][seed] = res
                print(f"knockout, heldout='all', {epochs} epochs, seed {seed}: {res}")
            results["low_data"][seed] = doubles_against(low, seed, 40, "control")
            print(f"low data, seed {seed}: {results['low_data'][seed]}")
            results["saturating"][seed] = doubles_against(sat, seed, 40, "additive")
            print(f"saturating, seed {seed}: {results['saturating'][seed]}")
        print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(
            args.json,
            __file__,
            {k: {str(s): v for s, v in r.items()} for k, r in results.items()},
            lines,
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
