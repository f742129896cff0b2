"""scsena.dataloaders: folds and the data splitter the model reads its data through."""

import re

import numpy as np
import pytest

import scsena
from scsena.data import parse_perturbations
from scsena.dataloaders import PerturbationDataSplitter, assign_folds, resolve_heldout


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


# ------------------------------------------------------------------ resolve_heldout
TARGETS = [f"T{i:02d}" for i in range(25)]


def test_resolve_heldout_auto_takes_the_data_sets_list_where_it_overlaps():
    got = resolve_heldout("auto", ["CBL", "T01", "T02", "T03"], dataset_heldout=["T03", "T01", "X"])
    assert got == ["T01", "T03"]
    assert all(type(t) is str for t in got)


def test_resolve_heldout_auto_falls_back_to_the_norman_list():
    targets = ["AAA", "CBL", "ETS2", "ZZZ"]
    assert resolve_heldout("auto", targets) == ["CBL", "ETS2"]
    # a data-set list without overlap falls through to the Norman 2019 list
    assert resolve_heldout("auto", targets, dataset_heldout=["NOPE"]) == ["CBL", "ETS2"]
    # the SENA paper's Norman 2019 held-out singles
    norman = ["CBL", "CDKN1C", "COL1A1", "ETS2", "MAP2K6", "MAPK1", "POU3F2", "PTPN1"]
    norman += ["S1PR2", "SGK1", "TBX2"]
    assert resolve_heldout("auto", TARGETS + norman, seed=0) == norman


def test_resolve_heldout_auto_falls_back_to_ten_percent_drawn_with_the_seed():
    got = resolve_heldout("auto", TARGETS, seed=0)
    assert len(got) == 2  # 10% of 25 targets, rounded
    assert got == sorted(got) and set(got) <= set(TARGETS)
    assert resolve_heldout("auto", TARGETS, seed=0) == got  # deterministic per seed
    draws = {tuple(resolve_heldout("auto", TARGETS, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed changes the draw
    assert len(resolve_heldout("auto", ["A", "B", "C"], seed=1)) == 1  # at least one


def test_resolve_heldout_all_none_int_and_names():
    assert resolve_heldout("all", ["B", "A", "C"]) == ["A", "B", "C"]
    assert resolve_heldout(None, TARGETS) == []
    assert resolve_heldout([], TARGETS) == []
    three = resolve_heldout(3, TARGETS, seed=4)
    assert len(three) == 3 and set(three) <= set(TARGETS) and three == sorted(three)
    assert resolve_heldout(3, TARGETS, seed=4) == three
    assert resolve_heldout(np.int64(3), TARGETS, seed=4) == three
    assert resolve_heldout(0, TARGETS) == []
    assert resolve_heldout(25, TARGETS) == TARGETS
    assert resolve_heldout(["T05", "T01", "T05"], TARGETS) == ["T01", "T05"]
    assert resolve_heldout("T07", TARGETS) == ["T07"]
    assert resolve_heldout(["auto"], ["all", "auto"]) == ["auto"]  # a target named "auto"


def test_resolve_heldout_refuses_unknown_names_and_too_many_targets():
    with pytest.raises(ValueError, match=re.escape("Held-out perturbation(s) ['NOPE'] are not")):
        resolve_heldout(["T01", "NOPE"], TARGETS)
    msg = (
        "heldout=26 asks for more targets than the data has (25) or fewer than 0; pass 0 to "
        "25, 'all', 'auto', or a list of target names."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        resolve_heldout(26, TARGETS)
    with pytest.raises(ValueError, match=re.escape("heldout=-1 asks")):
        resolve_heldout(-1, TARGETS)


# ------------------------------------------------------------------ assign_folds
def _parsed():
    labels = [""] * 10 + ["A"] * 10 + ["B"] * 20 + ["C"] * 4 + ["A,B"] * 5 + ["A,D"] * 3
    return parse_perturbations(labels, targets=None)


@pytest.mark.parametrize("test_fraction", [0.0, 0.3, 0.5, 0.75])
def test_assign_folds_tests_test_fraction_of_each_heldout_targets_cells(test_fraction):
    parsed = _parsed()
    folds = assign_folds(parsed, ["A", "B"], test_fraction=test_fraction, seed=0)
    assert list(folds.categories) == ["train", "test", "double", "control", "excluded"]
    fold = np.asarray(folds.astype(str))
    labels = parsed.labels.to_numpy()
    for target, n in (("A", 10), ("B", 20)):
        n_test = int(round(test_fraction * n))
        assert int(((labels == target) & (fold == "test")).sum()) == n_test
        assert int(((labels == target) & (fold == "train")).sum()) == n - n_test
    assert set(fold[labels == "C"]) == {"train"}  # not held out
    assert set(fold[labels == ""]) == {"control"}
    assert set(fold[labels == "A,B"]) == {"double"}
    assert set(fold[labels == "A,D"]) == {"excluded"}  # D never seen singly


def test_assign_folds_draws_test_cells_with_the_seed_and_checks_the_fraction():
    parsed = _parsed()
    first = np.asarray(assign_folds(parsed, ["B"], 0.5, seed=1).astype(str))
    assert np.array_equal(first, np.asarray(assign_folds(parsed, ["B"], 0.5, seed=1).astype(str)))
    others = [np.asarray(assign_folds(parsed, ["B"], 0.5, seed=s).astype(str)) for s in range(2, 6)]
    assert any(not np.array_equal(first, o) for o in others)
    for bad in (1.0, -0.1):
        with pytest.raises(
            ValueError, match=re.escape(f"test_fraction must lie in [0, 1), got {bad}.")
        ):
            assign_folds(parsed, ["B"], bad)


# ------------------------------------------------------------------ PerturbationDataSplitter
@pytest.mark.parametrize("test_fraction", [0.25, 0.5])
def test_splitter_folds_without_fold_column_use_the_splitters_test_fraction(
    model, sim_adata, test_fraction
):
    del sim_adata.obs["scsena_fold"]
    targets = model.targets_
    heldout = targets[:2]
    splitter = PerturbationDataSplitter(
        model.adata_manager, targets, heldout=heldout, test_fraction=test_fraction, seed=3
    )
    labels = splitter.perturbations.labels.to_numpy()
    for target in heldout:
        n = int((labels == target).sum())
        assert int(((labels == target) & (splitter.folds == "test")).sum()) == round(
            test_fraction * n
        )
    expected = assign_folds(splitter.perturbations, heldout, test_fraction, seed=3)
    assert np.array_equal(splitter.folds, np.asarray(expected.astype(str)))
    # a fold column, when present, is read as is
    sim_adata.obs["scsena_fold"] = "excluded"
    fresh = PerturbationDataSplitter(model.adata_manager, targets, heldout=heldout)
    assert set(fresh.folds) == {"excluded"}


def test_splitter_group_means_read_in_batches(model, sim_adata):
    splitter = model.data_splitter(sim_adata)
    labels = sim_adata.obs["guide_ids"].astype(str).to_numpy()
    groups = ["", labels[labels != ""][0]]
    idx = np.flatnonzero(np.isin(labels, groups))
    means = splitter.group_means(idx, labels[idx], groups, batch_size=7)
    x = sim_adata.X.toarray()
    for i, g in enumerate(groups):
        np.testing.assert_allclose(means[i], x[labels == g].mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"No cells with label\(s\) \['nope'\]"):
        splitter.group_means(idx, labels[idx], ["nope"])
