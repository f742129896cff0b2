"""Command line interface: ``scsena demo``, ``train``, ``evaluate`` and ``activity``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence

#: Options of ``train`` that ``evaluate`` and ``activity`` take from a run's config.json:
#: where the data are and how they were set up (never where to write).
_CONFIG_DATA_KEYS = (
    "data",
    "dataset",
    "sim_cells",
    "sim_genes",
    "sim_targets",
    "sim_doubles",
    "sim_seed",
    "perturbation_key",
    "control_value",
    "delimiter",
    "layer",
    "gene_sets",
    "min_genes",
    "keep_terms",
    "batch_key",
    "covariate_keys",
)


def _quiet() -> None:
    """Silence third-party warnings and logs; scsena's own warnings stay visible."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(?!scsena(\.|$))")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


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


def heldout_option(values: list[str] | None) -> str | int | list[str]:
    """The ``heldout`` argument of :class:`~scsena.SENAVAE` from ``--heldout`` values.

    Parameters
    ----------
    values
        The words given to ``--heldout`` (``None`` when it was not given).

    Returns
    -------
    ``"auto"`` when nothing is given; ``"auto"``/``"all"`` or a number as such; else the
    list of target names.
    """
    if not values:
        return "auto"
    if len(values) == 1 and values[0] in ("auto", "all"):
        return values[0]
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    return list(values)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _load_data(args: argparse.Namespace):
    """The AnnData named by ``--data`` (a path, or ``simulate``), in the canonical schema."""
    import anndata as ad

    import scsena

    if args.data == "simulate":
        return scsena.datasets.simulate_perturbseq(
            n_cells=args.sim_cells,
            n_genes=args.sim_genes,
            n_targets=args.sim_targets,
            n_doubles=args.sim_doubles,
            seed=args.sim_seed,
        )
    readers = {
        "norman2019": scsena.datasets.norman2019,
        "wessel2023": scsena.datasets.wessel2023_hek293,
    }
    if args.dataset not in readers and not os.path.exists(args.data):
        raise SystemExit(
            f"error: --data {args.data!r} does not exist (a .h5ad path or 'simulate')."
        )
    try:
        return readers.get(args.dataset, ad.read_h5ad)(args.data)
    except Exception as err:  # noqa: BLE001 - any unreadable input: one line, no traceback
        raise SystemExit(
            f"error: --data {args.data!r} could not be read as {args.dataset} data "
            f"({_one_line(err)})."
        ) from None


def _setup(adata, args: argparse.Namespace) -> None:
    import scsena

    scsena.SENAVAE.setup_anndata(
        adata,
        perturbation_key=args.perturbation_key,
        control_value=args.control_value,
        delimiter=args.delimiter,
        layer=args.layer,
        gene_sets=args.gene_sets,
        min_genes=args.min_genes,
        keep_terms=getattr(args, "keep_terms", None) or None,
        batch_key=getattr(args, "batch_key", None),
        categorical_covariate_keys=getattr(args, "covariate_keys", None) or None,
    )


def _logger(args: argparse.Namespace, run_dir: str, seed: int):
    if args.log != "mlflow":
        return False
    from scsena.tracking import mlflow_logger

    return mlflow_logger(
        experiment_name=args.experiment,
        tracking_uri=args.tracking_uri,
        run_name=f"seed{seed}",
        directory=args.save_dir,
    )


def _train(args: argparse.Namespace) -> int:
    import json

    import scsena
    from scsena._presets import TRAIN_PRESETS

    _refuse_existing_run(args)
    adata = _load_data(args)
    _setup(adata, args)
    os.makedirs(args.save_dir, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with open(os.path.join(args.save_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    for i, seed in enumerate(args.seeds):
        if i:
            adata = _load_data(args)
            _setup(adata, args)
        model = scsena.SENAVAE(
            adata,
            n_latent=args.latent_dim,
            preset=args.preset,
            encoder=args.encoder,
            sena_lambda=args.sena_lambda,
            member_weights=args.member_weights,
            mmd_sigma=args.mmd_sigma,
            lambda_l1=args.lambda_l1,
            dtype=args.dtype,
            heldout=heldout_option(args.heldout),
            seed=seed,
        )
        run_dir = os.path.join(args.save_dir, f"seed{seed}")
        t = time.perf_counter()
        epochs = args.epochs or TRAIN_PRESETS[args.preset]["max_epochs"]
        print(
            f"[train] seed {seed} ({i + 1}/{len(args.seeds)}): {epochs} epochs on "
            f"{int((adata.obs['scsena_fold'] == 'train').sum())} training cells ..."
        )
        model.train(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            alpha_max=args.alpha_max,
            beta_max=args.beta_max,
            tau_max=args.tau_max,
            grad_clip=args.grad_clip,
            accelerator=args.accelerator,
            devices=args.devices,
            logger=_logger(args, run_dir, seed),
            enable_progress_bar=args.progress,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        model.save(os.path.join(run_dir, "model"), overwrite=args.overwrite, save_anndata=False)
        adata.obs[["scsena_fold"]].to_csv(os.path.join(run_dir, "folds.tsv"), sep="\t")
        if model.history:
            import pandas as pd

            pd.concat(model.history.values(), axis=1).to_csv(
                os.path.join(run_dir, "history.tsv"), sep="\t"
            )
        print(
            f"[train] seed {seed} done: {epochs} epochs in {time.perf_counter() - t:.1f} s "
            f"-> {run_dir}"
        )
    _print_next_steps(args.save_dir)
    return 0


def _print_next_steps(save_dir: str) -> None:
    """End ``scsena train`` with the commands that read its run."""
    import shlex

    run = shlex.quote(save_dir)
    print(f"[train] run in {save_dir}; next:")
    print(f"  scsena evaluate --model-dir {run}   # metrics and baselines on the folds")
    print(f"  scsena activity --model-dir {run}   # pathway activities, activation-score test")


def _refuse_existing_run(args: argparse.Namespace) -> None:
    """Without ``--overwrite``, refuse a save directory holding a run, before any work."""
    if args.overwrite:
        return
    names = ["config.json", *(f"seed{seed}" for seed in args.seeds)]
    found = [n for n in names if os.path.exists(os.path.join(args.save_dir, n))]
    if found:
        raise SystemExit(
            f"error: --save-dir {args.save_dir!r} already holds a run ({', '.join(found)}); "
            "pass --overwrite to replace it, or choose another --save-dir."
        )


def _train_options() -> dict[str, argparse.Action]:
    """The options of ``scsena train`` by destination (all keys its config.json may hold)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions if a.dest != "help"}


def _config_value_ok(value, action: argparse.Action) -> bool:
    if value is None:
        return action.default is None and not action.required
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return isinstance(value, bool)
    if action.nargs in ("*", "+"):
        return isinstance(value, list) and all(_config_scalar_ok(v, action) for v in value)
    return _config_scalar_ok(value, action)


def _config_scalar_ok(value, action: argparse.Action) -> bool:
    kind = action.type or str
    python_type = {str: str, int: int, _positive_int: int, float: (int, float)}.get(
        kind, (str, int, float)
    )
    if isinstance(value, bool) or not isinstance(value, python_type):
        return False
    if action.choices is not None and value not in action.choices:
        return False
    try:
        kind(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return True


def _read_config(model_dir: str) -> dict:
    """A run's config.json: only ``scsena train`` options, each of its type."""
    import json

    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as err:
        raise SystemExit(
            f"error: cannot read {path!r} ({_one_line(err)}); it is written by `scsena train`."
        ) from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: {path!r} is not a `scsena train` config (not a JSON object).")
    options = _train_options()
    unknown = sorted(set(config) - set(options) - {"command"})
    if unknown:
        raise SystemExit(
            f"error: {path!r} holds unknown option(s) {unknown}; it was not written by "
            "`scsena train` of this version. Remove them, or pass the data options "
            "(--data ...) directly."
        )
    bad = sorted(k for k in options if k in config and not _config_value_ok(config[k], options[k]))
    if bad:
        shown = ", ".join(f"{k}={config[k]!r}" for k in bad)
        raise SystemExit(f"error: {path!r} holds values of the wrong type or range: {shown}.")
    return config


def _run_dirs(model_dir: str) -> list[tuple[int, str]]:
    import glob
    import re

    runs = []
    for d in sorted(glob.glob(os.path.join(model_dir, "seed*"))):
        m = re.search(r"seed(\d+)$", d)
        if m and os.path.isdir(os.path.join(d, "model")):
            runs.append((int(m.group(1)), d))
    if not runs:
        raise SystemExit(
            f"error: no trained runs (seed*/model) in {model_dir!r}; run `scsena train`."
        )
    return runs


def _load_run(args: argparse.Namespace, run_dir: str):
    import pandas as pd

    import scsena

    config = _read_config(args.model_dir)
    for key in _CONFIG_DATA_KEYS:
        if getattr(args, key, None) is None and key in config:
            setattr(args, key, config[key])
    if args.data is None:
        raise SystemExit(
            f"error: the config.json of {args.model_dir!r} names no data; pass --data."
        )
    adata = _load_data(args)
    try:
        model = scsena.SENAVAE.load(
            os.path.join(run_dir, "model"), adata=adata, trusted=args.trusted
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    folds = pd.read_csv(os.path.join(run_dir, "folds.tsv"), sep="\t", index_col=0)
    adata.obs["scsena_fold"] = pd.Categorical(
        folds["scsena_fold"].reindex(adata.obs_names).to_numpy(),
        categories=adata.obs["scsena_fold"].cat.categories,
    )
    return model, adata


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
    print(show.to_string(index=False))
    return 0


def _out_dir(args: argparse.Namespace) -> str:
    """``--out``: the directory a command writes into (default ``--model-dir``).

    Every ``scsena`` command takes ``--out`` as a directory; ``evaluate`` and
    ``activity`` write there with the layout of the run (``seedN/...``).
    """
    out = args.out or args.model_dir
    if out.endswith((".h5ad", ".tsv")):
        raise SystemExit(
            f"error: --out {out!r} looks like a file name; --out is a directory in every "
            f"scsena command (files go to DIR/seedN/...). Pass e.g. --out {out.rsplit('.', 1)[0]}."
        )
    return out


def _wrote(*paths: str) -> None:
    """Say which files a command wrote."""
    for path in paths:
        print(f"[wrote] {path}")


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


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Data options; for commands reading a trained run, defaults come from its config."""

    def d(value):
        return value if required else None

    p.add_argument(
        "--data",
        required=required,
        default=None,
        help="A .h5ad path, or 'simulate' for the built-in simulator"
        + ("" if required else " (default: as in training)")
        + ".",
    )
    p.add_argument(
        "--dataset",
        choices=["h5ad", "norman2019", "wessel2023"],
        default=d("h5ad"),
        help="Reader for --data (norman2019: CPA or pertpy layout).",
    )
    same = "" if required else " (default: as in training)"
    p.add_argument("--sim-cells", type=int, default=d(3000), help="Simulated cells" + same)
    p.add_argument("--sim-genes", type=int, default=d(1000), help="Simulated genes" + same)
    p.add_argument("--sim-targets", type=int, default=d(20), help="Simulated single targets" + same)
    p.add_argument(
        "--sim-doubles", type=int, default=d(10), help="Simulated double perturbations" + same
    )
    p.add_argument("--sim-seed", type=int, default=d(0), help="Seed of the simulation" + same)


def _trusted_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted",
        action="store_true",
        help="Also load model files of older scsena versions. Their loading can run code "
        "stored in the file: use only for runs from a trusted source.",
    )


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads of torch (sets scvi.settings.num_threads; default: torch's choice, "
        "usually all cores). 1 is often fastest on a busy or small machine.",
    )


def _use_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` through scvi-tools' setting, which training honours."""
    if getattr(args, "threads", None) is not None:
        import scvi

        scvi.settings.num_threads = args.threads


#: Defaults not shown in help: nothing to say (``None``, an off switch) or hidden.
_NO_DEFAULT = (None, False, argparse.SUPPRESS)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, unless it is ``None``/``False`` or already stated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        stated = "(default" in text or "default:" in text
        if stated or not action.option_strings or any(default is v for v in _NO_DEFAULT):
            return text
        return f"{text} (default: {'%(default)r' if isinstance(default, str) else '%(default)s'})"


_OUT_HELP = (
    "Directory to write into (every scsena command: train's run directory; evaluate and "
    "activity write seedN/... there)"
)


def _preset(name: str) -> str:
    """``(default: the preset's, V)`` or ``(default: the preset's: scsena V1, reference V2)``."""
    from scsena._presets import MODULE_PRESETS, TRAIN_PRESETS

    table = TRAIN_PRESETS if name in TRAIN_PRESETS["scsena"] else MODULE_PRESETS
    values = {p: table[p][name] for p in ("scsena", "reference")}
    if values["scsena"] == values["reference"]:
        return f"(default: the preset's, {values['scsena']:g})"
    return f"(default: the preset's: scsena {values['scsena']}, reference {values['reference']})"


def build_parser() -> argparse.ArgumentParser:
    """The ``scsena`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scsena",
        description="SENA-discrepancy-VAE for single-cell perturbation screens. "
        "Run `scsena COMMAND --help` for a command's options and their defaults.",
        epilog="Start with `scsena demo`; then `scsena train`, `scsena evaluate`, "
        "`scsena activity`. --out is always a directory.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_activity_parser(sub)
    return parser


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


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``scsena train``: data, setup, model, optimisation and run options."""
    train = sub.add_parser(
        "train",
        help="Train SENAVAE (one run per seed); writes config, models, folds.",
        description="Train one model per seed; writes DIR/config.json and DIR/seedN/ "
        "(model, folds.tsv).",
        formatter_class=_HelpFormatter,
    )
    _data_args(train)
    train.add_argument(
        "--save-dir", "--out", dest="save_dir", required=True, metavar="DIR", help=_OUT_HELP
    )
    train.add_argument(
        "--overwrite", action="store_true", help="Replace a run already in --save-dir"
    )
    _setup_args(train)
    _model_args(train)
    _optimisation_args(train)
    _run_args(train)
    _threads_arg(train)
    train.set_defaults(func=_train)


def _setup_args(train: argparse.ArgumentParser) -> None:
    """How ``train`` registers the data (``SENAVAE.setup_anndata``'s arguments)."""
    train.add_argument(
        "--perturbation-key", default="guide_ids", help="obs column of perturbation labels"
    )
    train.add_argument(
        "--control-value", default="", help="Label of control cells (pertpy: 'control')"
    )
    train.add_argument("--delimiter", default=",", help="Separator of double labels (pertpy: '+')")
    train.add_argument(
        "--layer", default=None, help="Layer of log-normalised expression (default: X)"
    )
    train.add_argument("--gene-sets", default="go_bp_sena", help="Preset name or GMT path")
    train.add_argument(
        "--min-genes", type=int, default=5, help="Smallest gene set kept (members in the data)"
    )
    train.add_argument(
        "--keep-terms",
        nargs="*",
        default=None,
        help="Gene-set ids kept whatever their size (e.g. GO:0060333).",
    )
    train.add_argument(
        "--batch-key",
        default=None,
        help="obs column of each cell's batch (lane, gem group, donor); the decoder is "
        "conditioned on it and control partners come from the cell's own batch",
    )
    train.add_argument(
        "--covariate-keys",
        nargs="*",
        default=None,
        help="Further categorical obs columns the decoder is conditioned on",
    )


def _model_args(train: argparse.ArgumentParser) -> None:
    """The model's architecture and loss options of ``train``."""
    train.add_argument(
        "--preset",
        choices=["scsena", "reference"],
        default="scsena",
        help="scsena: the default model; reference: the published SENA-discrepancy-VAE exactly.",
    )
    train.add_argument(
        "--encoder",
        choices=["sena", "original"],
        default="sena",
        help="sena: GO BP-masked encoder; original: the dense discrepancy-VAE encoder",
    )
    train.add_argument(
        "--latent-dim", type=int, default=None, help="Latent factors (default: number of targets)"
    )
    train.add_argument(
        "--sena-lambda", type=float, default=0.0, help="Weight of genes outside each gene set"
    )
    train.add_argument(
        "--member-weights",
        choices=["nonnegative", "free"],
        default=None,
        help="Member genes' weights in a BP's activity: nonnegative (a weighted mean, so a BP "
        "goes up when its members do) or free (any sign) "
        f"{_preset('member_weights')}",
    )
    train.add_argument(
        "--mmd-sigma", type=float, help=f"MMD kernel bandwidth {_preset('mmd_sigma')}"
    )
    train.add_argument(
        "--lambda-l1", type=float, help=f"L1 weight on the DAG {_preset('lambda_l1')}"
    )


def _optimisation_args(train: argparse.ArgumentParser) -> None:
    """Loss schedule, epochs, batches and optimiser options of ``train``."""
    train.add_argument("--alpha-max", type=float, help=f"Final MMD weight {_preset('alpha_max')}")
    train.add_argument("--beta-max", type=float, help=f"Final KL weight {_preset('beta_max')}")
    train.add_argument("--tau-max", type=float, help=f"Final temperature {_preset('tau_max')}")
    train.add_argument(
        "--epochs", type=_positive_int, help=f"Training epochs {_preset('max_epochs')}"
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"Perturbation-pure batch size {_preset('batch_size')}",
    )
    train.add_argument("--lr", type=float, help=f"Adam learning rate {_preset('lr')}")
    train.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        help="Clip gradient values (default: off; the reference option is 0.5)",
    )
    train.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="Floating point type"
    )


def _run_args(train: argparse.ArgumentParser) -> None:
    """Held-out targets, seeds, hardware, logging and progress options of ``train``."""
    train.add_argument(
        "--heldout",
        nargs="*",
        default=None,
        help="Targets with test cells: 'auto' (default), 'all', a number of random targets, "
        "or target names.",
    )
    train.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="One run per seed (DIR/seedN)"
    )
    train.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu"
    )
    train.add_argument("--devices", default="auto", help="Lightning devices")
    train.add_argument(
        "--log",
        choices=["none", "mlflow"],
        default="none",
        help="mlflow: log every epoch's losses to MLflow",
    )
    train.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: a local store in --save-dir).",
    )
    train.add_argument("--experiment", default="scsena", help="MLflow experiment name")
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Show training progress: a bar in a terminal, one line per epoch otherwise",
    )


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
    ev.add_argument("--name", default="sena", help="Name of the model in the tables")
    ev.add_argument(
        "--n-de-genes", type=int, default=20, help="Top DE genes of the metrics named ..._de"
    )
    _threads_arg(ev)
    _trusted_arg(ev)
    ev.set_defaults(func=_evaluate)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scsena`` command."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        _quiet()
        _use_threads(args)
        return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
