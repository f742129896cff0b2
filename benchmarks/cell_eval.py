"""Unseen doubles scored by Arc Institute's cell-eval beside scsena's own evaluation.

The standard simulated screen (``simulate_perturbseq()`` defaults: 6,000 cells x 1,000
genes, 12 targets, 8 doubles), the default model and the published one
(``preset="reference"``), 50 epochs, batch 32, one seed per run; predictions and the
``control`` and ``additive`` baselines exported with
``scsena.evaluate.export_predictions`` and scored by ``cell-eval run`` (profile
``full``), and by ``scsena.evaluate.evaluate_model`` on the same fold.

Run: python benchmarks/cell_eval.py [--seeds 0 1 2] [--json benchmarks/results/cell_eval.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_json_option, machine_line, quiet, recording, write_json  # noqa: E402

import scsena  # noqa: E402
from scsena.evaluate import evaluate_model, export_predictions  # noqa: E402

TRAIN = dict(batch_size=32, enable_progress_bar=False, enable_model_summary=False, logger=False)
#: cell-eval's aggregate metrics shown (mean over perturbations).
CELL_EVAL = (
    "overlap_at_N",
    "precision_at_N",
    "de_nsig_counts_pred",
    "pearson_delta",
    "mse",
    "discrimination_score_l1",
    "pearson_edistance",
)
#: scsena's metrics shown (mean over perturbations).
SCSENA = ("mmd", "energy", "l2_top1000", "pearson_delta_de")


def cell_eval_means(pred: Path, real: Path, out: Path) -> dict[str, float]:
    cmd = ["cell-eval", "run", "-ap", str(pred), "-ar", str(real), "--control-pert", "control"]
    cmd += ["--pert-col", "target_gene", "-o", str(out), "--num-threads", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    agg = pd.read_csv(out / "agg_results.csv").set_index("statistic")
    return {k: float(agg.loc["mean", k]) for k in CELL_EVAL}


def one_run(adata, preset: str, seed: int, epochs: int, work: Path) -> dict:
    data = adata.copy()
    scsena.SENAVAE.setup_anndata(data, perturbation_key="guide_ids")
    model = scsena.SENAVAE(data, seed=seed, preset=preset)
    model.train(max_epochs=epochs, **TRAIN)
    files = export_predictions(model, work / preset, baselines=["control", "additive"], seed=seed)
    scores = {
        stem.removeprefix("pred_"): cell_eval_means(path, files["real"], work / f"{preset}-{stem}")
        for stem, path in files.items()
        if stem != "real"
    }
    res = evaluate_model(
        model,
        folds=("double",),
        n_de_genes=20,
        activation_test=False,
        readout_baselines=(),
        seed=seed,
    ).summary()
    res = res[res["metric"].isin(SCSENA)]
    for method, group in res.groupby("method"):
        key = preset if method == "scsena" else method
        scores.setdefault(key, {}).update(dict(zip(group["metric"], group["mean"])))
    scores[preset] = scores.pop("scsena") | scores.get(preset, {})
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(1)
    adata = scsena.datasets.simulate_perturbseq()
    results = {}
    with recording() as lines, tempfile.TemporaryDirectory() as tmp:
        print(machine_line())
        start = time.perf_counter()
        for seed in args.seeds:
            runs = {}
            for preset in ("scsena", "reference"):
                scores = one_run(adata, preset, seed, args.epochs, Path(tmp) / str(seed))
                for method, values in scores.items():
                    runs.setdefault(method, {}).update(values)
            results[str(seed)] = runs
            print(f"seed {seed}: {runs}")
        print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, __file__, results, lines)


if __name__ == "__main__":
    main()
