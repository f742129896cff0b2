"""``scsena activity``: pathway activities, differential activity, activation-score test."""

from __future__ import annotations

import argparse
import os

from ._common import (
    _OUT_HELP,
    _data_args,
    _HelpFormatter,
    _load_run,
    _out_dir,
    _positive_int,
    _run_dirs,
    _threads_arg,
    _trusted_arg,
    _wrote,
)


def _activity(args: argparse.Namespace) -> int:
    from scsena.readouts import consensus_activity

    out_dir = _out_dir(args)
    models = []
    for seed, run_dir in _run_dirs(args.model_dir):
        model, adata = _load_run(args, run_dir)
        _activity_of_seed(args, model, adata, os.path.join(out_dir, f"seed{seed}"), seed)
        models.append(model)
    if len(models) > 1:
        table = consensus_activity(models, top_k=args.top_k)
        path = os.path.join(out_dir, "activity_consensus.tsv")
        table.to_csv(path, sep="\t", index=False)
        _wrote(path)
        top = table[table["n_top_k"] == len(models)]
        same = table["agree_direction"] == len(models)
        print(
            f"[activity] {len(models)} seeds: {same.mean():.1%} of (perturbation, BP) calls "
            f"agree in direction in every seed; {len(top)} calls are in the top {args.top_k} "
            "of every seed"
        )
    return 0


def _activity_of_seed(args: argparse.Namespace, model, adata, seed_dir: str, seed: int) -> None:
    """Activities, differential activity and the activation-score test of one seed."""
    bp = model.pathway_activity_anndata(adata)
    stem = os.path.join(seed_dir, "activity")
    os.makedirs(seed_dir, exist_ok=True)
    bp.write_h5ad(f"{stem}.h5ad")
    metrics, scores = model.activation_test(adata, method=args.method, return_scores=True)
    metrics.to_csv(f"{stem}_test.tsv", sep="\t", index=False)
    scores.to_csv(f"{stem}_scores.tsv", sep="\t")
    model.differential_activity(adata).to_csv(
        os.path.join(seed_dir, "differential_activity.tsv"), sep="\t", index=False
    )
    _wrote(
        f"{stem}.h5ad",
        f"{stem}_test.tsv",
        f"{stem}_scores.tsv",
        os.path.join(seed_dir, "differential_activity.tsv"),
    )
    print(
        f"[activity] seed {seed}: {bp.n_obs} cells x {bp.n_vars} BPs; recall@25 "
        f"{metrics['recall@25'].mean():.3f}, z-diff {metrics['z_diff'].mean():.3f}"
    )


def _add_activity_parser(sub: argparse._SubParsersAction) -> None:
    """``scsena activity``: pathway activities and the activation-score test."""
    act = sub.add_parser(
        "activity",
        help="Pathway activities and the activation-score test.",
        description="BP activities of every cell, differential activity (every perturbation "
        "against control, with the member genes behind each call) and the activation-score "
        "test, for every seed of a run; writes seedN/activity.h5ad, "
        "seedN/differential_activity.tsv, seedN/activity_test.tsv and "
        "seedN/activity_scores.tsv, and with several seeds activity_consensus.tsv (per "
        "perturbation and BP, the seeds that agree on its direction and on its top-k place).",
        formatter_class=_HelpFormatter,
    )
    act.add_argument("--model-dir", required=True, metavar="DIR", help="A `scsena train` run")
    _data_args(act, required=False)
    act.add_argument("--out", default=None, metavar="DIR", help=_OUT_HELP + " (default: DIR)")
    act.add_argument(
        "--method",
        choices=["mean_diff", "ttest"],
        default="mean_diff",
        help="Activation score of a BP: mean difference or t statistic vs control",
    )
    act.add_argument(
        "--top-k",
        type=_positive_int,
        default=5,
        metavar="K",
        help="Consensus over seeds: a BP counts as a top call of a seed when ranked <= K",
    )
    _threads_arg(act)
    _trusted_arg(act)
    act.set_defaults(func=_activity)
