"""Training plan with SENA's per-epoch alpha / beta / temperature schedules."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scvi.train import TrainingPlan

from scsena._constants import TENSORS
from scsena._presets import REFERENCE_TRAIN

from ._schedules import Schedules

#: Loss components whose epoch means the reference averages for model selection.
SELECTION_COMPONENTS = ("loss", "mmd", "mse", "kl", "l1")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or weight and was stopped.

    Attributes
    ----------
    epoch
        The epoch (0-based) whose loss or weights were not finite.
    restored_epoch
        The last epoch with finite loss and weights, whose weights the module holds
        again (``None`` when no epoch of this run was finite).
    """

    def __init__(self, message: str, epoch: int, restored_epoch: int | None):
        super().__init__(message)
        self.epoch = epoch
        self.restored_epoch = restored_epoch


class SENATrainingPlan(TrainingPlan):
    """Lightning module for :class:`~scsena.module.SENAModule`.

    Replaces scvi-tools' KL warm-up by SENA's schedules: the MMD weight ``alpha``,
    the KL weight ``beta`` and the softmax temperature ``tau`` are set per epoch.
    Logs the epoch mean of the total loss and of each component (``mmd``, ``mse``,
    ``kl``, ``l1``, and ``mean_shift`` / ``balance`` when the module uses them), with
    suffix ``_train`` (and ``_validation``), the assignment diagnostics
    ``distinct_factors`` (latent factors that are some target's argmax) and
    ``assignment_entropy`` (mean entropy of the targets' assignments at the epoch's
    temperature, in nats), and, as the reference does, keeps the weights of the best
    epoch.

    The per-batch losses are summed on the device and logged once per epoch, so a
    step costs no logging work and no device synchronisation (Lightning's per-step
    logging does Python bookkeeping for every metric at every step). Under
    data-parallel training the sums are reduced across processes.

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
    select_best_epoch
        Keep the weights of the epoch with the lowest mean of the epoch-average loss
        components (total, MMD, MSE, KL, L1) and restore them when training ends.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module,
        *,
        n_epochs: int,
        alpha_max: float = REFERENCE_TRAIN["alpha_max"],
        beta_max: float = REFERENCE_TRAIN["beta_max"],
        tau_max: float = REFERENCE_TRAIN["tau_max"],
        lr: float = REFERENCE_TRAIN["lr"],
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        seed: int | None = None,
        select_best_epoch: bool = REFERENCE_TRAIN["select_best_epoch"],
        **kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, **kwargs)
        self.schedules = Schedules(n_epochs, alpha_max, beta_max, tau_max)
        self.seed = seed
        self.select_best_epoch = select_best_epoch
        self.best_score = float("inf")
        self.best_epoch: int | None = None
        self._best_state: dict | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._components = tuple(module.loss_components())
        self._finite_state: dict | None = None
        self._finite_epoch: int | None = None

    def _optimizer_creator_fn(self, optimizer_cls):
        """Adam / AdamW with the plan's settings, as one multi-tensor update per step.

        A fused kernel on CUDA, the multi-tensor (``foreach``) form on other devices:
        the same update as the per-parameter loop, with a handful of kernel launches
        instead of several per parameter tensor.
        """

        def create(params):
            params = list(params)
            on_cuda = bool(params) and all(p.is_cuda for p in params)
            fast = {"fused": True} if on_cuda else {"foreach": True}
            return optimizer_cls(
                params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, **fast
            )

        return create

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
            loss_kwargs={"alpha": alpha, "beta": beta, "temperature": tau},
        )
        n = out.n_obs_minibatch
        extra = out.extra_metrics
        values = torch.stack([out.loss.detach()] + [extra[k].detach() for k in self._components])
        weighted = torch.cat([values.new_ones(1), values]) * n
        self._sums[mode] = weighted if mode not in self._sums else self._sums[mode] + weighted
        return out.loss

    def _log_epoch(self, mode: str) -> dict[str, float] | None:
        """Log the epoch means of ``mode`` and return them (``None`` without batches)."""
        sums = self._sums.pop(mode, None)
        if sums is None:
            return None
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        means = sums[1:] / sums[0]
        names = ("loss", *self._components)
        log = {f"{k}_{mode}": means[i] for i, k in enumerate(names)}
        self.log_dict(log, on_epoch=True, prog_bar=False)
        if mode == "train":
            # the progress bar's name for it; not logged twice (it is loss_train)
            self.log("train_loss", means[0], on_epoch=True, prog_bar=True, logger=False)
        return dict(zip(names, means.cpu().tolist(), strict=True))

    def training_step(self, batch, batch_idx):
        """One optimisation step with the epoch's schedules."""
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        """Losses on validation batches with the epoch's schedules."""
        self._step(batch, "validation")

    def on_train_start(self) -> None:
        """Keep the weights training starts from, the state a non-finite first epoch restores."""
        self._finite_state = {k: v.clone() for k, v in self.module.state_dict().items()}

    def on_train_epoch_start(self) -> None:
        """Start the epoch's loss sums afresh."""
        self._sums.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        """Start the validation loss sums afresh."""
        self._sums.pop("validation", None)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch means of the validation losses."""
        self._log_epoch("validation")

    def on_train_epoch_end(self) -> None:
        """Log the epoch means and the schedule values; keep the best epoch's weights.

        A non-finite loss or weight stops training
        (:class:`~scsena.train.NonFiniteLossError`) before the epoch's checkpoint is
        written, with the last finite epoch's weights back in the module.
        """
        means = self._log_epoch("train")
        self._check_finite(means)
        alpha, beta, tau = self.current_schedule()
        self.log_dict({"alpha": alpha, "beta": beta, "tau": tau}, on_epoch=True)
        self.log_dict(self.assignment_diagnostics(tau), on_epoch=True)
        if self.select_best_epoch and means is not None:
            score = float(np.mean([means[c] for c in SELECTION_COMPONENTS]))
            if score < self.best_score:
                self.best_score = score
                self.best_epoch = int(self.current_epoch)
                self._best_state = copy.deepcopy(self.module.state_dict())

    @torch.no_grad()
    def _check_finite(self, means: dict[str, float] | None) -> None:
        """Keep the weights of a finite epoch; restore them and raise on a non-finite one."""
        params = [p.detach() for p in self.module.parameters()]
        weights_ok = bool(torch.stack([torch.isfinite(p).all() for p in params]).all())
        bad = [k for k, v in (means or {}).items() if not np.isfinite(v)]
        if weights_ok and not bad:
            self._finite_state = {k: v.clone() for k, v in self.module.state_dict().items()}
            self._finite_epoch = int(self.current_epoch)
            return
        if self._finite_state is not None:
            self.module.load_state_dict(self._finite_state)
        what = f"the loss ({', '.join(bad)})" if bad else "the weights"
        kept = (
            f"the weights of epoch {self._finite_epoch + 1}, the last finite one"
            if self._finite_epoch is not None
            else "the weights it started this run with"
        )
        raise NonFiniteLossError(
            f"Training stopped at epoch {int(self.current_epoch) + 1}: {what} became NaN or "
            f"infinite. Likely causes: expression that is not log-normalised (values in "
            f"the thousands; fix: `sc.pp.normalize_total(adata, target_sum=1e4); "
            f"sc.pp.log1p(adata)`), or a learning rate too high for the data (lr={self.lr:g}; "
            f"the default is {REFERENCE_TRAIN['lr']:g}). The model keeps {kept} and is not "
            "marked trained.",
            int(self.current_epoch),
            self._finite_epoch,
        )

    @torch.no_grad()
    def assignment_diagnostics(self, temperature: float) -> dict[str, float]:
        """``distinct_factors`` and ``assignment_entropy`` of the targets' assignments."""
        intervention = self.module.intervention
        index = torch.arange(intervention.shift.shape[0], device=intervention.shift.device)
        bc = intervention.assignment(index, temperature)
        entropy = -(bc * bc.clamp_min(1e-12).log()).sum(1).mean()
        return {
            "distinct_factors": float(bc.argmax(1).unique().numel()),
            "assignment_entropy": float(entropy),
        }

    def restore_best_state(self) -> None:
        """Load the best epoch's weights into the module (nothing without a best epoch).

        Called when training ends, and by the model after a run that Lightning did not
        end normally (interrupted, or resumed from a finished run's checkpoint).
        """
        if self.select_best_epoch and self._best_state is not None:
            self.module.load_state_dict(self._best_state)

    def on_train_end(self) -> None:
        """Restore the best epoch's weights."""
        self.restore_best_state()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the best epoch so far, so a resumed run selects as an uninterrupted one."""
        checkpoint["scsena_best_epoch"] = {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self._best_state,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the best epoch so far."""
        best = checkpoint.get("scsena_best_epoch")
        if best is not None:
            self.best_score = best["best_score"]
            self.best_epoch = best["best_epoch"]
            self._best_state = best["best_state"]
