"""Pathway readouts on a knock-out screen: the model beside model-free scores, over seeds.

A simulated CRISPR knock-out screen with real screens' traps (the target's own gene
falls, half of the targets null, programs on part of their members with mixed signs,
twin GO terms, dominant genes; ``simulate_perturbseq(perturbation_type="knockout")``)
is trained with each preset over several seeds. Every model's
``differential_activity()`` and two model-free scores of the same terms (the mean of
member genes; decoupler's univariate linear model) are tested the same way
(``scsena.readouts.compare_readouts``) and scored against the simulator's truth
(``scsena.readouts.score_readouts``). Then the agreement over seeds
(``scsena.readouts.consensus_activity``), and a 300-gene targeted panel with the full
GO BP collection (``gene_sets="go_bp"``) end to end.

Run: python benchmarks/readouts.py [--seeds 0 1 2] [--epochs 40]
     [--json benchmarks/results/readouts.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_json_option, machine_line, quiet, recording, write_json  # noqa: E402

import scsena  # noqa: E402
from scsena import readouts  # noqa: E402

SIMULATION = dict(n_cells=6000, n_genes=1000, n_targets=12, n_doubles=8, seed=0)
PANEL = dict(n_cells=3000, n_genes=300, n_targets=8, n_doubles=4, seed=0)
TRAIN = dict(batch_size=32, enable_progress_bar=False, enable_model_summary=False, logger=False)
SCORES = ["sign_one_way", "top_k_recall", "top_k_direction", "program_sign", "truth_sign"]
SCORES += ["null_quiet", "identical_max_diff"]


def _trained(adata, preset: str, seed: int, epochs: int, gene_sets: str = "go_bp_sena"):
    data = adata.copy()
    scsena.SENAVAE.setup_anndata(data, perturbation_key="guide_ids", gene_sets=gene_sets)
    model = scsena.SENAVAE(data, seed=seed, preset=preset)
    model.train(max_epochs=epochs, **TRAIN)
    return model, data


def _scored(model, data, methods) -> pd.DataFrame:
    """Scores with moving members (|lfc| >= 0.1) and, as ``sign_all_members``, over all."""
    sets = model.gene_set_mask.gene_sets()
    table = readouts.compare_readouts(model, methods=methods)
    scores = readouts.score_readouts(table, data, sets)
    literal = readouts.compare_readouts(model, methods=methods, min_lfc=0.0)
    every = readouts.score_readouts(literal, data, sets)
    scores["sign_all_members"] = every["sign_one_way"].to_numpy()
    return scores


def run(seeds: list[int], epochs: int, presets: list[str]) -> tuple[pd.DataFrame, dict]:
    adata = scsena.datasets.simulate_perturbseq(**SIMULATION, perturbation_type="knockout")
    rows, models = [], {p: [] for p in presets}
    for preset in presets:
        for seed in seeds:
            t = time.perf_counter()
            model, data = _trained(adata, preset, seed, epochs)
            first = preset == presets[0] and seed == seeds[0]
            methods = ("model", "mean", "ulm") if first else ("model",)
            scores = _scored(model, data, methods)
            scores["method"] = scores["method"].replace({"model": f"scsena preset={preset!r}"})
            # (docs label these "model, default preset" and "model, preset='reference'")
            scores["seed"] = seed
            rows.append(scores)
            models[preset].append(model)
            print(f"{preset} seed {seed}: trained and scored in {time.perf_counter() - t:.0f} s")
    consensus = {}
    for preset, trained in models.items():
        table = readouts.consensus_activity(trained)
        sig = table[table["n_significant"] == len(trained)]
        consensus[preset] = {
            "significant_in_all": int(len(sig)),
            "same_direction_in_all": float((sig["agree_direction"] == len(trained)).mean()),
            "top5_calls": int((table["n_top_k"] > 0).sum()),
            "top5_in_all": float(
                (table["n_top_k"] == len(trained)).sum() / max(1, (table["n_top_k"] > 0).sum())
            ),
        }
    return pd.concat(rows, ignore_index=True), consensus


def panel(epochs: int) -> dict:
    """The knock-out simulator on a 300-gene panel, full GO BP, end to end (one seed)."""
    adata = scsena.datasets.simulate_perturbseq(**PANEL, perturbation_type="knockout")
    t = time.perf_counter()
    model, data = _trained(adata, "scsena", 0, epochs, gene_sets="go_bp")
    scores = _scored(model, data, ("model", "mean"))
    return {
        "n_terms": len(model.term_ids_),
        "seconds": time.perf_counter() - t,
        "scores": scores.drop(columns=["method"]).to_dict("records"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--presets", nargs="+", default=["scsena", "reference"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    with recording() as lines:
        print(machine_line())
        print(f"simulation: knockout, {SIMULATION}; epochs {args.epochs}, seeds {args.seeds}")
        start = time.perf_counter()
        scores, consensus = run(args.seeds, args.epochs, args.presets)
        summary = scores.groupby("method", sort=False)[[*SCORES, "sign_all_members"]]
        table = summary.agg(["mean", "min"]).round(3)
        pd.set_option("display.width", 250)
        print("scores against the truth (mean and min over seeds; model-free: one data set)")
        print(table.to_string())
        print("agreement over seeds:", consensus)
        result = panel(args.epochs)
        print(
            f"300-gene panel, gene_sets='go_bp': {result['n_terms']} terms, trained and "
            f"scored in {result['seconds']:.0f} s; scores {result['scores']}"
        )
        print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(
            args.json,
            __file__,
            {
                "scores": scores.to_dict("records"),
                "consensus": consensus,
                "panel": result,
                "settings": {"simulation": SIMULATION, "epochs": args.epochs},
            },
            lines,
        )


if __name__ == "__main__":
    main()
