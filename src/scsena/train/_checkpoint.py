"""Checkpoints written at every epoch end, atomically, and their checks on resume.

``last.ckpt`` is rewritten at the end of every epoch, so a killed run loses at most the
epoch in progress; ``best.ckpt`` is the state at the best epoch so far (when the plan
selects the best epoch); ``epoch=N.ckpt`` every ``every_n_epochs`` epochs. Each file is
written under a temporary name in the same directory and renamed into place, so a kill
during a write never leaves a truncated checkpoint under a final name.

Every checkpoint records the model's targets and genes, and :func:`check_resume`
refuses to resume on data whose targets or genes differ.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint

#: Key of scsena's metadata in a Lightning checkpoint.
METADATA_KEY = "scsena"
LAST = "last.ckpt"
BEST = "best.ckpt"
_PARTIAL = ".partial"


class EpochCheckpoint(Checkpoint):
    """Write ``last.ckpt`` (every epoch), ``best.ckpt`` and ``epoch=N.ckpt`` atomically.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning calls it at the
    end of an epoch after the training plan has updated its best epoch.

    Parameters
    ----------
    dirpath
        Directory of the checkpoints (created when missing).
    every_n_epochs
        Also keep ``epoch=N.ckpt`` every this many epochs (``0`` or ``None``: never).
    targets
        The model's single targets, stored in every checkpoint.
    var_names
        The model's genes, stored in every checkpoint.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        every_n_epochs: int | None = 1,
        targets: Sequence[str] = (),
        var_names: Sequence[str] = (),
    ):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every_n_epochs = int(every_n_epochs or 0)
        self.metadata = {"targets": list(targets), "var_names": list(var_names)}

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Create the directory and remove partial files of a killed earlier write."""
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            for stale in self.dirpath.glob(f".*.ckpt{_PARTIAL}"):
                stale.unlink(missing_ok=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Write ``last.ckpt``; copy it to ``best.ckpt`` / ``epoch=N.ckpt`` when due."""
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        self._save(trainer, LAST)
        if not trainer.is_global_zero:
            return
        if getattr(pl_module, "select_best_epoch", False) and pl_module.best_epoch == epoch:
            self._copy(LAST, BEST)
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self._copy(LAST, f"epoch={epoch}.ckpt")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Record the targets and genes the checkpoint was trained on."""
        checkpoint[METADATA_KEY] = dict(self.metadata)

    def _save(self, trainer, name: str) -> None:
        partial = self.dirpath / f".{name}{_PARTIAL}"
        # the full training state; every rank takes part, rank zero writes
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.dirpath / name)

    def _copy(self, source: str, name: str) -> None:
        partial = self.dirpath / f".{name}{_PARTIAL}"
        shutil.copyfile(self.dirpath / source, partial)
        os.replace(partial, self.dirpath / name)


def read_metadata(path: str | os.PathLike) -> dict:
    """The scsena metadata of a checkpoint (``{}`` for a checkpoint without it).

    The checkpoint is read with ``weights_only=True``: tensors and plain containers
    only, no code runs.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise ValueError(
            f"{str(path)!r} is not a readable scsena training checkpoint ({err}). Pass the "
            f"`{LAST}` written by `model.train(checkpoint_dir=...)`."
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{str(path)!r} is not a Lightning training checkpoint.")
    meta = ckpt.get(METADATA_KEY)
    return dict(meta) if isinstance(meta, dict) else {}


def check_resume(path: str | os.PathLike, targets: Sequence[str], var_names: Sequence[str]):
    """Refuse to resume from a checkpoint trained on other targets or genes.

    Parameters
    ----------
    path
        The checkpoint.
    targets, var_names
        The model's single targets and genes.

    Raises
    ------
    ValueError
        When the checkpoint's targets or genes differ from the model's.
    """
    meta = read_metadata(path)
    saved = meta.get("targets")
    if saved is not None and list(saved) != list(targets):
        only_ckpt = sorted(set(saved) - set(targets))[:5]
        only_data = sorted(set(targets) - set(saved))[:5]
        raise ValueError(
            f"Checkpoint {str(path)!r} was trained on other targets ({len(saved)} targets; "
            f"only in the checkpoint: {only_ckpt}, only in the data: {only_data}); resuming "
            "would map its intervention parameters to the wrong targets. Resume on the data "
            "the checkpoint was trained on, or train from scratch (no `ckpt_path`)."
        )
    genes = meta.get("var_names")
    if genes is not None and list(genes) != list(var_names):
        raise ValueError(
            f"Checkpoint {str(path)!r} was trained on other genes or another gene order "
            f"({len(genes)} genes, the data has {len(var_names)}). Resume on the data the "
            "checkpoint was trained on, or train from scratch (no `ckpt_path`)."
        )
