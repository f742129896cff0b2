"""Training of SENAVAE: the run, interruptions, untrained targets and fold losses."""

from __future__ import annotations

import logging
import signal
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from scsena._constants import (
    FOLD_DOUBLE,
    FOLD_TEST,
    FOLD_TRAIN,
    TENSORS,
)
from scsena._presets import TRAIN_PRESETS, resolve
from scsena._runtime import cpu_threads, training_run
from scsena.train import (
    EpochCheckpoint,
    NonFiniteLossError,
    ScheduledEarlyStopping,
    check_resume,
    make_loader,
    progress_callbacks,
)

logger = logging.getLogger(__name__)


class _InterruptWatch(pl.Callback):
    """Remember the exception that stopped training (Lightning hides Ctrl-C)."""

    def __init__(self):
        self.exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


def _restore_sigint(handler) -> None:
    """Lightning ignores Ctrl-C once it caught one; give the handler back."""
    if signal.getsignal(signal.SIGINT) is handler or handler is None:
        return
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        pass


def _drop_scvi_checkpoint(trainer, ours: Sequence) -> None:
    """Remove the ``SaveCheckpoint`` scvi-tools' trainer adds when checkpointing is on.

    It monitors ``validation_loss`` (a metric scsena does not log) and writes full
    model copies under ``./scvi_log``; scsena's own checkpoints go to
    ``checkpoint_dir``. Callbacks the user passed are kept.
    """
    from scvi.train import SaveCheckpoint

    trainer.callbacks = [
        c for c in trainer.callbacks if not isinstance(c, SaveCheckpoint) or c in ours
    ]


def _mlflow_logger(checkpoint_dir: str | Path | None):
    """An MLflow logger that writes where the user said, never to the current directory.

    The store goes to the checkpoint directory, else to a new temporary directory
    (with a warning).
    """
    from scsena.tracking import mlflow_logger

    if checkpoint_dir is not None:
        return mlflow_logger(directory=checkpoint_dir)
    directory = tempfile.mkdtemp(prefix="scsena-mlflow-")
    warnings.warn(
        f"log_to='mlflow' without checkpoint_dir: the MLflow store is written to the "
        f"temporary directory {directory!r}. Pass `checkpoint_dir=` to keep it with the "
        "run, or `logger=scsena.tracking.mlflow_logger(directory=...)` (or "
        "`tracking_uri=...` for a server).",
        UserWarning,
        stacklevel=3,
    )
    return mlflow_logger(directory=directory)


class TrainingMixin:
    """Training and the losses on folds of :class:`~scsena.SENAVAE`."""

    def _note_untrained(self, train_ds, batch_size: int) -> None:
        """Record (and warn about) targets with fewer training cells than one batch.

        Batches are perturbation-pure and incomplete ones are dropped, so such a
        target is never trained: its intervention parameters stay at initialisation.
        """
        codes = train_ds.codes.numpy()
        single = codes[codes[:, 1] < 0, 0]
        counts = np.bincount(single[single >= 0], minlength=len(self.targets_))
        self.untrained_targets_ = [t for t, n in zip(self.targets_, counts) if n < batch_size]
        if self.untrained_targets_:
            shown = ", ".join(
                f"{t} ({counts[self.targets_.index(t)]})" for t in self.untrained_targets_[:10]
            )
            warnings.warn(
                f"{len(self.untrained_targets_)} target(s) have fewer training cells than "
                f"batch_size={batch_size} and are never trained (their parameters stay at "
                f"initialisation): {shown}{' ...' if len(self.untrained_targets_) > 10 else ''}"
                ". Predictions involving them are flagged (`obs['untrained_target']`). Lower "
                "`batch_size`, or remove these targets before setup.",
                UserWarning,
                stacklevel=3,
            )

    @training_run
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        alpha_max: float | None = None,
        beta_max: float | None = None,
        tau_max: float | None = None,
        grad_clip: float | None = None,
        select_best_epoch: bool | None = None,
        calibrate: bool | None = None,
        validate_on_test: bool = False,
        validation_size: float | None = None,
        early_stopping: bool = False,
        early_stopping_patience: int = 10,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int | None = None,
        num_workers: int = 0,
        threads: int | Literal["auto"] = "auto",
        data_on_device: bool | Literal["auto"] = "auto",
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1,
        ckpt_path: str | Path | None = None,
        log_to: Literal["mlflow"] | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train with SENA's schedules on control and single-perturbation cells.

        Arguments left at ``None`` take the model preset's value (both presets: 100
        epochs, batch 32, lr 1e-3, ``alpha_max=1``, ``beta_max=1``, ``tau_max=100``;
        best-epoch selection in ``"reference"``, the last epoch in ``"scsena"``,
        whose extra loss term grows with ``alpha`` and would make the reference's
        criterion pick an epoch before the MMD is switched on).

        Parameters
        ----------
        max_epochs
            Epochs ``E``; the schedules span them (reference 100).
        batch_size
            Perturbation-pure batch size (reference 32).
        lr
            Adam learning rate (reference 1e-3).
        alpha_max, beta_max, tau_max
            Final MMD weight, KL weight and temperature (SENA: 1, 1, 100;
            discrepancy-VAE: 10, 2, 5).
        grad_clip
            Clip gradient values at this magnitude (reference option: 0.5).
        select_best_epoch
            Keep the weights of the epoch with the lowest mean of the epoch-average
            loss components (total, MMD, MSE, KL, L1), as the reference does;
            ``False`` keeps the last epoch.
        calibrate
            After training, calibrate predictions with :meth:`calibrate_predictions`
            (default preset ``True``, reference ``False``); ``False`` removes a
            previous calibration.
        validate_on_test
            Also compute the losses on the test fold each epoch (``*_validation``).
        validation_size
            Hold out this share of each perturbation's training-fold cells (drawn with
            ``seed``; never trained on) and compute the losses on them every epoch:
            ``model.history["loss_validation"]``, ``["mmd_validation"]`` ... as
            scvi-tools' ``validation_size`` does. ``None``: train on every
            training-fold cell.
        early_stopping
            Stop when the validation MMD (``mmd_validation``, needs ``validation_size``)
            has not improved for ``early_stopping_patience`` epochs, counting from the
            epoch SENA's MMD weight reaches its final value (half-way through
            ``max_epochs``). The KL weight and the temperature are then short of their
            final values, as the schedules span ``max_epochs``.
        early_stopping_patience
            Epochs without improvement before stopping.
        accelerator, devices
            Lightning accelerator and devices (``"auto"``: a GPU when present).
        seed
            Seed of the batch order, control partners and sampling noise (defaults
            to the model's seed).
        num_workers
            Data-loading worker processes.
        threads
            Torch CPU threads while training (restored afterwards). ``"auto"``:
            ``scvi.settings.num_threads`` when set; torch's own count when
            ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is set or training runs on a GPU;
            otherwise the cores other work leaves free (the number of cores minus the
            1-minute load average, at least 1): threads competing with other processes
            cost several times the step (docs/benchmarks.md). An integer sets it.
        data_on_device
            Keep the expression rows of the training cells on the training device and
            gather batches there (no expression data crosses from the host per step).
            ``"auto"``: on a CUDA GPU when the cells fit in half of its free memory as
            a dense matrix (in-memory data, ``num_workers=0``); ``True`` forces it,
            ``False`` reads every batch on the host.
        checkpoint_dir
            Write Lightning checkpoints there: ``last.ckpt`` at the end of every epoch,
            ``best.ckpt`` at each new best epoch (with best-epoch selection) and
            ``epoch=N.ckpt`` every ``checkpoint_every`` epochs, each atomically
            (written under a temporary name, then renamed). Nothing else is written
            anywhere, except the MLflow store with ``log_to="mlflow"``.
        checkpoint_every
            Epochs between the kept ``epoch=N.ckpt`` files (``last.ckpt`` is rewritten
            every epoch regardless).
        ckpt_path
            Resume from this checkpoint (e.g. ``checkpoint_dir / "last.ckpt"``); with
            the same data, seed and arguments the result equals an uninterrupted run.
            A checkpoint trained on other targets or genes is refused.
        log_to
            ``"mlflow"``: log to MLflow through Lightning's ``MLFlowLogger`` in a local
            store (see :func:`scsena.tracking.mlflow_logger`) in ``checkpoint_dir``, or
            in a new temporary directory (named in a warning) without one; or pass
            ``logger=``.
        plan_kwargs
            Arguments of :class:`~scsena.train.SENATrainingPlan`, merged with this
            method's as scvi-tools does: ``lr``, ``alpha_max``, ``beta_max``,
            ``tau_max`` or ``select_best_epoch`` given here act as if given to
            ``train`` (the same key given both ways with different values is an
            error); ``n_epochs`` and ``seed`` come from ``max_epochs`` and ``seed``.
        **trainer_kwargs
            Passed to the Lightning trainer (``logger``, ``callbacks``,
            ``enable_checkpointing``, ``ckpt_path`` ...). ``enable_progress_bar``
            (default ``True``) shows scvi-tools' progress bar in a terminal and one
            line per epoch (epoch, loss, MMD, elapsed seconds) on standard error
            elsewhere (a log file, a pipe, a notebook); ``False`` trains silently.

        Notes
        -----
        Ctrl-C stops training cleanly: the model keeps the best epoch's weights so far
        (with best-epoch selection), ``training_interrupted_`` is set to ``True`` and
        ``is_trained_`` to ``False``, and a warning says how to resume. SIGTERM does the
        same, then ends the process. Targets with fewer training cells than
        ``batch_size`` are never in a batch, hence never trained: a warning names them
        and ``untrained_targets_`` lists them (their predictions are flagged).
        """
        _refuse_scvi_split_arguments(trainer_kwargs)
        given = {
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "lr": lr,
            "alpha_max": alpha_max,
            "beta_max": beta_max,
            "tau_max": tau_max,
            "select_best_epoch": select_best_epoch,
            "calibrate": calibrate,
        }
        plan_kwargs = _merge_plan_kwargs(given, plan_kwargs)
        settings = resolve(TRAIN_PRESETS[self.preset_], given)
        max_epochs, batch_size, lr = (settings[k] for k in ("max_epochs", "batch_size", "lr"))
        alpha_max, beta_max, tau_max = (settings[k] for k in ("alpha_max", "beta_max", "tau_max"))
        select_best_epoch, calibrate = settings["select_best_epoch"], settings["calibrate"]
        seed = self.seed_ if seed is None else int(seed)
        pl.seed_everything(seed, workers=True, verbose=False)
        stopping = _validation_callbacks(
            validation_size, early_stopping, early_stopping_patience, validate_on_test, max_epochs
        )
        datamodule = self.data_splitter().data_module(
            batch_size, seed, validate_on_test, num_workers, data_on_device, validation_size
        )
        self._note_untrained(datamodule.train_dataset, batch_size)
        plan = self._training_plan_cls(
            self.module,
            n_epochs=max_epochs,
            alpha_max=alpha_max,
            beta_max=beta_max,
            tau_max=tau_max,
            lr=lr,
            seed=seed,
            select_best_epoch=select_best_epoch,
            **plan_kwargs,
        )
        callbacks = self._callbacks(trainer_kwargs, checkpoint_dir, checkpoint_every, ckpt_path)
        validate = validate_on_test or bool(validation_size)
        _trainer_settings(trainer_kwargs, log_to, checkpoint_dir, grad_clip, validate, max_epochs)
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=datamodule,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=[*callbacks, *stopping],  # scvi-tools' trainer appends to the list
            **trainer_kwargs,
        )
        _drop_scvi_checkpoint(runner.trainer, callbacks)
        return self._train_and_finish(runner, plan, checkpoint_dir, threads, calibrate)

    def _train_and_finish(self, runner, plan, checkpoint_dir, threads, calibrate: bool):
        """Train with the chosen CPU threads, then keep the best epoch and calibrate."""
        self.term_orientation_ = None  # new weights: orient the activities again
        self.module.train()
        on_gpu = runner.trainer.accelerator.__class__.__name__ != "CPUAccelerator"
        with cpu_threads(threads, on_gpu):
            result = self._run_training(runner, plan, checkpoint_dir)
        self.best_epoch_ = plan.best_epoch if plan.select_best_epoch else None
        self.module.eval()
        self.shift_calibration_ = None
        if calibrate and not self.training_interrupted_:
            self.calibrate_predictions()
        return result

    def _callbacks(self, trainer_kwargs: dict, checkpoint_dir, checkpoint_every, ckpt_path) -> list:
        """The user's callbacks, progress reporting, and epoch checkpoints or a resume."""
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        callbacks.extend(progress_callbacks(trainer_kwargs))
        if checkpoint_dir is not None:
            callbacks.append(
                EpochCheckpoint(
                    checkpoint_dir,
                    checkpoint_every,
                    self.targets_,
                    self._model_var_names(),
                    resume_from=ckpt_path,
                )
            )
            trainer_kwargs["enable_checkpointing"] = True
            trainer_kwargs.setdefault("default_root_dir", str(checkpoint_dir))
        if ckpt_path is not None:
            if not Path(ckpt_path).exists():
                raise FileNotFoundError(f"Checkpoint {str(ckpt_path)!r} does not exist.")
            check_resume(ckpt_path, self.targets_, self._model_var_names())
            trainer_kwargs["ckpt_path"] = str(ckpt_path)
        return callbacks

    def _run_training(self, runner, plan, checkpoint_dir: str | Path | None):
        """Run ``runner``; on Ctrl-C or SIGTERM keep the best weights so far and say so.

        Lightning turns Ctrl-C into ``SystemExit(1)`` and SIGTERM into
        ``SIGTERMException`` (a ``SystemExit``) after its own clean-up. The model then
        holds the best epoch's weights so far, ``training_interrupted_`` is ``True`` and
        ``is_trained_`` ``False``; after Ctrl-C ``train`` returns, after SIGTERM the
        exception is raised again so the process still ends.
        """
        self.training_interrupted_ = False
        watch = _InterruptWatch()
        runner.trainer.callbacks.append(watch)
        sigint = signal.getsignal(signal.SIGINT)
        try:
            result = runner()
        except NonFiniteLossError:
            self.is_trained_ = False
            raise
        except SystemExit as err:
            sigterm = isinstance(err, SIGTERMException)
            if not (sigterm or isinstance(watch.exception, KeyboardInterrupt)):
                raise
            self._interrupted(runner.trainer, plan, checkpoint_dir, sigterm)
            if sigterm:
                raise
            return None
        finally:
            _restore_sigint(sigint)
        # a run resumed from a finished run's checkpoint never calls on_train_end
        plan.restore_best_state()
        self._warn_shared_factor()
        return result

    def _warn_shared_factor(self) -> None:
        """Warn when more than a quarter of the targets act on the same latent factor."""
        counts = self.get_intervention_targets()["latent"].value_counts()
        n_targets = len(self.targets_)
        factor, n = str(counts.index[0]), int(counts.iloc[0])
        if n >= 2 and n > n_targets / 4:
            warnings.warn(
                f"{n} of {n_targets} perturbation targets act on the same latent factor "
                f"{factor}: their predicted responses move along one direction and a double "
                "of two of them shifts that factor twice. Use the default preset "
                "(preset='scsena': assignment='table'), n_latent >= the number of targets, "
                "or lambda_balance > 0; see model.history['distinct_factors'].",
                UserWarning,
                stacklevel=3,
            )

    def _interrupted(self, trainer, plan, checkpoint_dir, sigterm: bool) -> None:
        plan.restore_best_state()
        self.module.eval()
        self.is_trained_ = False
        self.training_interrupted_ = True
        self.best_epoch_ = plan.best_epoch if plan.select_best_epoch else None
        kept = (
            f"the weights of the best epoch so far (epoch {plan.best_epoch})"
            if self.best_epoch_ is not None
            else "the weights of the interrupted epoch"
        )
        if checkpoint_dir is not None:
            resume = (
                "Resume with the same arguments plus "
                f"`ckpt_path={str(Path(checkpoint_dir) / 'last.ckpt')!r}`."
            )
        else:
            resume = "Pass `checkpoint_dir=` to make a run resumable."
        message = (
            f"Training {'stopped by SIGTERM' if sigterm else 'interrupted'} during epoch "
            f"{trainer.current_epoch} of {trainer.max_epochs}: the model is partly trained "
            f"(`training_interrupted_` is True) and holds {kept}. {resume}"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    @torch.inference_mode()
    def get_fold_losses(
        self,
        fold: Literal["train", "test", "double"] = "double",
        adata: ad.AnnData | None = None,
        temperature: float = 1000.0,
        batch_size: int = 32,
        seed: int = 0,
        protocol: Literal["per_batch", "published"] = "per_batch",
        chunk_batches: int = 10,
    ) -> pd.DataFrame:
        """The reference evaluation: losses on perturbation-pure batches of one fold.

        Each batch's cells are predicted from randomly paired control cells (doubles
        through the two-target causal layer); the losses are the MMD (training kernel)
        between predicted and real cells, the MSE of the control reconstruction, the
        KL and the DAG's L1.

        Parameters
        ----------
        fold
            ``"train"``, ``"test"`` or ``"double"``.
        adata
            Registered AnnData (default: the model's).
        temperature
            Inference temperature (reference 1000).
        batch_size
            Cells per batch (reference 32).
        seed
            Seed of the control partners, the batch order and the sampling noise.
        protocol
            ``"per_batch"``: one value per batch of 32 cells (batches in a fixed
            order, the last one of a perturbation may be smaller), averaged per
            perturbation weighted by batch size. ``"published"``: the published
            evaluation loop exactly: batches in shuffled order with each
            perturbation's incomplete last batch dropped; whenever the batch index
            ``i`` (0-based) is a multiple of ``chunk_batches``, the batches accumulated
            so far (batch 0 alone, then batches 1-10, 11-20, ...; perturbations mixed)
            are stacked and their losses computed; batches after the last multiple are
            dropped. The reported number is the mean over chunks. The per-batch MMD is
            a different, larger quantity on the same model.
        chunk_batches
            ``K`` of the published protocol (10).

        Returns
        -------
        ``"per_batch"``: one row per perturbation: ``perturbation``, ``n_cells``,
        ``mmd``, ``mse``, ``kl``, ``l1``. ``"published"``: one row per chunk:
        ``chunk``, ``n_cells``, ``mmd``, ``mse``, ``kl``, ``l1``.
        """
        if fold not in (FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE):
            raise ValueError(f"fold must be 'train', 'test' or 'double', got {fold!r}.")
        if protocol not in ("per_batch", "published"):
            raise ValueError(f"protocol must be 'per_batch' or 'published', got {protocol!r}.")
        if int(chunk_batches) < 1:
            raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}.")
        published = protocol == "published"
        key = "chunk" if published else "perturbation"
        empty = pd.DataFrame(columns=[key, "n_cells", "mmd", "mse", "kl", "l1"])
        ds = self.data_splitter(adata).fold_dataset([fold], seed)
        if len(ds) == 0:
            return empty
        loader = make_loader(ds, batch_size, shuffle=published, drop_last=published, seed=seed)
        self.module.eval()
        rows, stack = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i, batch in enumerate(loader):
                parts = self._loss_inputs(batch, temperature)
                if not published:
                    code = batch[TENSORS.CODES][0].tolist()
                    label = self.delimiter_.join(self.targets_[c] for c in code if c >= 0)
                    rows.append({"perturbation": label, **self._losses(parts, temperature)})
                    continue
                stack.append(parts)
                if i % int(chunk_batches) == 0:
                    stacked = tuple(
                        {k: torch.cat([p[j][k] for p in stack]) for k in stack[0][j]}
                        for j in range(3)
                    )
                    rows.append({"chunk": len(rows), **self._losses(stacked, temperature)})
                    stack = []
        if published:
            return pd.DataFrame(rows, columns=empty.columns)
        df = pd.DataFrame(rows)
        out = []
        for label, g in df.groupby("perturbation", sort=True):
            w = g["n_cells"].to_numpy(dtype=float)
            out.append(
                {
                    "perturbation": label,
                    "n_cells": int(w.sum()),
                    **{k: float(np.average(g[k], weights=w)) for k in ("mmd", "mse", "kl")},
                    "l1": float(g["l1"].iloc[0]),
                }
            )
        return pd.DataFrame(out)

    def _loss_inputs(self, batch: dict, temperature: float) -> tuple[dict, dict, dict]:
        """The module's loss inputs on one batch: tensors, inference and generative outputs."""
        x = batch[TENSORS.X_CONTROL].to(self.device)
        tensors = {TENSORS.X_CONTROL: x, TENSORS.Y: batch[TENSORS.Y].to(self.device)}
        inference = self.module.inference(x)
        codes = batch[TENSORS.CODES].to(self.device)
        covariates = batch.get(TENSORS.COVARIATES)
        if covariates is not None:
            covariates = covariates.to(self.device)
        generative = self.module.generative(
            inference["z"], codes, temperature, x=x, covariates=covariates
        )
        return (
            tensors,
            {k: inference[k] for k in ("mu", "var")},
            {k: generative[k] for k in ("y_hat", "x_hat")},
        )

    def _losses(self, parts: tuple[dict, dict, dict], temperature: float) -> dict[str, float]:
        """MMD, MSE, KL and L1 as :meth:`~scsena.module.SENAModule.loss` computes them."""
        out = self.module.loss(*parts, temperature=temperature)
        metrics = {k: float(out.extra_metrics[k]) for k in ("mmd", "mse", "kl", "l1")}
        return {"n_cells": int(out.n_obs_minibatch), **metrics}


def _trainer_settings(
    trainer_kwargs: dict, log_to, checkpoint_dir, grad_clip, validate: bool, max_epochs: int
) -> None:
    """Logger (MLflow, always with the in-memory history), clipping and validation."""
    if log_to == "mlflow":
        trainer_kwargs["logger"] = _mlflow_logger(checkpoint_dir)
    elif log_to is not None:
        raise ValueError(f"log_to must be 'mlflow' or None, got {log_to!r}.")
    _keep_history(trainer_kwargs)
    if grad_clip is not None:
        trainer_kwargs.setdefault("gradient_clip_val", grad_clip)
        trainer_kwargs.setdefault("gradient_clip_algorithm", "value")
    if trainer_kwargs.get("check_val_every_n_epoch") is None:  # never, without validation
        trainer_kwargs["check_val_every_n_epoch"] = 1 if validate else max_epochs + 1
    # our batch sampler shards perturbation-pure chunks across data-parallel workers
    trainer_kwargs.setdefault("use_distributed_sampler", False)


#: scvi-tools' usual ``train`` arguments that have no meaning here, and what to use.
_SCVI_ONLY_ARGUMENTS = {
    "train_size": "the folds are fixed when the model is built: pass heldout= and "
    "test_fraction= to SENAVAE(...); training uses every train-fold cell",
    "shuffle_set_split": "the folds are fixed when the model is built (seed=, heldout=)",
    "datasplitter_kwargs": "batches are perturbation-pure and built by scsena's data "
    "splitter (batch_size=, num_workers=, data_on_device=)",
    "load_sparse_tensor": "batches are gathered from the matrix as it is (data_on_device= "
    "keeps them on the GPU)",
}


def _validation_callbacks(
    validation_size, early_stopping: bool, patience: int, validate_on_test: bool, max_epochs: int
) -> list:
    """Check the validation arguments; the early-stopping callback when asked for."""
    if validation_size is not None:
        ok = isinstance(validation_size, (int, float)) and not isinstance(validation_size, bool)
        if not ok or not 0 < validation_size < 1:
            raise ValueError(
                f"`validation_size` must be a share between 0 and 1 (e.g. 0.1), got "
                f"{validation_size!r}."
            )
        if validate_on_test:
            raise ValueError(
                "Pass either `validation_size` (a share of the training cells) or "
                "`validate_on_test=True` (the test fold), not both."
            )
    if not early_stopping:
        return []
    if not validation_size:
        raise ValueError(
            "`early_stopping=True` needs validation cells: pass `validation_size` (e.g. 0.1)."
        )
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"`early_stopping_patience` must be a positive integer, got {patience!r}.")
    start = min(max(max_epochs // 2, 5), max_epochs - 1)  # the MMD weight is final from here
    return [ScheduledEarlyStopping(start, patience)]


def _refuse_scvi_split_arguments(trainer_kwargs: dict) -> None:
    """A clear error for scvi-tools ``train`` arguments that scsena does not take."""
    for name, instead in _SCVI_ONLY_ARGUMENTS.items():
        if name in trainer_kwargs:
            raise TypeError(f"SENAVAE.train does not take {name}=: {instead}.")


def _keep_history(trainer_kwargs: dict) -> None:
    """Put scvi-tools' in-memory logger first beside a user's logger(s) (in place).

    scvi-tools fills ``model.history`` from the trainer's first logger, so with only an
    MLflow (or other) logger the history would stay empty; ``logger=False`` (no
    logging at all) is left as it is.
    """
    from lightning.pytorch.loggers import Logger
    from scvi.train._logger import SimpleLogger

    given = trainer_kwargs.get("logger")
    loggers = given if isinstance(given, list | tuple) else [given]
    if given is None or not all(isinstance(lg, Logger) for lg in loggers):
        return
    if not any(isinstance(lg, SimpleLogger) for lg in loggers):
        trainer_kwargs["logger"] = [SimpleLogger(), *loggers]


def _merge_plan_kwargs(given: dict, plan_kwargs: dict | None) -> dict:
    """Move ``train``'s own arguments out of ``plan_kwargs`` into ``given`` (in place).

    Returns the remaining plan arguments. A key given both ways with different values
    is an error naming both.
    """
    rest = dict(plan_kwargs or {})
    for key in ("n_epochs", "seed"):
        if key in rest:
            name = "max_epochs" if key == "n_epochs" else "seed"
            raise ValueError(
                f"plan_kwargs[{key!r}] is set by train's {name!r}; pass it there instead."
            )
    for key in [k for k in rest if k in given and k not in ("max_epochs", "batch_size")]:
        value = rest.pop(key)
        if given[key] is not None and given[key] != value:
            raise ValueError(
                f"{key} is given twice: {key}={given[key]!r} and plan_kwargs[{key!r}]="
                f"{value!r}; pass it once."
            )
        given[key] = value
    return rest
