"""Checkpoints written at every epoch end, atomically, and their checks on resume.

``last.ckpt`` is rewritten at the end of every epoch, so a killed run loses at most the
epoch in progress; ``best.ckpt`` is the state at the best epoch so far (when the plan
selects the best epoch); ``epoch=N.ckpt`` every ``every_n_epochs`` epochs. Each file is
written under a temporary name in the same directory and renamed into place, so a kill
during a write never leaves a truncated checkpoint under a final name.

Every checkpoint records the model's targets and genes, and :func:`check_resume`
refuses to resume on data whose targets or genes differ, or from a checkpoint without
them.

A checkpoint directory belongs to one run: a lock file (``.scsena-lock``, holding the
run's host, PID and a random token) is taken when training starts and removed when it
ends; a second run into a locked directory is refused, as is a new run into a
directory holding an earlier run's checkpoints (resuming from one of them is allowed).
A lock left by a killed run (its PID gone on this host) is taken over.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint

#: Key of scsena's metadata in a Lightning checkpoint.
METADATA_KEY = "scsena"
LAST = "last.ckpt"
BEST = "best.ckpt"
_PARTIAL = ".partial"
LOCK = ".scsena-lock"


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
    resume_from
        The checkpoint this run resumes from (``None``: a new run). A new run refuses a
        directory that holds checkpoints; a resumed one accepts its own directory.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        every_n_epochs: int | None = 1,
        targets: Sequence[str] = (),
        var_names: Sequence[str] = (),
        resume_from: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every_n_epochs = int(every_n_epochs or 0)
        self.metadata = {"targets": list(targets), "var_names": list(var_names)}
        self.resume_from = None if resume_from is None else Path(resume_from)
        self.token = secrets.token_hex(8)
        self._locked = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Take the directory's lock; refuse another run's checkpoints; drop stale partials."""
        if not trainer.is_global_zero:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        take_lock(self.dirpath, self.token)
        self._locked = True
        try:
            self._refuse_other_runs()
        except ValueError:
            self.release()
            raise
        # the lock is ours: partial files in the directory are a killed run's
        for stale in self.dirpath.glob(f".*{_PARTIAL}"):
            stale.unlink(missing_ok=True)

    def _refuse_other_runs(self) -> None:
        found = sorted(p.name for p in self.dirpath.glob("*.ckpt"))
        if not found:
            return
        own = self.resume_from is not None and (
            self.resume_from.resolve().parent == self.dirpath.resolve()
        )
        if not own:
            raise ValueError(
                f"checkpoint_dir {str(self.dirpath)!r} holds the checkpoints of another run "
                f"({', '.join(found[:4])}); a new run would mix its files with them. Resume "
                f"that run (ckpt_path={str(self.dirpath / LAST)!r}) or use another, empty "
                "directory."
            )

    def release(self) -> None:
        """Remove the directory's lock if this run holds it."""
        if self._locked:
            release_lock(self.dirpath, self.token)
            self._locked = False

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Release the lock when training ends."""
        self.release()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Release the lock when training fails or is interrupted."""
        self.release()

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
        partial = self.dirpath / f".{name}.{self.token}{_PARTIAL}"
        # the full training state; every rank takes part, rank zero writes
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.dirpath / name)

    def _copy(self, source: str, name: str) -> None:
        partial = self.dirpath / f".{name}.{self.token}{_PARTIAL}"
        shutil.copyfile(self.dirpath / source, partial)
        os.replace(partial, self.dirpath / name)


def _read_lock(path: Path) -> dict:
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return lock if isinstance(lock, dict) else {}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def take_lock(dirpath: Path, token: str) -> None:
    """Create ``dirpath/.scsena-lock`` for this run, or refuse a directory in use.

    A lock whose run is gone (its PID not alive on this host) is taken over.
    """
    path = dirpath / LOCK
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": token}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_lock(path)
            stale = held.get("host") == mine["host"] and not _alive(held.get("pid"))
            if not stale:
                who = f"PID {held.get('pid')} on {held.get('host')}" if held else "unknown"
                raise ValueError(
                    f"checkpoint_dir {str(dirpath)!r} is in use by another training run "
                    f"({who}; lock file {str(path)!r}). Give each run its own "
                    "checkpoint_dir; if no run uses it, remove the lock file."
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(mine, fh)
        return
    raise ValueError(f"Could not take the lock {str(path)!r}; another run took it first.")


def release_lock(dirpath: Path, token: str) -> None:
    """Remove ``dirpath/.scsena-lock`` if it holds ``token``."""
    path = dirpath / LOCK
    if _read_lock(path).get("token") == token:
        path.unlink(missing_ok=True)


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
        When the checkpoint's targets or genes differ from the model's, or it does not
        record them.
    """
    meta = read_metadata(path)
    if not meta.get("targets") or not meta.get("var_names"):
        raise ValueError(
            f"Checkpoint {str(path)!r} does not record the targets and genes it was trained "
            "on: it was not written by scsena's `train(checkpoint_dir=...)`, and resuming "
            "could map its parameters to the wrong targets. Resume from the `last.ckpt` "
            "that scsena wrote, or train from scratch (no `ckpt_path`)."
        )
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
