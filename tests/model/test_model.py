"""SENAVAE end to end on the simulator: registration, training, prediction, I/O."""

import numpy as np
import pytest
import torch

import scsena
from conftest import TRAIN_KW
from scsena.evaluate import evaluate_model
from scsena.metrics import random_recall


def test_setup_registers_mask_and_perturbations(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    mask = scsena.gene_sets.GeneSetMask.from_uns(sim_adata.uns["scsena_mask"])
    assert mask.n_genes == sim_adata.n_vars and mask.n_terms > 20
    model = scsena.SENAVAE(sim_adata)
    manager = model.adata_manager
    state = manager.get_state_registry("gene_set_mask")
    assert list(state["terms"]) == mask.terms == model.term_ids_
    targets = sorted({g for g in sim_adata.obs["guide_ids"] if g and "," not in g})
    assert model.targets_ == targets
    assert model.n_latent == len(targets)
    folds = sim_adata.obs["scsena_fold"]
    kinds = sim_adata.obs["perturbation_type"].astype(str)
    assert set(folds[kinds == "control"]) == {"control"}
    assert set(folds[kinds == "double"]) == {"double"}
    assert set(folds[kinds == "single"]) <= {"train", "test"}
    for t in model.heldout_:
        cells = sim_adata.obs["guide_ids"] == t
        assert (folds[cells] == "test").sum() == round(0.2 * cells.sum())


def test_default_beats_control_keeps_targets_apart_and_ranks_targeted_bps(trained):
    model, adata, before = trained
    after = model.get_fold_losses("double")
    assert list(after["perturbation"]) == list(before["perturbation"])
    assert after["mmd"].mean() < before["mmd"].mean()
    # every target keeps its own latent factor (no collapse)
    assert model.get_intervention_targets()["latent"].nunique() == len(model.targets_)
    # unseen doubles: better than predicting no change, near the additive baseline
    res = evaluate_model(model, folds=("double",), activation_test=False)
    table = res.table(["mmd", "energy", "l2_top1000", "pearson_delta_de"])
    for metric in ("mmd", "energy", "l2_top1000"):
        assert table.loc["scsena", metric] < table.loc["control", metric]
    additive = table.loc["additive", "pearson_delta_de"]
    assert table.loc["scsena", "pearson_delta_de"] >= 0.8 * additive
    metrics = model.activation_test(ks=(5, 25))
    assert len(metrics) >= 6
    n_terms = len(model.term_ids_)
    assert metrics["recall@25"].mean() > random_recall(n_terms, 25)
    assert metrics["recall@5"].mean() > 3 * random_recall(n_terms, 5)
    assert metrics["z_diff"].mean() > 0


def test_predict_single_and_unseen_double(trained):
    model, adata, _ = trained
    doubles = sorted(set(adata.obs["guide_ids"][adata.obs["scsena_fold"] == "double"]))
    labels = [model.targets_[0], doubles[0]]
    pred = model.predict_perturbation(labels, n_cells=40, seed=1)
    assert pred.shape == (80, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert list(pred.obs["perturbation"].cat.categories) == labels
    assert np.isfinite(pred.X).all()
    again = model.predict_perturbation(labels, n_cells=40, seed=1)
    np.testing.assert_array_equal(pred.X, again.X)
    # the forward-pass size changes nothing (the sampling noise is drawn for all cells);
    # None takes scvi-tools' setting
    chunked = model.predict_perturbation(labels, n_cells=40, seed=1, batch_size=7)
    np.testing.assert_allclose(chunked.X, pred.X, rtol=1e-5, atol=1e-5)
    z7 = model.get_latent_representation(give_mean=False, seed=2, batch_size=7)
    np.testing.assert_allclose(
        z7, model.get_latent_representation(give_mean=False, seed=2), rtol=1e-5, atol=1e-6
    )
    # training brings the predicted unseen doubles closer (MMD) to the real double cells
    fresh = adata.copy()  # the shared fixture's data may carry other models' registrations
    scsena.SENAVAE.setup_anndata(fresh, perturbation_key="guide_ids")
    untrained = scsena.SENAVAE(fresh, seed=0)
    ratios = []
    for double in doubles:
        real = adata[adata.obs["guide_ids"] == double].X.toarray()
        naive = untrained.predict_perturbation(double, n_cells=40, seed=1).X
        trained_pred = model.predict_perturbation(double, n_cells=40, seed=1).X
        ratios.append(scsena.metrics.mmd(trained_pred, real) / scsena.metrics.mmd(naive, real))
    assert np.mean(ratios) < 0.75 and max(ratios) < 1
    # concatenates with real cells for scanpy
    import anndata as ad

    both = ad.concat([adata[:10], pred], label="source", keys=["real", "predicted"])
    assert both.n_vars == adata.n_vars


def test_predict_unknown_target_lists_known(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="Unknown target.*knows only"):
        model.predict_perturbation(["NOT_A_GENE"], n_cells=5)
    with pytest.raises(ValueError, match="single and double"):
        model.predict_perturbation([",".join(model.targets_[:3])], n_cells=5)


def test_interpretation_outputs(trained):
    model, adata, _ = trained
    act = model.get_pathway_activity()
    assert act.shape == (adata.n_obs, len(model.term_ids_))
    np.testing.assert_array_equal(adata.obsm["X_scsena_activity"], act)
    assert list(adata.uns["scsena_activity"]["term_ids"]) == model.term_ids_
    # term-named, as get_normalized_expression names genes; nothing else written
    assert list(act.columns) == model.term_ids_ and act.index.equals(adata.obs_names)
    assert "X_scsena_activity" not in adata.uns
    assert isinstance(model.get_pathway_activity(return_numpy=True), np.ndarray)
    # inplace=False returns the same activities and writes nothing
    quiet = model.get_pathway_activity(key_added="X_not_written", inplace=False)
    np.testing.assert_array_equal(quiet, act)
    assert "X_not_written" not in adata.obsm and "not_written" not in adata.uns
    bp = model.pathway_activity_anndata()
    assert bp.shape == act.shape and list(bp.var_names) == model.term_ids_
    assert "term_name" in bp.var
    z = model.get_latent_representation()
    assert z.shape == (adata.n_obs, model.n_latent)
    graph = model.get_causal_graph(threshold=0.0)
    n = model.n_latent
    assert len(graph) == n * (n - 1) // 2
    mat = model.get_causal_graph(as_matrix=True)
    assert np.allclose(np.tril(mat.to_numpy()), 0)
    targets = model.get_intervention_targets()
    assert list(targets.index) == model.targets_
    soft = model.get_intervention_targets(temperature=1.0, soft=True)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    w = model.get_latent_bp_weights()
    assert w["mean"].shape == (len(model.term_ids_), n) and w["var"].shape == w["mean"].shape


def test_save_load_identical_predictions(trained, tmp_path):
    model, adata, _ = trained
    model.save(tmp_path / "m", overwrite=True)
    loaded = scsena.SENAVAE.load(tmp_path / "m", adata=adata)
    labels = [model.targets_[1], f"{model.targets_[0]},{model.targets_[2]}"]
    a = model.predict_perturbation(labels, n_cells=30, seed=5)
    b = loaded.predict_perturbation(labels, n_cells=30, seed=5)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(
        model.get_pathway_activity(key_added=None), loaded.get_pathway_activity(key_added=None)
    )
    assert loaded.targets_ == model.targets_ and loaded.term_ids_ == model.term_ids_


def test_seeded_training_is_reproducible(sim_adata):
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    kw = dict(TRAIN_KW, max_epochs=3)
    params = []
    for _ in range(2):
        m = scsena.SENAVAE(small, seed=7)
        m.train(**kw)
        params.append({k: v.clone() for k, v in m.module.state_dict().items()})
    for k in params[0]:
        torch.testing.assert_close(params[0][k], params[1][k], rtol=0, atol=0)
    m3 = scsena.SENAVAE(small, seed=8)
    assert not torch.equal(m3.module.fc_mean.weight, params[0]["fc_mean.weight"])


def test_device_resident_batches_equal_host_batches(sim_adata):
    """Gathering batches from a resident dense copy changes nothing in training."""
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    m = scsena.SENAVAE(small, seed=3)
    host = m.data_splitter(small).fold_dataset(["train"], 3)
    resident = m.data_splitter(small).fold_dataset(["train"], 3).to_device("cpu")
    assert host.device is None and resident.device == torch.device("cpu")
    assert (
        resident.device_bytes()
        == len(np.unique(np.concatenate([host.perturbed, host.partners]))) * small.n_vars * 4
    )
    idx = np.array([5, 0, 17, 5, 40])
    a, b = host[idx], resident[idx]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    kw = dict(TRAIN_KW, max_epochs=2)
    params = []
    for on_device in (False, True):
        m = scsena.SENAVAE(small, seed=3)
        m.train(data_on_device=on_device, **kw)
        params.append(m.module.state_dict())
    for k in params[0]:
        torch.testing.assert_close(params[0][k], params[1][k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_workers=0"):
        m.train(data_on_device=True, num_workers=1, **kw)
    with pytest.raises(ValueError, match="data_on_device"):
        m.train(data_on_device="gpu", **kw)


def test_original_encoder_and_float64(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    m = scsena.SENAVAE(sim_adata, encoder="original", dtype="float64", sena_lambda=0.0)
    assert m.module.fc1.weight.dtype == torch.float64
    m.train(**dict(TRAIN_KW, max_epochs=2))
    losses = m.get_fold_losses("double")
    assert np.isfinite(losses[["mmd", "mse", "kl"]].to_numpy()).all()


def test_fold_losses_rejects_unknown_fold(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="fold must be"):
        model.get_fold_losses("validation")


def test_labels_in_pertpy_convention(sim_adata):
    obs = sim_adata.obs
    obs["perturbation_name"] = [
        "control" if g == "" else g.replace(",", "+") for g in obs["guide_ids"]
    ]
    scsena.SENAVAE.setup_anndata(
        sim_adata, perturbation_key="perturbation_name", control_value="control", delimiter="+"
    )
    m = scsena.SENAVAE(sim_adata)
    pair = "+".join(m.targets_[:2])
    pred = m.predict_perturbation([pair], n_cells=3)
    assert pred.n_obs == 3
    # labelled in the data's own convention, started from control cells of the data
    assert list(pred.obs["perturbation"].astype(str)) == [pair] * 3
    controls = set(sim_adata.obs_names[sim_adata.obs["perturbation_name"] == "control"])
    assert set(pred.obs["control_cell"]) <= controls


def test_float32_and_float64_give_the_same_metrics(sim_adata):
    """float32 and the reference's float64 agree within seed-to-seed noise."""
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    mmd = {}
    for dtype, seed in (("float32", 4), ("float64", 4), ("float32", 5)):
        m = scsena.SENAVAE(sim_adata, dtype=dtype, seed=seed)
        m.train(**dict(TRAIN_KW, max_epochs=12))
        mmd[dtype, seed] = m.get_fold_losses("double", seed=0)["mmd"].mean()
    noise = abs(mmd["float32", 4] - mmd["float32", 5])
    diff = abs(mmd["float32", 4] - mmd["float64", 4])
    assert diff <= max(2 * noise, 0.2 * mmd["float32", 4]), (mmd, noise, diff)


def test_predictions_say_whether_their_change_is_detectable(trained):
    model, adata, _ = trained
    single = model.targets_[0]
    pred = model.predict_perturbation([single, ""], n_cells=60, seed=3)
    change = pred.uns["scsena_change"]
    assert list(change.index) == [single, "control"]
    assert not change.loc["control", "detectable"] and change.loc["control", "change_l2"] < 1e-4
    # the documented quantities, by hand
    folds = adata.obs["scsena_fold"].to_numpy()
    x = adata.X.toarray()
    control = x[folds == "control"]
    n_ref = int(((adata.obs["guide_ids"].to_numpy() == single) & (folds == "train")).sum())
    noise = np.sqrt(control.var(axis=0, ddof=1).sum() * (1 / n_ref + 1 / len(control)))
    assert change.loc[single, "n_reference_cells"] == n_ref
    assert change.loc[single, "noise_l2"] == pytest.approx(noise, rel=1e-4)
    start = adata.obs_names.get_indexer(pred.obs["control_cell"][:60])
    moved = pred.X[:60].mean(axis=0) - x[start].mean(axis=0)
    assert change.loc[single, "change_l2"] == pytest.approx(np.linalg.norm(moved), rel=1e-4)
    ratio = change.loc[single, "change_l2"] / noise
    assert change.loc[single, "detectable"] == (ratio > 1.5)
    np.testing.assert_array_equal(
        pred.obs["change_detectable"].to_numpy(), np.repeat(change["detectable"].to_numpy(), 60)
    )
