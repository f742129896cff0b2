"""The training plan's epoch losses, schedules and best-epoch selection."""

import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import scsena
from conftest import TRAIN_KW
from scsena.train import SELECTION_COMPONENTS


class _Recorder(pl.Callback):
    """Per-batch losses and sizes, and the weights at the end of every epoch."""

    def __init__(self):
        self.batches: list[list[tuple[float, int]]] = []
        self.states: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.batches.append([])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.batches[-1].append((float(loss), int(batch["x"].shape[0])))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append(copy.deepcopy(pl_module.module.state_dict()))


def test_epoch_means_schedules_and_best_epoch(sim_adata):
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    model = scsena.SENAVAE(small, seed=2, preset="reference")
    rec = _Recorder()
    kw = {k: v for k, v in TRAIN_KW.items() if k != "logger"}
    model.train(**(kw | {"max_epochs": 6, "callbacks": [rec]}))
    hist = model.history
    n_epochs = 6

    def column(name):
        return np.array([float(v) for v in hist[name].iloc[:, 0]])

    # the logged epoch loss is the batch-size weighted mean of the step losses
    for name in ("loss_train", *(f"{c}_train" for c in SELECTION_COMPONENTS[1:])):
        assert len(hist[name]) == n_epochs
    logged = column("loss_train")
    expected = [np.average([v for v, _ in b], weights=[n for _, n in b]) for b in rec.batches]
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
    # schedules were applied epoch by epoch (alpha and beta rise from 0 over the epochs)
    alpha = column("alpha")
    assert alpha[0] == 0 and np.all(np.diff(alpha) >= 0) and alpha[-1] > 0
    # the best epoch has the lowest mean of the epoch-mean components, and its
    # weights are the ones kept
    score = np.mean([column(f"{c}_train") for c in SELECTION_COMPONENTS], axis=0)
    assert model.best_epoch_ == int(np.argmin(score))
    final = model.module.state_dict()
    for k, v in rec.states[model.best_epoch_].items():
        torch.testing.assert_close(final[k].cpu(), v.cpu(), rtol=0, atol=0)


def test_history_has_assignment_diagnostics(sim_adata):
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    model = scsena.SENAVAE(small, seed=0)
    kw = {k: v for k, v in TRAIN_KW.items() if k != "logger"}
    model.train(**(kw | {"max_epochs": 3}))
    hist = model.history
    distinct = hist["distinct_factors"].to_numpy().ravel()
    entropy = hist["assignment_entropy"].to_numpy().ravel()
    assert len(distinct) == len(entropy) == 3
    # the one-to-one table keeps every target on its own factor from the start
    assert (distinct == len(model.targets_)).all()
    # the final epoch's diagnostics are those of the model's assignment at that tau
    tau = float(hist["tau"].to_numpy().ravel()[-1])
    soft = model.get_intervention_targets(temperature=tau, soft=True).to_numpy()
    expected = -(soft * np.log(np.clip(soft, 1e-12, None))).sum(1).mean()
    np.testing.assert_allclose(entropy[-1], expected, rtol=1e-4)
    # the extra loss terms of the default preset are logged too
    assert "mean_shift_train" in hist and "balance_train" in hist


def test_plan_kwargs_merge_with_train_arguments(sim_adata):
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    kw = TRAIN_KW | {"max_epochs": 6}

    def trained(**extra):
        model = scsena.SENAVAE(small, seed=1)
        model.train(**(kw | extra))
        return model.module.state_dict()

    via_plan = trained(plan_kwargs={"lr": 1e-2, "weight_decay": 0.0})
    direct = trained(lr=1e-2)
    for k, v in direct.items():
        torch.testing.assert_close(via_plan[k], v, rtol=0, atol=0)
    assert not torch.equal(trained()["d2.weight"], direct["d2.weight"])  # lr matters
    model = scsena.SENAVAE(small, seed=1)
    with pytest.raises(ValueError, match="lr is given twice"):
        model.train(**(kw | {"lr": 1e-3, "plan_kwargs": {"lr": 1e-2}}))
    with pytest.raises(ValueError, match="set by train's 'max_epochs'"):
        model.train(**(kw | {"plan_kwargs": {"n_epochs": 3}}))


@pytest.mark.parametrize(
    ("argument", "hint"), [("train_size", "heldout="), ("shuffle_set_split", "")]
)
def test_scvi_split_arguments_refused_clearly(sim_adata, argument, hint):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(sim_adata)
    with pytest.raises(TypeError, match=f"does not take {argument}=.*{hint}"):
        model.train(max_epochs=1, **{argument: 0.9})


def test_validation_split_and_early_stopping(sim_adata):
    from scsena.train import ScheduledEarlyStopping

    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(sim_adata, seed=0)
    splitter = model.data_splitter()
    held = splitter.validation_cells(0.2, seed=0)
    train = np.flatnonzero(sim_adata.obs["scsena_fold"] == "train")
    assert set(held) <= set(train) and 0.15 < len(held) / len(train) < 0.25
    module = splitter.data_module(32, 0, validation_size=0.2)
    trained_on = set(module.train_dataset.perturbed.tolist())
    assert not trained_on & set(held.tolist())  # never trained on
    model.train(
        max_epochs=12,
        batch_size=32,
        enable_progress_bar=False,
        validation_size=0.2,
        early_stopping=True,
        early_stopping_patience=1,
    )
    for key in ("loss_validation", "mmd_validation", "mse_validation"):
        assert key in model.history and len(model.history[key]) >= 1, key
    epochs = len(model.history["loss_train"])
    assert 6 <= epochs <= 12  # never stopped before the MMD weight is final (epoch 6)
    stop = ScheduledEarlyStopping(start_epoch=6, patience=2)
    assert stop.monitor == "mmd_validation" and stop.patience == 2
    with pytest.raises(ValueError, match="needs validation cells"):
        model.train(max_epochs=2, early_stopping=True)
    with pytest.raises(ValueError, match="either `validation_size`"):
        model.train(max_epochs=2, validation_size=0.1, validate_on_test=True)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="share between 0 and 1"):
            model.train(max_epochs=2, validation_size=bad)
    for bad in (0, -2, "four", 1.5):
        with pytest.raises(ValueError, match="`threads` must be 'auto' or a positive integer"):
            model.train(max_epochs=1, threads=bad)
