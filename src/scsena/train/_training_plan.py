"""Training plan with SENA's per-epoch alpha / beta / temperature schedules."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from scvi.train import TrainingPlan

from scsena._constants import TENSORS

from ._schedules import Schedules

#: Loss components whose epoch means the reference averages for model selection.
SELECTION_COMPONENTS = ("loss", "mmd", "mse", "kl", "l1")


class SENATrainingPlan(TrainingPlan):
    """Lightning module for :class:`~scsena.module.SENAModule`.

    Replaces scvi-tools' KL warm-up by the schedules of SPEC section 4: the MMD
    weight ``alpha``, the KL weight ``beta`` and the softmax temperature ``tau`` are
    set per epoch. Logs the total loss and each component (``mmd``, ``mse``,
    ``kl``, ``l1``) per epoch, with suffix ``_train`` (and ``_validation``).

    Parameters
    ----------
    module
        The network.
    n_epochs
        Number of epochs ``E`` the schedules span.
    alpha_max, beta_max, tau_max
        Final values of the schedules.
    lr
        Adam learning rate.
    weight_decay, eps
        Adam settings (the reference uses PyTorch's defaults: 0 and 1e-8).
    seed
        When given, the sampling noise of each batch is drawn from a generator keyed
        by ``(seed, epoch, first example of the batch)``.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module,
        *,
        n_epochs: int,
        alpha_max: float = 1.0,
        beta_max: float = 1.0,
        tau_max: float = 100.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, **kwargs)
        self.schedules = Schedules(n_epochs, alpha_max, beta_max, tau_max)
        self.seed = seed

    def _noise(self, batch) -> torch.Generator | None:
        """A generator keyed by (seed, epoch, the batch's first example).

        The sampling noise of a batch then depends on nothing else: a resumed run
        repeats an uninterrupted one, and data-parallel workers draw what a single
        process would draw for the same batches.
        """
        if self.seed is None or TENSORS.INDEX not in batch:
            return None
        first = int(batch[TENSORS.INDEX][0])
        key = (int(self.seed) * 1_000_003 + int(self.current_epoch)) * 10_000_019 + first
        device = batch[TENSORS.X_CONTROL].device
        return torch.Generator(device=device).manual_seed(key % (2**63 - 1))

    def current_schedule(self) -> tuple[float, float, float]:
        """``(alpha, beta, tau)`` of the current epoch."""
        return self.schedules.at(self.current_epoch)

    def _step(self, batch, mode: str) -> torch.Tensor:
        alpha, beta, tau = self.current_schedule()
        _, _, out = self.module(
            batch,
            inference_kwargs={"generator": self._noise(batch)},
            generative_kwargs={"temperature": tau},
            loss_kwargs={"alpha": alpha, "beta": beta},
        )
        n = out.n_obs_minibatch
        log = {f"loss_{mode}": out.loss}
        log.update({f"{k}_{mode}": v for k, v in out.extra_metrics.items()})
        self.log_dict(
            log,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            prog_bar=False,
            sync_dist=self.use_sync_dist,
        )
        if mode == "train":
            self.log(
                "train_loss",
                out.loss,
                on_step=False,
                on_epoch=True,
                prog_bar=True,
                batch_size=n,
                sync_dist=self.use_sync_dist,
            )
        return out.loss

    def training_step(self, batch, batch_idx):
        """One optimisation step with the epoch's schedules."""
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        """Losses on validation batches with the epoch's schedules."""
        self._step(batch, "validation")

    def on_train_epoch_end(self) -> None:
        """Log the schedule values of the finished epoch."""
        alpha, beta, tau = self.current_schedule()
        self.log_dict({"alpha": alpha, "beta": beta, "tau": tau}, on_epoch=True)


class BestEpochCallback(pl.Callback):
    """Keep the weights of the reference's best epoch and restore them at the end.

    The best epoch has the lowest mean of the epoch-average loss components (total,
    MMD, MSE, KL, L1), as the reference selects its model.

    Parameters
    ----------
    components
        Names of the logged epoch metrics (suffix ``_train`` added) to average.
    """

    def __init__(self, components: tuple[str, ...] = SELECTION_COMPONENTS):
        super().__init__()
        self.components = components
        self.best_score = float("inf")
        self.best_epoch: int | None = None
        self._best_state: dict | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the finished epoch and keep its weights if best so far."""
        metrics = trainer.callback_metrics
        keys = [f"{c}_train" for c in self.components]
        if not all(k in metrics for k in keys):
            return
        score = float(torch.stack([metrics[k].detach().float().cpu() for k in keys]).mean())
        if score < self.best_score:
            self.best_score = score
            self.best_epoch = trainer.current_epoch
            self._best_state = copy.deepcopy(pl_module.module.state_dict())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the best weights."""
        if self._best_state is not None:
            pl_module.module.load_state_dict(self._best_state)

    def state_dict(self) -> dict:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self._best_state,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]
        self._best_state = state_dict["best_state"]
