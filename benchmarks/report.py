"""Evaluation report: SENA, the original encoder, SENA at several lambda, and baselines.

Trains each configuration over several seeds on the same data and folds, evaluates
every run and the baselines (control, additive) with :func:`scsena.evaluate.evaluate_model`,
and writes a markdown table (mean +- sd over seeds) plus the tidy results.

Simulator at Norman-like size (default; fewer cells than Norman so it fits a CPU):

    python benchmarks/report.py --out docs/results.md

The real Norman 2019 file (CPA's ``Norman2019_raw.h5ad`` or pertpy's ``norman_2019``):

    python benchmarks/report.py --norman path/to/Norman2019_raw.h5ad --epochs 100 --out results.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import sys
import time
import warnings

import pandas as pd

import scsena
from scsena.evaluate import combine, evaluate_model, seed_summary
from scsena.metrics import random_recall

CONFIGS = {
    "sena (lambda=0)": {"encoder": "sena", "sena_lambda": 0.0},
    "sena (lambda=0.1)": {"encoder": "sena", "sena_lambda": 0.1},
    "original (discrepancy-VAE encoder)": {"encoder": "original"},
}
METRICS = [
    ("ref_mmd", "MMD (reference protocol)"),
    ("mmd", "MMD"),
    ("energy", "energy distance"),
    ("pearson_delta", "delta-Pearson (all genes)"),
    ("pearson_delta_de", "delta-Pearson (top-20 DEGs)"),
    ("l2_top1000", "L2 of means (top-1000 expressed)"),
]
INTERP = [("recall@25", "recall@25"), ("recall@100", "recall@100"), ("z_diff", "z-diff")]


#: Heading of the hand-written reading of the tables, kept when the report is rewritten.
NOTES_HEADING = "## Reading the tables honestly"


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_data(args: argparse.Namespace):
    if args.norman:
        return scsena.datasets.norman2019(args.norman)
    return scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=args.data_seed,
    )


def fmt(mean: float, sd: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if pd.notna(sd) else f"{mean:.3f}"


def markdown(summary: pd.DataFrame, methods: list[str], fold: str, metrics) -> str:
    head = "| method | " + " | ".join(label for _, label in metrics) + " |"
    sep = "|---" * (len(metrics) + 1) + "|"
    lines = [head, sep]
    for method in methods:
        cells = []
        for key, _ in metrics:
            row = summary[
                (summary["method"] == method)
                & (summary["fold"] == fold)
                & (summary["metric"] == key)
            ]
            cells.append(fmt(row["mean"].iloc[0], row["sd"].iloc[0]) if len(row) else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norman", default=None, help="Path to a Norman 2019 .h5ad file.")
    parser.add_argument("--n-cells", type=int, default=16_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--n-targets", type=int, default=105)
    parser.add_argument("--n-doubles", type=int, default=130)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-cells", type=int, default=200, help="Cells per perturbation.")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--tsv", default=None, help="Tidy results (default: next to --out).")
    args = parser.parse_args()
    _quiet()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    command = "python benchmarks/report.py " + shlex.join(sys.argv[1:])
    t_start = time.perf_counter()

    results, seeds, timings, de_cache = [], [], {}, {}
    baselines_done = set()
    for seed in args.seeds:
        for name in args.configs:
            adata = load_data(args)
            scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
            model = scsena.SENAVAE(adata, seed=seed, **CONFIGS[name])
            t = time.perf_counter()
            model.train(
                max_epochs=args.epochs,
                batch_size=args.batch_size,
                enable_progress_bar=False,
                enable_model_summary=False,
                logger=False,
                enable_checkpointing=False,
            )
            timings.setdefault(name, []).append(time.perf_counter() - t)
            with_baselines = seed not in baselines_done
            res = evaluate_model(
                model,
                adata,
                name=name,
                baselines=("control", "additive") if with_baselines else (),
                max_cells=args.max_cells,
                seed=seed,
                de_cache=de_cache,
            )
            baselines_done.add(seed)
            results.append(res)
            seeds.append(seed)
            print(
                f"seed {seed} {name}: trained {timings[name][-1]:.0f} s, "
                f"double MMD {res.table(['mmd']).loc[name, 'mmd']:.3f}",
                flush=True,
            )
    both = combine(results, seeds)
    summary = seed_summary(both)
    tsv = args.tsv or os.path.splitext(args.out)[0] + ".tsv"
    both.results.to_csv(tsv, sep="\t", index=False)

    n_targets = len(model.targets_)
    folds = adata.obs["scsena_fold"].value_counts()
    methods = list(args.configs) + ["additive", "control"]
    data_desc = (
        f"Norman 2019 ({args.norman})"
        if args.norman
        else (
            f"simulator: {adata.n_obs} cells x {adata.n_vars} genes, {n_targets} single "
            f"targets, {args.n_doubles} doubles (data seed {args.data_seed})"
        )
    )
    out = [
        "# Results: SENA, its ablations and baselines",
        "",
        f"Data: {data_desc}. Gene sets: SENA's GO BP preset, {len(model.term_ids_)} terms "
        f"kept (>= 5 genes). Folds: train {folds.get('train', 0)}, test "
        f"{folds.get('test', 0)} ({', '.join(model.heldout_)} held out at 20%), double "
        f"{folds.get('double', 0)}, control {folds.get('control', 0)} cells.",
        f"Training: {args.epochs} epochs (reference schedules compressed to {args.epochs} "
        f"epochs), batch {args.batch_size}, seeds {args.seeds}; inference temperature 1000. "
        f"Up to {args.max_cells} cells per perturbation are compared.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; total "
        f"{(time.perf_counter() - t_start) / 60:.0f} min. Training time per run: "
        + ", ".join(f"{k} {sum(v) / len(v):.0f} s" for k, v in timings.items())
        + ".",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Values are means over perturbations, then mean ± sd over seeds (baselines are "
        "computed once per seed, on that seed's control draws). Lower is better for MMD, energy "
        "and L2; higher for Pearson, recall and z-diff. `MMD (reference protocol)` is the "
        "paper's number: batch-averaged over perturbation-pure batches of 32 with random "
        "control partners; `MMD` compares up to the cap of cells per perturbation at once.",
        "",
        "## Unseen double perturbations (double fold)",
        "",
        markdown(summary, methods, "double", METRICS),
        "",
        "## Held-out cells of seen single perturbations (test fold)",
        "",
        markdown(summary, methods, "test", METRICS),
        "",
        "## Interpretability (activation-score test, single perturbations)",
        "",
        markdown(summary, list(args.configs), "train", INTERP),
        "",
        f"Random ranking: recall@25 = {random_recall(len(model.term_ids_), 25):.3f}, "
        f"recall@100 = {random_recall(len(model.term_ids_), 100):.3f}.",
        "",
    ]
    # keep the hand-written reading of an earlier report (check it against the new tables)
    notes = ""
    if os.path.exists(args.out):
        with open(args.out) as fh:
            previous = fh.read()
        if NOTES_HEADING in previous:
            notes = "\n" + previous[previous.index(NOTES_HEADING) :]
            print(f"kept the hand-written section {NOTES_HEADING!r}: update its numbers")
    with open(args.out, "w") as fh:
        fh.write("\n".join(out) + notes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
