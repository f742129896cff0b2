"""Calibrated predictions: seen targets' mean shifts as the training data support them."""

import numpy as np
import pytest
import scipy.sparse as sp

import scsena
from conftest import TRAIN_KW

FOLD_TRAIN, FOLD_CONTROL = "train", "control"  # obs["scsena_fold"] values

N_CELLS = 300


def _training_shift(model, adata, target):
    """Training-fold mean of the target's single cells minus the control cells' mean."""
    folds = adata.obs["scsena_fold"].astype(str).to_numpy()
    labels = adata.obs["guide_ids"].astype(str).to_numpy()
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    cells = X[(folds == FOLD_TRAIN) & (labels == target)]
    control = X[folds == FOLD_CONTROL]
    return cells.mean(axis=0) - control.mean(axis=0)


def _unclipped(model, target, correction):
    """Genes where no predicted cell of ``target`` was clipped at 0."""
    raw = model.predict_perturbation(target, n_cells=N_CELLS, calibrated=False)
    return (np.asarray(raw.X) + correction).min(axis=0) > 0


def test_default_training_calibrates_and_a_seen_target_gets_its_training_mean(trained):
    model, adata, _ = trained
    assert model.shift_calibration_ is not None
    table = model.calibrate_predictions(shrinkage=0.0, n_cells=N_CELLS)
    assert list(table.index) == list(model.targets_)
    assert (table["n_cells"] > 0).all()
    target = model.targets_[0]
    j = list(model.targets_).index(target)
    correction = model.shift_calibration_["correction"][j]
    pred = model.predict_perturbation([model.control_value_, target], n_cells=N_CELLS)
    control = np.asarray(pred.X[:N_CELLS]).mean(axis=0)
    shift = np.asarray(pred.X[N_CELLS:]).mean(axis=0) - control
    keep = _unclipped(model, target, correction)
    assert keep.mean() > 0.5
    np.testing.assert_allclose(shift[keep], _training_shift(model, adata, target)[keep], atol=1e-4)
    assert pred.uns["scsena_prediction"]["calibrated"] is True
    model.calibrate_predictions()  # back to the default


def test_a_shift_the_data_do_not_support_is_predicted_as_no_change(trained):
    model, _, _ = trained
    saved = model.shift_calibration_
    try:
        table = model.calibrate_predictions(shrinkage=1e12, n_cells=N_CELLS)
        assert (table["observed_l2"] == 0).all()
        target = model.targets_[1]
        j = list(model.targets_).index(target)
        correction = model.shift_calibration_["correction"][j]
        pred = model.predict_perturbation([model.control_value_, target], n_cells=N_CELLS)
        shift = np.asarray(pred.X[N_CELLS:]).mean(axis=0) - np.asarray(pred.X[:N_CELLS]).mean(
            axis=0
        )
        keep = _unclipped(model, target, correction)
        assert np.abs(shift[keep]).max() < 1e-4
        assert not pred.uns["scsena_change"]["detectable"].iloc[1]
    finally:
        model.shift_calibration_ = saved


def test_a_double_is_the_calibrated_singles_plus_the_models_interaction(trained):
    model, _, _ = trained
    a, b = model.targets_[:2]
    corr = model.shift_calibration_["correction"]
    ia, ib = list(model.targets_).index(a), list(model.targets_).index(b)
    raw = model.predict_perturbation(f"{a},{b}", n_cells=50, calibrated=False)
    cal = model.predict_perturbation(f"{a},{b}", n_cells=50)
    np.testing.assert_allclose(
        np.asarray(cal.X), np.maximum(np.asarray(raw.X) + corr[ia] + corr[ib], 0), atol=1e-5
    )
    assert cal.uns["scsena_prediction"]["calibrated"] is True
    assert raw.uns["scsena_prediction"]["calibrated"] is False
    assert (np.asarray(cal.X) >= 0).all()


def test_calibration_is_saved_and_reference_and_calibrate_false_have_none(tmp_path, sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(sim_adata, seed=0)
    model.train(**(TRAIN_KW | {"max_epochs": 2}))
    assert model.shift_calibration_ is not None
    pred = model.predict_perturbation(model.targets_[0], n_cells=20)
    model.save(tmp_path / "m")
    loaded = scsena.SENAVAE.load(tmp_path / "m", adata=sim_adata)
    np.testing.assert_array_equal(
        loaded.shift_calibration_["correction"], model.shift_calibration_["correction"]
    )
    np.testing.assert_array_equal(
        loaded.predict_perturbation(model.targets_[0], n_cells=20).X, pred.X
    )
    model.train(**(TRAIN_KW | {"max_epochs": 1}), calibrate=False)
    assert model.shift_calibration_ is None
    reference = scsena.SENAVAE(sim_adata, seed=0, preset="reference")
    reference.train(**(TRAIN_KW | {"max_epochs": 1}))
    assert reference.shift_calibration_ is None
    assert (
        reference.predict_perturbation(model.targets_[0], n_cells=5).uns["scsena_prediction"][
            "calibrated"
        ]
        is False
    )


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_calibration_refuses_a_bad_shrinkage(trained, bad):
    model, _, _ = trained
    with pytest.raises(ValueError, match="shrinkage"):
        model.calibrate_predictions(shrinkage=bad)
