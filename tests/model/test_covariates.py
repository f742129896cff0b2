"""Batch and categorical covariates: setup, pairing within batch, batch-conditioned
decoder, predictions for a chosen batch, save/load, and the errors around them."""

import numpy as np
import pytest
import torch

import scsena
from conftest import TRAIN_KW
from scsena.train import draw_control_partners

BATCH_SIM = dict(
    n_cells=1500, n_genes=300, n_targets=6, n_doubles=3, n_batches=2, batch_effect=0.6, seed=0
)
FAST = dict(TRAIN_KW, max_epochs=8)


@pytest.fixture(scope="module")
def _batched():
    return scsena.datasets.simulate_perturbseq(**BATCH_SIM)


@pytest.fixture(scope="module")
def batch_model(_batched):
    adata = _batched.copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="batch")
    model = scsena.SENAVAE(adata, seed=0)
    model.train(**FAST)
    return model, adata


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def test_setup_registers_the_batch_and_the_decoder_reads_it(_batched):
    adata = _batched.copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="batch")
    model = scsena.SENAVAE(adata, seed=0)
    assert model.module.n_cats_per_covariate == (2,)
    # one-hot batch codes enter both decoder layers
    assert model.module.d1.in_features == model.n_latent + 2
    assert model.module.d2.in_features == model.module.d1.out_features + 2
    splitter = model.data_splitter()
    assert splitter.batch_categories == ["batch0", "batch1"]
    assert np.array_equal(
        splitter.batches, adata.obs["batch"].cat.codes.to_numpy().astype(np.int64)
    )


def test_no_batch_keeps_the_published_decoder(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(sim_adata, seed=0)
    assert model.module.n_cats_per_covariate == ()
    assert model.module.d1.in_features == model.n_latent
    assert model.data_splitter().covariates is None
    assert "batch" not in model.adata_manager.data_registry


def test_partners_come_from_the_cells_own_batch(_batched):
    adata = _batched.copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="batch")
    model = scsena.SENAVAE(adata, seed=0)
    ds = model.data_splitter().fold_dataset(["train"], seed=3)
    batch = adata.obs["batch"].to_numpy()
    assert np.array_equal(batch[ds.perturbed], batch[ds.partners])
    codes = adata.obs["batch"].cat.codes.to_numpy()
    item = ds[np.arange(5)]
    assert torch.equal(item["covariates"][:, 0], torch.as_tensor(codes[ds.partners[:5]]))


def test_draw_control_partners_within_groups_and_missing_group():
    control = np.array([10, 11, 12, 13])
    control_groups = np.array([0, 0, 1, 1])
    groups = np.array([0, 1, 1, 0, 1])
    partners = draw_control_partners(5, control, 0, groups=groups, control_groups=control_groups)
    lookup = dict(zip(control, control_groups))
    assert [lookup[p] for p in partners] == groups.tolist()
    with pytest.raises(ValueError, match="no control cell"):
        draw_control_partners(2, control, 0, groups=np.array([2, 2]), control_groups=control_groups)


def test_predictions_follow_the_chosen_batch(batch_model):
    model, adata = batch_model
    target = model.targets_[0]
    preds = {
        b: model.predict_perturbation(target, n_cells=200, batch=b) for b in ("batch0", "batch1")
    }
    assert set(preds["batch1"].obs["batch"]) == {"batch1"}
    real = adata[adata.obs["guide_ids"] == target]
    for b in ("batch0", "batch1"):
        truth = _dense(real[real.obs["batch"] == b].X).mean(axis=0)
        own = np.abs(preds[b].X.mean(axis=0) - truth).mean()
        other = np.abs(preds[{"batch0": "batch1", "batch1": "batch0"}[b]].X.mean(axis=0) - truth)
        # each batch's prediction is closer to that batch's cells than the other batch's is
        assert own < 0.7 * other.mean()
    # without `batch`, starting cells come from every batch, each with its own batch
    mixed = model.predict_perturbation(target, n_cells=300)
    assert set(mixed.obs["batch"]) == {"batch0", "batch1"}
    start_batch = adata.obs.loc[mixed.obs["control_cell"], "batch"].to_numpy()
    assert np.array_equal(start_batch, mixed.obs["batch"].to_numpy())


def test_batch_errors_name_the_problem(batch_model, sim_adata):
    model, _ = batch_model
    with pytest.raises(ValueError, match="Unknown batch 'lane9'"):
        model.predict_perturbation(model.targets_[0], batch="lane9")
    with pytest.raises(ValueError, match="either `control_indices` or `batch`"):
        model.predict_perturbation(model.targets_[0], control_indices=[0], batch="batch0")
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    plain = scsena.SENAVAE(sim_adata, seed=0)
    with pytest.raises(ValueError, match="batch_key="):
        plain.predict_perturbation(plain.targets_[0], batch="batch0")


def test_setup_refuses_bad_batch_columns(_batched):
    adata = _batched.copy()
    with pytest.raises(KeyError, match="'lane' is not a column of adata.obs"):
        scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="lane")
    adata.obs["lane"] = adata.obs["batch"].astype(object)
    adata.obs.iloc[:4, adata.obs.columns.get_loc("lane")] = np.nan
    with pytest.raises(ValueError, match="has 4 missing values"):
        scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="lane")
    with pytest.raises(TypeError, match="list of column names"):
        scsena.SENAVAE.setup_anndata(
            adata, perturbation_key="guide_ids", categorical_covariate_keys="batch"
        )
    with pytest.raises(ValueError, match="both the batch_key and a categorical covariate"):
        scsena.SENAVAE.setup_anndata(
            adata,
            perturbation_key="guide_ids",
            batch_key="batch",
            categorical_covariate_keys=["batch"],
        )


def test_a_batch_without_control_cells_is_refused_at_training(_batched):
    adata = _batched.copy()
    adata.obs["lane"] = adata.obs["batch"].astype(str)
    is_control = (adata.obs["guide_ids"] == "").to_numpy()
    single = adata.obs["guide_ids"].str.len().gt(0) & ~adata.obs["guide_ids"].str.contains(",")
    lone = np.flatnonzero(single.to_numpy())[:5]
    adata.obs.iloc[lone, adata.obs.columns.get_loc("lane")] = "lane-without-controls"
    assert not is_control[lone].any()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", batch_key="lane")
    model = scsena.SENAVAE(adata, seed=0, heldout=None)
    with pytest.raises(ValueError, match="Batch 'lane-without-controls' has 5 perturbed cells"):
        model.train(max_epochs=1, batch_size=4, enable_progress_bar=False, logger=False)


def test_categorical_covariates_enter_the_decoder(_batched):
    adata = _batched.copy()
    rng = np.random.default_rng(0)
    adata.obs["phase"] = rng.choice(["G1", "S", "G2M"], size=adata.n_obs)
    scsena.SENAVAE.setup_anndata(
        adata, perturbation_key="guide_ids", batch_key="batch", categorical_covariate_keys=["phase"]
    )
    model = scsena.SENAVAE(adata, seed=0)
    assert model.module.n_cats_per_covariate == (2, 3)
    cov = model.data_splitter().covariates
    assert cov.shape == (adata.n_obs, 2)
    assert np.array_equal(cov[:, 1], adata.obs["phase"].astype("category").cat.codes.to_numpy())
    model.train(max_epochs=1, **{k: v for k, v in FAST.items() if k != "max_epochs"})
    pred = model.predict_perturbation(model.targets_[0], n_cells=20, batch="batch1")
    assert np.isfinite(pred.X).all() and set(pred.obs["batch"]) == {"batch1"}


def test_decoder_refuses_missing_covariates(batch_model):
    model, _ = batch_model
    z = torch.zeros(3, model.n_latent)
    with pytest.raises(ValueError, match=r"conditioned on 1 categorical covariate"):
        model.module.decode(z)


def test_batch_model_save_load_gives_identical_predictions(batch_model, tmp_path):
    model, adata = batch_model
    before = model.predict_perturbation(model.targets_[1], n_cells=50, batch="batch1", seed=4)
    model.save(tmp_path / "m", save_anndata=True)
    loaded = scsena.SENAVAE.load(tmp_path / "m")
    after = loaded.predict_perturbation(loaded.targets_[1], n_cells=50, batch="batch1", seed=4)
    assert loaded.module.n_cats_per_covariate == (2,)
    np.testing.assert_array_equal(before.X, after.X)


def test_inplace_prediction_writes_means_into_the_data(batch_model):
    model, adata = batch_model
    data = adata.copy()
    scsena.SENAVAE.setup_anndata(data, perturbation_key="guide_ids", batch_key="batch")
    t = model.targets_[0]
    pred = model.predict_perturbation([t, ""], n_cells=40, adata=data, inplace=True, key_added="pp")
    assert list(data.varm["pp"].columns) == [t, "control"]
    np.testing.assert_allclose(
        data.varm["pp"][t].to_numpy(), pred[pred.obs["perturbation"] == t].X.mean(axis=0), rtol=1e-6
    )
    assert data.uns["pp"]["written_by"] == "scsena"
    data.uns["mine"] = {"a": 1}
    with pytest.raises(ValueError, match="not written by scsena"):
        model.predict_perturbation(t, n_cells=5, adata=data, inplace=True, key_added="mine")


def test_cli_train_with_batch_key_then_evaluate(tmp_path):
    from scsena import cli

    data = scsena.datasets.simulate_perturbseq(
        n_cells=400, n_genes=150, n_targets=3, n_doubles=1, n_batches=2, batch_effect=0.5, seed=0
    )
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    save = tmp_path / "run"
    args = ["train", "--data", str(path), "--batch-key", "batch", "--epochs", "1",
            "--batch-size", "16", "--save-dir", str(save), "--no-progress"]
    assert cli.main(args) == 0
    with pytest.warns(UserWarning, match="loaded without data"):
        model = scsena.SENAVAE.load(save / "seed0" / "model")
    assert model.module.n_cats_per_covariate == (2,)
    assert cli.main(["evaluate", "--model-dir", str(save), "--out", str(tmp_path / "e")]) == 0
    assert any((tmp_path / "e").rglob("*.tsv"))


def test_data_with_an_unseen_batch_is_refused_by_name(batch_model, _batched):
    model, _ = batch_model
    new = _batched.copy()
    new.obs["batch"] = new.obs["batch"].cat.rename_categories({"batch1": "lane7"})
    with pytest.raises(ValueError, match=r"holds \['lane7'\], which the model was not trained"):
        model.predict_perturbation(model.targets_[0], n_cells=5, adata=new)
