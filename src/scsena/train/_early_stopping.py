"""Early stopping that waits for SENA's MMD weight to reach its final value."""

from __future__ import annotations

from lightning.pytorch.callbacks import EarlyStopping

#: What early stopping watches: the MMD between predicted and held-out validation cells,
#: unweighted (the total loss changes scale with the schedules until the last epoch).
MONITOR = "mmd_validation"


class ScheduledEarlyStopping(EarlyStopping):
    """Early stopping on the validation MMD, counting only from ``start_epoch`` (0-based).

    Lightning's ``EarlyStopping`` with ``monitor="mmd_validation"``.
    Before ``start_epoch`` SENA's MMD weight is still rising, and the MMD is hardly
    trained; stopping then would keep a model whose predictions were never fitted.

    Parameters
    ----------
    start_epoch
        First epoch whose validation MMD counts (the epoch the MMD weight reaches its
        final value).
    patience
        Validation checks without improvement before stopping.
    """

    def __init__(self, start_epoch: int, patience: int = 10):
        super().__init__(monitor=MONITOR, mode="min", patience=patience, strict=True)
        self.start_epoch = int(start_epoch)

    def _run_early_stopping_check(self, trainer) -> None:
        if trainer.current_epoch < self.start_epoch:
            return
        super()._run_early_stopping_check(trainer)
