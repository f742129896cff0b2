"""Evaluation report: the reference preset, scsena's default, its ablations and baselines.

Trains each configuration over several seeds on the same data and folds, evaluates
every run and the baselines (control; mean for seen singles; additive for doubles; the
mean of member genes and ULM for the activation-score test) with
:func:`scsena.evaluate.evaluate_model`,
and writes a markdown report (mean +- sd over seeds) plus the tidy results.

Simulator settings (fewer cells than Norman so that it fits a CPU):

    python benchmarks/report.py --jobs 2 --out docs/results.md

``standard`` is the simulator's default (doubles close to additive);
``nonadditive`` has a dense causal DAG and strong interactions, so doubles are far from
the sum of their singles. The real Norman 2019 file (CPA's ``Norman2019_raw.h5ad`` or
pertpy's ``norman_2019``):

    python benchmarks/report.py --norman path/to/Norman2019_raw.h5ad --epochs 100 --out results.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

import scsena
from scsena.evaluate import (
    BASELINES,
    READOUT_BASELINES,
    READOUT_METHOD_NAMES,
    EvaluationResult,
    combine,
    evaluate_model,
    seed_summary,
)
from scsena.metrics import random_recall

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet  # noqa: E402

#: Configurations: model arguments and train arguments.
CONFIGS = {
    "reference": {"model": {"preset": "reference"}},
    "scsena": {"model": {}},
    "scsena, dense encoder": {"model": {"encoder": "original"}},
    "reference, dense encoder": {"model": {"preset": "reference", "encoder": "original"}},
    "scsena - table (MLP assignment)": {"model": {"assignment": "mlp"}},
    "scsena - table, - balance": {"model": {"assignment": "mlp", "lambda_balance": 0.0}},
    "scsena - mean-shift term": {"model": {"lambda_mean": 0.0}},
    "scsena - residual (decoded cells)": {"model": {"prediction": "direct"}},
    "scsena + best-epoch selection": {"model": {}, "train": {"select_best_epoch": True}},
    "scsena - non-negative member weights (free)": {"model": {"member_weights": "free"}},
}
MAIN = ["reference", "scsena", "scsena, dense encoder"]
ABLATIONS = [
    "scsena",
    "scsena - table (MLP assignment)",
    "scsena - table, - balance",
    "scsena - mean-shift term",
    "scsena - residual (decoded cells)",
    "scsena + best-epoch selection",
    "scsena - non-negative member weights (free)",
]
#: Simulator settings.
SETTINGS = {
    "standard": {},
    "nonadditive": {"interaction_strength": 1.5, "dag_density": 0.5},
}
METRICS = [
    ("ref_mmd", "MMD (published protocol)"),
    ("batch_mmd", "MMD (per-batch average)"),
    ("mmd", "MMD"),
    ("energy", "energy distance"),
    ("l2_top1000", "L2 of means (top-1000 expressed)"),
    ("pearson_delta", "delta-Pearson (all genes)"),
    ("pearson_delta_de", "delta-Pearson (top-20 DEGs)"),
    ("spread_ratio", "spread ratio"),
]
SHORT = [m for m in METRICS if m[0] in ("mmd", "energy", "l2_top1000", "pearson_delta_de")]
ASSIGN = [
    ("distinct_factors", "distinct factors"),
    ("assignment_recovery", "true assignment recovered"),
]
INTERP = [("recall@25", "recall@25"), ("recall@100", "recall@100"), ("z_diff", "z-diff")]
#: Model-free readouts whose activation-score test is shown beside the models'.
READOUTS = [READOUT_METHOD_NAMES[r] for r in READOUT_BASELINES]

#: Heading of the hand-written reading of the tables, kept when the report is rewritten.
NOTES_HEADING = "## Reading the tables honestly"


def load_data(args: argparse.Namespace, setting: str):
    if args.norman:
        return scsena.datasets.norman2019(args.norman)
    return scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=args.data_seed,
        **SETTINGS[setting],
    )


def run_one(args: argparse.Namespace, setting: str, name: str, seed: int, baselines: bool):
    """Train and evaluate one configuration; returns the results and a description."""
    quiet()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    adata = load_data(args, setting)
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    config = CONFIGS[name]
    model = scsena.SENAVAE(adata, seed=seed, **config["model"])
    t = time.perf_counter()
    model.train(
        **{
            "max_epochs": args.epochs,
            "batch_size": args.batch_size,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            "enable_checkpointing": False,
            **config.get("train", {}),
        }
    )
    seconds = time.perf_counter() - t
    res = evaluate_model(
        model,
        adata,
        name=name,
        baselines=BASELINES if baselines else (),
        readout_baselines=READOUT_BASELINES if baselines else (),
        max_cells=args.max_cells,
        seed=seed,
    )
    folds = adata.obs["scsena_fold"].value_counts()
    desc = {
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "n_targets": len(model.targets_),
        "n_terms": len(model.term_ids_),
        "heldout": list(model.heldout_),
        "folds": {k: int(folds.get(k, 0)) for k in ("train", "test", "double", "control")},
    }
    double = res.table(["mmd", "l2_top1000"]).loc[name]
    print(
        f"[{setting}] seed {seed} {name}: trained {seconds:.0f} s, double MMD "
        f"{double['mmd']:.3f}, L2 {double['l2_top1000']:.2f}",
        flush=True,
    )
    return setting, name, seed, res.results, seconds, desc


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
        if set(cells) != {"–"}:  # a baseline not defined on this fold has no row
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(setting: str, args, summary, configs, desc, timings) -> list[str]:
    """The markdown of one data setting."""
    methods = list(configs) + ["mean", "additive", "control"]
    f = desc["folds"]
    data = (
        f"Norman 2019 ({args.norman})"
        if args.norman
        else (
            f"simulator `{setting}` ({SETTINGS[setting] or 'defaults'}): {desc['n_obs']} "
            f"cells x {desc['n_vars']} genes, {desc['n_targets']} single targets, "
            f"{args.n_doubles} doubles (data seed {args.data_seed})"
        )
    )
    out = [
        f"## Setting: {setting}",
        "",
        f"Data: {data}. Gene sets: SENA's GO BP preset, {desc['n_terms']} terms kept (>= 5 "
        f"genes). Folds: train {f['train']}, test {f['test']} "
        f"({', '.join(desc['heldout'])} held out at 20%), double {f['double']}, control "
        f"{f['control']} cells. Training time per run: "
        + ", ".join(f"{k} {sum(v) / len(v):.0f} s" for k, v in timings.items())
        + ".",
        "",
    ]
    for fold, title in (
        ("double", "Unseen double perturbations (double fold)"),
        ("test", "Held-out cells of seen single perturbations (test fold)"),
        ("train", "Training fold (single perturbations seen in training)"),
    ):
        out += [f"### {title}", "", markdown(summary, methods, fold, METRICS), ""]
    out += [
        "### Intervention targets and interpretability",
        "",
        markdown(summary, [*configs, *READOUTS], "train", ASSIGN + INTERP),
        "",
        f"Random ranking: recall@25 = {random_recall(desc['n_terms'], 25):.3f}, "
        f"recall@100 = {random_recall(desc['n_terms'], 100):.3f}.",
        "",
    ]
    return out


def parse_args() -> argparse.Namespace:
    """The report's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norman", default=None, help="Path to a Norman 2019 .h5ad file.")
    parser.add_argument("--n-cells", type=int, default=6_000)
    parser.add_argument("--n-genes", type=int, default=1_000)
    parser.add_argument("--n-targets", type=int, default=12)
    parser.add_argument("--n-doubles", type=int, default=8)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-cells", type=int, default=300, help="Cells per perturbation.")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--configs", nargs="+", default=MAIN, choices=list(CONFIGS))
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=ABLATIONS,
        choices=list(CONFIGS),
        help="Configurations compared on the first setting only (none: skip).",
    )
    parser.add_argument("--jobs", type=int, default=1, help="Runs trained in parallel.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run.")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--tsv", default=None, help="Tidy results (default: next to --out).")
    return parser.parse_args()


def plan_runs(args: argparse.Namespace) -> list[tuple[str, str, int, bool]]:
    """(setting, configuration, seed, with baselines) of every run; ablations on the first."""
    plan = []
    for i, setting in enumerate(args.settings):
        configs = list(dict.fromkeys(args.configs + (args.ablations if i == 0 else [])))
        for seed in args.seeds:
            plan += [(setting, name, seed, j == 0) for j, name in enumerate(configs)]
    return plan


def run_all(args: argparse.Namespace, plan: list) -> list:
    """Every planned run, ``--jobs`` at a time (each in its own process when > 1)."""
    if args.jobs <= 1:
        return [run_one(args, *p) for p in plan]
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
        return list(pool.map(run_one, *zip(*[(args, *p) for p in plan])))


def summarise(args: argparse.Namespace, done: list) -> tuple[dict, dict, dict]:
    """Write the tidy results of every run; returns summaries, timings and data per setting."""
    frames, seeds, timings, descs = {}, {}, {}, {}
    for setting, name, seed, results, seconds, desc in done:
        frames.setdefault(setting, []).append(EvaluationResult(results))
        seeds.setdefault(setting, []).append(seed)
        timings.setdefault(setting, {}).setdefault(name, []).append(seconds)
        descs[setting] = desc
    tsv = args.tsv or os.path.splitext(args.out)[0] + ".tsv"
    tables, summaries = [], {}
    for setting in args.settings:
        both = combine(frames[setting], seeds[setting])
        both.results.insert(0, "setting", setting)
        tables.append(both.results)
        summaries[setting] = seed_summary(both)
    pd.concat(tables, ignore_index=True).to_csv(tsv, sep="\t", index=False)
    return summaries, timings, descs


def report_header(args: argparse.Namespace, command: str, minutes: float) -> list[str]:
    """Title, training settings, the command and how to read the tables."""
    return [
        "# Results: the reference preset, scsena's default, ablations and baselines",
        "",
        f"Training: {args.epochs} epochs (schedules spanning {args.epochs} epochs), batch "
        f"{args.batch_size}, seeds {args.seeds}; inference temperature 1000. Up to "
        f"{args.max_cells} cells per perturbation are compared. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} run(s) at a time; total "
        f"{minutes:.0f} min.",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Values are means over perturbations, then mean ± sd over seeds (baselines are "
        "computed once per seed, on that seed's control draws). Lower is better for MMD, "
        "energy and L2; higher for Pearson, recall and z-diff; a spread ratio of 1 means "
        "generated cells vary as much as real ones. `MMD (published protocol)` is the "
        "published evaluation loop (perturbation-pure batches of 32 with random control "
        "partners, stacked in chunks of 10 batches, mean over chunks; one value per fold); "
        "`MMD (per-batch average)` averages one MMD per batch of 32; `MMD` compares up to "
        'the cap of cells per perturbation at once. `reference` is `preset="reference"` '
        "(the published model); `scsena` is the default preset. Baselines, as the field "
        "names them: `control` (no change), `mean` (a seen single: control cells shifted "
        "by its training-fold mean shift), `additive` (a double: the two singles' shifts "
        "summed), shifted cells clipped at 0. `gene-set mean` and `gene-set ULM` are "
        "model-free scores of the same gene sets (the mean of member genes; decoupler's "
        "univariate linear model) given the activation-score test beside the models'.",
        "",
    ]


def ablation_section(setting: str, summary: pd.DataFrame, ablations: list[str]) -> list[str]:
    """The ablations of the default on one setting: double and test folds, assignment."""
    methods = ablations + ["mean", "additive", "control"]
    return [
        f"### Ablations of the default ({setting})",
        "",
        "Each row removes (-) or adds (+) one remedy of the default preset.",
        "",
        "Double fold:",
        "",
        markdown(summary, methods, "double", SHORT),
        "",
        "Test fold:",
        "",
        markdown(summary, methods, "test", SHORT),
        "",
        "Assignment and interpretability:",
        "",
        markdown(summary, ablations, "train", ASSIGN + INTERP),
        "",
    ]


def previous_notes(path: str) -> str:
    """The hand-written reading of an earlier report at ``path`` (to check against the tables)."""
    if not os.path.exists(path):
        return ""
    with open(path) as fh:
        previous = fh.read()
    if NOTES_HEADING not in previous:
        return ""
    print(f"kept the hand-written section {NOTES_HEADING!r}: update its numbers")
    return "\n" + previous[previous.index(NOTES_HEADING) :]


def main() -> None:
    """Train and evaluate every run, then write the report and the tidy results."""
    args = parse_args()
    quiet()
    if args.norman:
        args.settings = args.settings[:1]
    command = "python benchmarks/report.py " + shlex.join(sys.argv[1:])
    t_start = time.perf_counter()
    summaries, timings, descs = summarise(args, run_all(args, plan_runs(args)))
    out = report_header(args, command, (time.perf_counter() - t_start) / 60)
    for i, setting in enumerate(args.settings):
        configs = list(args.configs)
        out += section(setting, args, summaries[setting], configs, descs[setting], timings[setting])
        if i == 0 and args.ablations:
            ablations = [a for a in args.ablations if a in timings[setting]]
            out += ablation_section(setting, summaries[setting], ablations)
    # keep the hand-written reading of an earlier report (check it against the new tables)
    notes = previous_notes(args.out)
    with open(args.out, "w") as fh:
        fh.write("\n".join(out) + notes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
