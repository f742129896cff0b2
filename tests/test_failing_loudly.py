"""Training that fails loudly, checkpoint directories that belong to one run.

Each test name below is referenced from docs/reliability.md.
"""

import json
import os
import socket

import numpy as np
import pytest
import torch

import scsena
from conftest import TRAIN_KW
from scsena.train import NonFiniteLossError


def _tiny(seed=3):
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=600, n_genes=150, n_targets=4, n_doubles=2, seed=seed
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    return adata


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.module.parameters())


def test_training_to_nan_stops_with_the_cause():
    model = scsena.SENAVAE(_tiny(), seed=0)
    with pytest.raises(NonFiniteLossError, match=r"learning rate too high.*lr=10000"):
        model.train(**(TRAIN_KW | {"max_epochs": 3, "lr": 1e4}))
    assert model.is_trained_ is False
    assert _finite(model)  # the weights training started from
    with pytest.warns(UserWarning, match="not trained"):
        pred = model.predict_perturbation(model.targets_[0], n_cells=5)
    assert np.isfinite(pred.X).all()


def test_nan_epoch_keeps_the_last_finite_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import Callback

    class NanAtThirdEpoch(Callback):
        """A weight turns NaN during the third epoch (as a diverging step would do)."""

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                with torch.no_grad():
                    pl_module.module.d2.bias[0] = float("nan")

    model = scsena.SENAVAE(_tiny(), seed=0)
    with pytest.raises(NonFiniteLossError, match="epoch 3") as err:
        model.train(
            **(TRAIN_KW | {"max_epochs": 5, "callbacks": [NanAtThirdEpoch()]}),
            checkpoint_dir=tmp_path / "ck",
        )
    assert err.value.restored_epoch == 1 and model.is_trained_ is False
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1  # written at the end of the second epoch, never after
    for key, value in model.module.state_dict().items():
        torch.testing.assert_close(value, ckpt["state_dict"][f"module.{key}"])
    assert not (tmp_path / "ck" / ".scsena-lock").exists()


def test_unnormalised_data_refused_at_setup_unless_opted_in():
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=300, n_genes=100, n_targets=3, n_doubles=1, seed=0
    )
    cpm = np.expm1(adata.X.toarray()) * 1e3  # CPM-like: not integers, never log-transformed
    adata.X = cpm
    with pytest.raises(ValueError, match=r"never log-transformed.*sc\.pp\.log1p.*allow_large"):
        scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", allow_large_values=True)


def _train_into(adata, directory, epochs=2, **kw):
    model = scsena.SENAVAE(adata, seed=0)
    model.train(**(TRAIN_KW | {"max_epochs": epochs}), checkpoint_dir=directory, **kw)
    return model


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_checkpoint_dir_belongs_to_one_run(tmp_path):
    adata = _tiny()
    ck = tmp_path / "ck"
    _train_into(adata, ck, checkpoint_every=1)
    before = _snapshot(ck)
    with pytest.raises(ValueError, match="holds the checkpoints of another run"):
        _train_into(adata, ck, epochs=3)
    assert _snapshot(ck) == before  # the first run's files untouched
    # resuming the run in its own directory is allowed
    model = scsena.SENAVAE(adata, seed=0)
    model.train(
        **(TRAIN_KW | {"max_epochs": 3}), checkpoint_dir=ck, ckpt_path=ck / "last.ckpt"
    )
    assert model.is_trained_


def test_checkpoint_dir_lock_refuses_a_concurrent_run(tmp_path):
    adata = _tiny()
    ck = tmp_path / "ck"
    ck.mkdir()
    lock = ck / ".scsena-lock"
    # a live process on this host holds the directory
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "token": "x"}))
    with pytest.raises(ValueError, match="in use by another training run"):
        _train_into(adata, ck)
    assert json.loads(lock.read_text())["token"] == "x"
    # a lock left by a killed run is taken over, and released at the end
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 999999999, "token": "y"}))
    _train_into(adata, ck)
    assert not lock.exists() and (ck / "last.ckpt").exists()


def test_partial_checkpoint_names_are_unique_per_run(tmp_path):
    from scsena.train import EpochCheckpoint

    a, b = EpochCheckpoint(tmp_path), EpochCheckpoint(tmp_path)
    assert a.token != b.token


def test_resume_refuses_a_checkpoint_without_scsena_metadata(tmp_path):
    adata = _tiny()
    _train_into(adata, tmp_path / "ck")
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    del ckpt["scsena"]
    torch.save(ckpt, tmp_path / "foreign.ckpt")
    model = scsena.SENAVAE(adata, seed=0)
    with pytest.raises(ValueError, match="does not record the targets and genes"):
        model.train(**TRAIN_KW, ckpt_path=tmp_path / "foreign.ckpt")
