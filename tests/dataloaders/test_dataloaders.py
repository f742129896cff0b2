"""scsena.dataloaders: folds and the data splitter the model reads its data through."""

import numpy as np
import pytest

import scsena
from scsena.dataloaders import PerturbationDataSplitter, assign_folds


@pytest.fixture
def model(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    return scsena.SENAVAE(sim_adata, heldout=2, test_fraction=0.5, seed=0)


def test_folds_without_fold_column_use_the_models_test_fraction(model, sim_adata):
    other = sim_adata.copy()
    del other.obs["scsena_fold"]
    splitter = model.data_splitter(other)
    labels = splitter.perturbations.labels.to_numpy()
    for target in model.heldout_:
        n = int((labels == target).sum())
        assert int(((labels == target) & (splitter.folds == "test")).sum()) == round(0.5 * n)
    # the same folds as written into the model's data at construction
    assert np.array_equal(splitter.folds, np.asarray(sim_adata.obs["scsena_fold"].astype(str)))
    assert model.test_fraction == 0.5


def test_splitter_parses_labels_once_and_pairs_fold_cells_with_controls(model, sim_adata):
    splitter = model.data_splitter()
    assert isinstance(splitter, PerturbationDataSplitter)
    parsed = splitter.perturbations
    assert splitter.perturbations is parsed  # parsed once
    assert splitter.expression.shape == sim_adata.shape
    ds = splitter.fold_dataset(["test"], seed=1)
    assert np.array_equal(np.sort(ds.perturbed), np.flatnonzero(splitter.folds == "test"))
    assert set(ds.partners.tolist()) <= set(splitter.control_indices().tolist())
    assert np.array_equal(ds.codes.numpy(), parsed.codes[ds.perturbed])
    again = splitter.fold_dataset(["test"], seed=1)
    assert np.array_equal(again.partners, ds.partners)  # seeded
    rows = np.concatenate([r.numpy() for r in splitter.iter_rows(np.arange(5), 2)])
    assert np.allclose(rows, sim_adata.X[:5].toarray())
    assert np.array_equal(
        splitter.folds, np.asarray(assign_folds(parsed, model.heldout_, 0.5, 0).astype(str))
    )


def test_splitter_without_control_cells_says_so(model, sim_adata):
    splitter = model.data_splitter()
    splitter.folds = np.where(splitter.folds == "control", "excluded", splitter.folds)
    with pytest.raises(ValueError, match="No control cells"):
        splitter.fold_dataset(["train"], seed=0)
