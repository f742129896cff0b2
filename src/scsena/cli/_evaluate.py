"""``scsena evaluate``: metrics of every seed of a run and of the baselines."""

from __future__ import annotations

import argparse
import os

from ._common import (
    _OUT_HELP,
    _data_args,
    _HelpFormatter,
    _load_run,
    _out_dir,
    _run_dirs,
    _threads_arg,
    _trusted_arg,
    _wrote,
)


def _evaluate(args: argparse.Namespace) -> int:
    from scsena.evaluate import combine, evaluate_model, seed_summary

    out = _out_dir(args)
    results, seeds = [], []
    for seed, run_dir in _run_dirs(args.model_dir):
        model, adata = _load_run(args, run_dir)
        res = evaluate_model(model, adata, name=args.name, n_de_genes=args.n_de_genes, seed=seed)
        seed_dir = os.path.join(out, f"seed{seed}")
        res.write(seed_dir)
        _wrote(os.path.join(seed_dir, "metrics.tsv"), os.path.join(seed_dir, "summary.tsv"))
        results.append(res)
        seeds.append(seed)
    both = combine(results, seeds)
    os.makedirs(out, exist_ok=True)
    table = seed_summary(both)
    table.to_csv(os.path.join(out, "summary_over_seeds.tsv"), sep="\t", index=False)
    _wrote(os.path.join(out, "summary_over_seeds.tsv"))
    show = table[table["metric"].isin(["mmd", "pearson_delta_de", "ref_mmd", "recall@25"])]
    if len(seeds) == 1:  # one seed has no spread over seeds
        show = show.drop(columns=["sd", "n_seeds"])
        print(f"[evaluate] one seed ({seeds[0]}): means over perturbations, no sd over seeds")
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``scsena evaluate``: metrics of every seed of a run and of the baselines."""
    ev = sub.add_parser(
        "evaluate",
        help="Evaluate trained runs and baselines on the folds.",
        description="Evaluate every seed of a run and the baselines on its folds; writes "
        "seedN/metrics.tsv, seedN/summary.tsv and summary_over_seeds.tsv.",
        formatter_class=_HelpFormatter,
    )
    ev.add_argument("--model-dir", required=True, metavar="DIR", help="A `scsena train` run")
    _data_args(ev, required=False)
    ev.add_argument("--out", default=None, metavar="DIR", help=_OUT_HELP + " (default: DIR)")
    ev.add_argument("--name", default="scsena", help="Name of the model in the tables")
    ev.add_argument(
        "--n-de-genes", type=int, default=20, help="Top DE genes of the metrics named ..._de"
    )
    _threads_arg(ev)
    _trusted_arg(ev)
    ev.set_defaults(func=_evaluate)
