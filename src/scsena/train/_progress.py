"""Training progress: scvi-tools' bar in a terminal, one line per epoch elsewhere.

A progress bar redrawn in place is unreadable in a log file, a CI job or a notebook
saved as text, and an absent one leaves a long run silent. :func:`progress_callbacks`
keeps scvi-tools' bar in a terminal and otherwise replaces it by :class:`EpochLines`,
which prints one line per finished epoch to standard error.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from lightning.pytorch.callbacks import Callback

#: Logged epoch means shown on each line, in this order: (key, label).
_SHOWN = (
    ("mse_train", "mse"),
    ("mmd_train", "mmd"),
    ("alpha", "alpha"),
    ("kl_train", "kl"),
    ("beta", "beta"),
    ("loss_train", "loss"),
)
#: Printed once, before the first epoch's line.
LEGEND = (
    "loss = mse + alpha x mmd + beta x kl + L1 of the DAG (+ the default's extra terms); "
    "alpha and beta grow over the run (SENA's schedules), so loss can rise while mse, mmd "
    "and kl fall"
)


class EpochLines(Callback):
    """Print one line per finished training epoch: epoch, loss parts and elapsed time.

    Epochs are counted from 1 (``epoch 1/100`` is the first), as in
    :func:`scsena.pl.training_curves`; ``model.history`` is indexed from 0, as
    scvi-tools indexes it. A legend line first says how the parts make the loss.

    Parameters
    ----------
    stream
        Where to write (default: standard error at the time of writing, like
        progress bars).

    Notes
    -----
    Lightning calls callbacks' ``on_train_epoch_end`` before the training plan logs
    the epoch means, so each line is printed when the next epoch starts, and the last
    one when training ends.
    """

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self._stream = stream
        self._start = time.perf_counter()
        self._printed = 0

    def on_train_start(self, trainer, pl_module) -> None:
        """Start the clock and say what the numbers are."""
        self._start = time.perf_counter()
        self._printed = trainer.current_epoch  # epochs done before (a resumed run)
        if trainer.is_global_zero:
            print(LEGEND, file=self._stream or sys.stderr, flush=True)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Report the epoch that just ended."""
        self._report(trainer, trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        """Report the last epoch."""
        self._report(trainer, trainer.current_epoch)

    def _report(self, trainer, finished: int) -> None:
        """Print the line of the ``finished``-th epoch (1-based), once."""
        if finished <= self._printed or not trainer.is_global_zero:
            return
        self._printed = finished
        metrics: dict[str, Any] = trainer.callback_metrics
        parts = [f"epoch {finished}/{trainer.max_epochs}"]
        parts += [f"{label} {float(metrics[key]):.4g}" for key, label in _SHOWN if key in metrics]
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        print("  ".join(parts), file=self._stream or sys.stderr, flush=True)


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def progress_callbacks(trainer_kwargs: dict[str, Any]) -> list[Callback]:
    """How training shows progress, by default on.

    With ``enable_progress_bar`` true (the default) and standard error a terminal,
    scvi-tools' progress bar is kept and nothing is added; otherwise (a pipe, a file,
    a notebook) the bar is switched off in ``trainer_kwargs`` and an
    :class:`EpochLines` callback is returned. ``enable_progress_bar=False`` shows
    nothing.

    Parameters
    ----------
    trainer_kwargs
        The Lightning trainer's keyword arguments, changed in place.

    Returns
    -------
    The callbacks to add.
    """
    if not trainer_kwargs.get("enable_progress_bar", True) or _is_terminal(sys.stderr):
        return []
    trainer_kwargs["enable_progress_bar"] = False
    return [EpochLines()]
