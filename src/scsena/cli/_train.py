"""``scsena train``: one model per seed, saved with its folds, history and status."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ._common import (
    _OUT_HELP,
    _data_args,
    _HelpFormatter,
    _int_at_least,
    _load_data,
    _positive_int,
    _preset,
    _setup,
    _threads_arg,
    heldout_option,
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


#: Exit status of a run stopped by Ctrl-C (SIGINT) and by SIGTERM, as shells report them.
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
STATUS_FILE = "status.json"
CHECKPOINTS = "checkpoints"


def _train(args: argparse.Namespace) -> int:
    import json

    if args.resume:
        _resume_options(args)
    else:
        if args.data is None:
            raise SystemExit("error: scsena train needs --data (a .h5ad path or 'simulate').")
        _refuse_existing_run(args)
    adata = _load_data(args)
    _setup(adata, args)
    os.makedirs(args.save_dir, exist_ok=True)
    if not args.resume:
        config = {k: v for k, v in vars(args).items() if k not in ("func", "resume")}
        with open(os.path.join(args.save_dir, "config.json"), "w") as fh:
            json.dump(config, fh, indent=2)
    for i, seed in enumerate(args.seeds):
        run_dir = os.path.join(args.save_dir, f"seed{seed}")
        if args.resume and read_status(run_dir).get("status") == "done":
            print(f"[train] seed {seed} already done; skipped")
            continue
        if i:
            adata = _load_data(args)
            _setup(adata, args)
        status = _train_seed(args, adata, seed, run_dir, f"{i + 1}/{len(args.seeds)}")
        if status:
            return status
    _print_next_steps(args.save_dir)
    return 0


def _train_seed(args: argparse.Namespace, adata, seed: int, run_dir: str, which: str) -> int:
    """Train, save and mark one seed; the exit status of an interrupted run, else 0."""
    import shutil

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scsena._presets import TRAIN_PRESETS

    model = _build_model(args, adata, seed)
    ckpt_dir = os.path.join(run_dir, CHECKPOINTS)
    last = os.path.join(ckpt_dir, "last.ckpt")
    resume = args.resume and os.path.exists(last)
    if not resume and os.path.isdir(ckpt_dir):
        shutil.rmtree(ckpt_dir)  # an earlier run's checkpoints (--overwrite or --resume)
    epochs = args.epochs or TRAIN_PRESETS[args.preset]["max_epochs"]
    t = time.perf_counter()
    n_train = int((adata.obs["scsena_fold"] == "train").sum())
    start = "resumed from its last checkpoint" if resume else f"on {n_train} training cells"
    print(f"[train] seed {seed} ({which}): {epochs} epochs {start} ...")
    sigterm = False
    try:
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
            enable_model_summary=False,
            checkpoint_dir=ckpt_dir,
            checkpoint_every=0,
            ckpt_path=last if resume else None,
        )
    except SIGTERMException:
        sigterm = True
    interrupted = sigterm or bool(getattr(model, "training_interrupted_", False))
    done = _epochs_done(model)
    model.save(os.path.join(run_dir, "model"), overwrite=True, save_anndata=False)
    adata.obs[["scsena_fold"]].to_csv(os.path.join(run_dir, "folds.tsv"), sep="\t")
    if model.history:
        import pandas as pd

        pd.concat(model.history.values(), axis=1).to_csv(
            os.path.join(run_dir, "history.tsv"), sep="\t"
        )
    if interrupted:
        write_status(run_dir, "interrupted", done, epochs)
        print(
            f"[train] seed {seed} interrupted after {done} of {epochs} epochs: saved in "
            f"{run_dir} as interrupted (never counted as done); no further seed starts. "
            f"Resume: {_resume_command(args)}",
            file=sys.stderr,
        )
        return EXIT_SIGTERM if sigterm else EXIT_SIGINT
    write_status(run_dir, "done", epochs, epochs)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    print(
        f"[train] seed {seed} done: {epochs} epochs in {time.perf_counter() - t:.1f} s "
        f"-> {run_dir}"
    )
    return 0


def _build_model(args: argparse.Namespace, adata, seed: int):
    import scsena

    return scsena.SENAVAE(
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


def _epochs_done(model) -> int:
    history = getattr(model, "history_", None) or {}
    frame = history.get("loss_train") if isinstance(history, dict) else None
    return 0 if frame is None else int(len(frame))


def write_status(run_dir: str, status: str, epochs_done: int, max_epochs: int) -> None:
    """Record whether a seed finished (``done``) or was stopped (``interrupted``)."""
    import json

    path = os.path.join(run_dir, STATUS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"status": status, "epochs_done": epochs_done, "max_epochs": max_epochs}, fh)
    os.replace(tmp, path)


def read_status(run_dir: str) -> dict:
    """The status a seed's run recorded (``{}`` for runs written before statuses)."""
    import json

    try:
        with open(os.path.join(run_dir, STATUS_FILE)) as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _resume_command(args: argparse.Namespace) -> str:
    import shlex

    return f"scsena train --save-dir {shlex.quote(args.save_dir)} --resume"


def _resume_options(args: argparse.Namespace) -> None:
    """``--resume``: every option from the run's config.json (the run as it was started)."""
    from ._common import _read_config

    if not os.path.exists(os.path.join(args.save_dir, "config.json")):
        raise SystemExit(
            f"error: --resume needs a run in --save-dir {args.save_dir!r} (its config.json); "
            "none is there. Start the run without --resume."
        )
    config = _read_config(args.save_dir)
    for key, value in config.items():
        if key not in ("save_dir", "resume", "overwrite"):
            setattr(args, key, value)


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


class _UniqueSeeds(argparse.Action):
    """``--seeds``: refuse a seed given twice (its run directory would be written twice)."""

    def __call__(self, parser, namespace, values, option_string=None):
        twice = sorted({v for v in values if list(values).count(v) > 1})
        if twice:
            parser.error(f"argument --seeds: seed(s) {twice} given twice; give each seed once")
        setattr(namespace, self.dest, list(values))


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
    for action in train._actions:
        if action.dest == "data":  # given by config.json with --resume; checked in _train
            action.required = False
            action.help += " Required, except with --resume."
    train.add_argument(
        "--save-dir", "--out", dest="save_dir", required=True, metavar="DIR", help=_OUT_HELP
    )
    train.add_argument(
        "--overwrite", action="store_true", help="Replace a run already in --save-dir"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="Finish the run in --save-dir with its own options: seeds already done are "
        "kept, an interrupted seed continues from its last epoch, the others start",
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
    train.add_argument(
        "--normalize",
        action="store_true",
        help="Counts in X (or --layer): normalise to 10,000 per cell and log1p before "
        "training (scanpy's normalize_total and log1p)",
    )
    train.add_argument(
        "--allow-large-values",
        action="store_true",
        help="Accept values above 50 as log-normalised expression (another log scale)",
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
        "--seeds",
        type=_int_at_least(0),
        nargs="+",
        action=_UniqueSeeds,
        default=[0],
        help="One run per seed (DIR/seedN); distinct integers >= 0",
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
