"""Command line interface: ``scsena demo``, ``scsena train``, ``scsena evaluate``, ``scsena activity``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    import scsena
    from scsena.metrics import random_recall

    t0 = time.perf_counter()
    print(f"scsena {scsena.__version__} demo: simulate -> gene-set mask -> train -> predict")
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells, n_genes=args.n_genes, n_targets=args.n_targets,
        n_doubles=args.n_doubles, seed=args.seed,
    )
    kinds = adata.obs["perturbation_type"].value_counts().to_dict()
    print(f"[data] simulated {adata.n_obs} cells x {adata.n_vars} genes (Ensembl IDs); "
          f"cells: {kinds}")
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    mask = scsena.gene_sets.GeneSetMask.from_uns(adata.uns["scsena_mask"])
    print(f"[mask] SENA GO BP preset: {mask.n_terms} terms with >= 5 genes, "
          f"{mask.membership.nnz} gene-term pairs")
    if args.mask_only:
        return 0
    model = scsena.SENAVAE(adata, seed=args.seed)
    folds = adata.obs["scsena_fold"].value_counts().to_dict()
    print(f"[model] {len(model.targets_)} targets, {model.n_latent} latent factors; "
          f"folds: {folds}")
    before = model.get_fold_losses("double")
    t1 = time.perf_counter()
    model.train(
        max_epochs=args.epochs, accelerator=args.accelerator, enable_progress_bar=False,
        enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    print(f"[train] {args.epochs} epochs in {time.perf_counter() - t1:.1f} s "
          f"(best epoch {model.best_epoch_})")
    after = model.get_fold_losses("double")
    print(f"[eval] double fold (unseen combinations) MMD: untrained "
          f"{before['mmd'].mean():.3f} -> trained {after['mmd'].mean():.3f}")
    double = str(after.sort_values("perturbation")["perturbation"].iloc[0])
    pred = model.predict_perturbation([double], n_cells=200, seed=args.seed)
    real = adata[adata.obs["guide_ids"] == double].X.toarray().mean(0)
    ctrl = adata[adata.obs["guide_ids"] == ""].X.toarray().mean(0)
    pearson = float(np.corrcoef(pred.X.mean(0) - ctrl, real - ctrl)[0, 1])
    print(f"[predict] unseen double {double!r}: 200 cells; Pearson of the mean change "
          f"from control, predicted vs observed: {pearson:.3f}")
    metrics = model.activation_test()
    chance = random_recall(len(model.term_ids_), 25)
    print(f"[interpret] activation-score test over {len(metrics)} targets: recall@25 "
          f"{metrics['recall@25'].mean():.3f} (random ranking {chance:.3f}), z-diff "
          f"{metrics['z_diff'].mean():.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scsena`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scsena", description="SENA-discrepancy-VAE for single-cell perturbation screens."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="Simulate a screen, build the GO mask, train, predict an unseen double."
    )
    demo.add_argument("--n-cells", type=int, default=3000)
    demo.add_argument("--n-genes", type=int, default=1000)
    demo.add_argument("--n-targets", type=int, default=20)
    demo.add_argument("--n-doubles", type=int, default=10)
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--accelerator", default="auto")
    demo.add_argument("--mask-only", action="store_true", help="Stop after the mask.")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scsena`` command."""
    args = build_parser().parse_args(argv)
    _quiet()
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
