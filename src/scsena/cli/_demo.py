"""``scsena demo``: train and score on an embedded simulated screen, no download."""

from __future__ import annotations

import argparse
import time

from ._common import (
    _HelpFormatter,
    _one_line,
    _positive_int,
    _threads_arg,
)


def _demo(args: argparse.Namespace) -> int:
    import scsena
    from scsena.metrics import random_recall

    t0 = time.perf_counter()
    print(f"scsena {scsena.__version__} demo: simulate -> gene-set mask -> train -> predict")
    try:
        adata = scsena.datasets.simulate_perturbseq(
            n_cells=args.n_cells,
            n_genes=args.n_genes,
            n_targets=args.n_targets,
            n_doubles=args.n_doubles,
            seed=args.seed,
        )
    except ValueError as err:
        raise SystemExit(f"error: the demo's data cannot be simulated: {_one_line(err)}") from None
    kinds = adata.obs["perturbation_type"].value_counts().to_dict()
    print(
        f"[data] simulated {adata.n_obs} cells x {adata.n_vars} genes (Ensembl IDs); cells: {kinds}"
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    mask = scsena.gene_sets.GeneSetMask.from_uns(adata.uns["scsena_mask"])
    print(
        f"[mask] SENA GO BP preset: {mask.n_terms} terms with >= 5 genes, "
        f"{mask.membership.nnz} gene-term pairs"
    )
    if args.mask_only:
        return 0
    model = scsena.SENAVAE(adata, seed=args.seed)
    folds = adata.obs["scsena_fold"].value_counts().to_dict()
    print(f"[model] {len(model.targets_)} targets, {model.n_latent} latent factors; folds: {folds}")
    _demo_check_size(adata, args)
    before = _demo_scores(model, adata, args.seed, baselines=())
    t1 = time.perf_counter()
    print(f"[train] {args.epochs} epochs, batch {args.batch_size} (one line per epoch) ...")
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    print(f"[train] {args.epochs} epochs in {time.perf_counter() - t1:.1f} s")
    after = _demo_scores(model, adata, args.seed)
    _print_demo_table(before, after, int((adata.obs["scsena_fold"] == "double").sum()))
    double = sorted(set(adata.obs["guide_ids"][adata.obs["scsena_fold"] == "double"]))[0]
    pred = model.predict_perturbation([double], n_cells=200, seed=args.seed)
    print(
        f"[predict] unseen double {double!r}: {pred.n_obs} generated cells x {pred.n_vars} "
        "genes (an AnnData, like the real cells)"
    )
    metrics = model.activation_test()
    chance = random_recall(len(model.term_ids_), 25)
    print(
        f"[interpret] activation-score test over {len(metrics)} targets: recall@25 "
        f"{metrics['recall@25'].mean():.3f} (random ranking {chance:.3f}), z-diff "
        f"{metrics['z_diff'].mean():.3f} (0 without signal)"
    )
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _demo_check_size(adata, args: argparse.Namespace) -> None:
    """Refuse, before training, a demo whose targets all have fewer cells than a batch."""
    train = adata.obs["scsena_fold"] == "train"
    most = int(adata.obs.loc[train, "guide_ids"].value_counts().max()) if train.any() else 0
    if most < args.batch_size:
        raise SystemExit(
            f"error: --n-cells {args.n_cells} leaves at most {most} training cells per target, "
            f"fewer than one batch (--batch-size {args.batch_size}), so nothing would train. "
            "Raise --n-cells (the default 3000 trains every target), or lower --n-targets "
            "or --batch-size."
        )


def _demo_scores(model, adata, seed: int, baselines=("control", "additive")):
    """Mean MMD and Pearson of the mean change over the unseen doubles, per method."""
    from scsena.evaluate import evaluate_model

    res = evaluate_model(
        model,
        adata,
        name="model",
        folds=("double",),
        baselines=baselines,
        n_de_genes=0,
        activation_test=False,
        seed=seed,
    )
    return res.table(["mmd", "pearson_delta"])


def _print_demo_table(before, after, n_cells: int) -> None:
    """The model's figures on the unseen doubles beside the no-change and additive ones."""
    rows = [
        ("model, untrained", before.loc["model"]),
        ("model, trained", after.loc["model"]),
        ("control baseline", after.loc["control"]),
        ("additive baseline", after.loc["additive"]),
    ]
    print(f"[eval] unseen doubles, {n_cells} cells; mean over the double perturbations:")
    print(f"  {'':<18} {'MMD':>8} {'Pearson':>8}")
    for label, row in rows:
        print(f"  {label:<18} {row['mmd']:>8.3f} {row['pearson_delta']:>8.3f}")
    print(
        "  MMD: lower is better. Pearson: of the mean change from control, predicted vs "
        "observed; higher is better.\n  control baseline: predicts no change; additive: the "
        "sum of the two single targets' mean changes (the strong baseline for doubles)."
    )


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``scsena demo``: simulate, mask, train and score, writing no files."""
    demo = sub.add_parser(
        "demo",
        help="Simulate a screen, build the GO mask, train, predict an unseen double.",
        description="Simulate a screen with known ground truth, build the GO BP mask, train, "
        "and score the unseen doubles beside the control and additive baselines. "
        "Writes no files.",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument("--n-cells", type=_positive_int, default=3000, help="Simulated cells.")
    demo.add_argument("--n-genes", type=_positive_int, default=1000, help="Simulated genes.")
    demo.add_argument(
        "--n-targets", type=_positive_int, default=20, help="Simulated single targets."
    )
    demo.add_argument(
        "--n-doubles", type=int, default=10, help="Simulated double perturbations (unseen)."
    )
    demo.add_argument("--epochs", type=_positive_int, default=30, help="Training epochs.")
    demo.add_argument("--batch-size", type=_positive_int, default=32, help="Training batch size.")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the simulation and model.")
    demo.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    demo.add_argument("--mask-only", action="store_true", help="Stop after the mask.")
    _threads_arg(demo)
    demo.set_defaults(func=_demo)
