"""Nothing is lost when training is interrupted (killed, Ctrl-C, SIGTERM) or resumed.

Each test name below is referenced from docs/reliability.md.
"""

import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import scsena
from conftest import TRAIN_KW, toy_adata

KW = {k: v for k, v in TRAIN_KW.items() if k != "enable_checkpointing"}
KW.update(batch_size=16, max_epochs=6, select_best_epoch=True)


def _equal_state(a, b):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


@contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Raise(pl.Callback):
    """Raise ``exc`` at the second batch of epoch ``epoch``."""

    def __init__(self, epoch, exc):
        self.epoch, self.exc = epoch, exc

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise self.exc()


class _Sigterm(pl.Callback):
    """Send SIGTERM to this process at the second batch of epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)


class _StopAfter(pl.Callback):
    def __init__(self, n):
        self.n = n

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.n:
            trainer.should_stop = True


def _setup(adata=None):
    a = toy_adata() if adata is None else adata
    scsena.SENAVAE.setup_anndata(a)
    return a


# a training run in its own process, killed with SIGKILL during epoch 3 of 6
_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.filterwarnings("ignore")
    import anndata as ad, lightning.pytorch as pl, torch
    import scsena

    torch.set_num_threads(1)
    data, ckpt_dir = sys.argv[1], sys.argv[2]

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 3 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    a = ad.read_h5ad(data)
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a, seed=2)
    model.train(max_epochs=6, batch_size=16, enable_progress_bar=False,
                enable_model_summary=False, logger=False, checkpoint_dir=ckpt_dir,
                callbacks=[Kill()])
    """
)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    data, ck, cwd = tmp_path / "data.h5ad", tmp_path / "ck", tmp_path / "cwd"
    cwd.mkdir()
    toy_adata().write_h5ad(data)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(data), str(ck)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = ck / "last.ckpt"
    assert last.exists()
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 2
    assert list(cwd.iterdir()) == []  # nothing written to the current directory
    with _one_thread():
        full = scsena.SENAVAE(_setup(ad.read_h5ad(data)), seed=2)
        full.train(**KW)
        resumed = scsena.SENAVAE(_setup(ad.read_h5ad(data)), seed=2)
        resumed.train(**KW, ckpt_path=last)
    _equal_state(resumed, full)
    assert resumed.best_epoch_ == full.best_epoch_
    p_full = full.predict_perturbation(["A", "A,B"], n_cells=20, seed=1)
    p_res = resumed.predict_perturbation(["A", "A,B"], n_cells=20, seed=1)
    np.testing.assert_array_equal(p_res.X, p_full.X)


def test_checkpoint_written_every_epoch_only_where_asked(tmp_path, monkeypatch):
    cwd, ck = tmp_path / "cwd", tmp_path / "ck"
    cwd.mkdir()
    ck.mkdir()
    (ck / ".last.ckpt.partial").write_bytes(b"left by a killed write")
    monkeypatch.chdir(cwd)
    a = _setup()
    written = []

    class Look(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if (ck / "last.ckpt").exists():
                written.append(torch.load(ck / "last.ckpt", weights_only=True)["epoch"])

    model = scsena.SENAVAE(a, seed=2)
    model.train(**dict(KW, max_epochs=3), checkpoint_dir=ck, callbacks=[Look()])
    assert written == [0, 1]  # last.ckpt rewritten at the end of every epoch
    names = sorted(p.name for p in ck.iterdir())
    assert names == ["best.ckpt", "epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"]
    best = torch.load(ck / "best.ckpt", weights_only=True)
    assert best["epoch"] == model.best_epoch_
    assert list(cwd.iterdir()) == []  # no ./scvi_log, no stray model copies


def test_ctrl_c_keeps_best_weights_and_says_how_to_resume(tmp_path):
    a = _setup()
    kw = dict(KW, max_epochs=4)
    ref = scsena.SENAVAE(a, seed=2)  # the same run, stopped cleanly after 2 epochs
    ref.train(**kw, callbacks=[_StopAfter(2)])
    model = scsena.SENAVAE(a, seed=2)
    with pytest.warns(UserWarning, match=r"interrupted during epoch 2 of 4.*ckpt_path="):
        model.train(**kw, checkpoint_dir=tmp_path / "ck", callbacks=[_Raise(2, KeyboardInterrupt)])
    assert model.training_interrupted_ and not model.is_trained_
    assert model.best_epoch_ == ref.best_epoch_
    _equal_state(model, ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model.train(**kw, ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert model.is_trained_ and not model.training_interrupted_


def test_sigterm_keeps_best_weights_with_clear_message(tmp_path):
    a = _setup()
    kw = dict(KW, max_epochs=4)
    model = scsena.SENAVAE(a, seed=2)
    with (
        pytest.warns(UserWarning, match=r"stopped by SIGTERM during epoch 2 of 4.*ckpt_path="),
        pytest.raises(SystemExit),
    ):
        model.train(**kw, checkpoint_dir=tmp_path / "ck", callbacks=[_Sigterm(2)])
    assert model.training_interrupted_ and model.best_epoch_ is not None


def test_resume_finished_run_restores_best_weights(tmp_path):
    a = _setup()
    full = scsena.SENAVAE(a, seed=2)
    full.train(**KW, checkpoint_dir=tmp_path / "ck")
    assert full.best_epoch_ < KW["max_epochs"] - 1  # best weights differ from the last ones
    again = scsena.SENAVAE(a, seed=2)
    again.train(**KW, ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert again.best_epoch_ == full.best_epoch_
    _equal_state(again, full)


def test_checkpoint_with_validate_on_test(tmp_path):
    a = _setup()
    model = scsena.SENAVAE(a, seed=2)
    model.train(**dict(KW, max_epochs=2), checkpoint_dir=tmp_path / "ck", validate_on_test=True)
    assert (tmp_path / "ck" / "last.ckpt").exists()
    assert model.is_trained_


def test_mlflow_writes_only_where_asked(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a = _setup()
    model = scsena.SENAVAE(a, seed=2)
    model.train(**dict(KW, max_epochs=1, logger=None), checkpoint_dir=tmp_path / "ck",
                log_to="mlflow")
    assert (tmp_path / "ck" / "mlflow.db").exists()
    with pytest.warns(UserWarning, match="temporary directory"):
        model.train(**dict(KW, max_epochs=1, logger=None), log_to="mlflow")
    assert list(cwd.iterdir()) == []


def test_resume_on_other_targets_refused(tmp_path):
    a = _setup()
    scsena.SENAVAE(a, seed=2).train(**dict(KW, max_epochs=1), checkpoint_dir=tmp_path / "ck")
    labels = [""] * 40 + ["A"] * 40 + ["C"] * 40 + ["A,C"] * 20  # same count, other names
    b = _setup(toy_adata(labels=labels))
    model = scsena.SENAVAE(b, seed=2)
    with pytest.raises(ValueError, match=r"other targets.*only in the checkpoint: \['B'\]"):
        model.train(**KW, ckpt_path=tmp_path / "ck" / "last.ckpt")
