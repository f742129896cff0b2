"""MuData input, pertpy-style labels, MLflow tracking from model.train."""

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scsena
from conftest import TRAIN_KW


def _guides(adata, nt_count=3):
    targets = sorted({t for g in adata.obs["guide_ids"] for t in g.split(",") if t})
    names = [f"{t}_sg1" for t in targets] + ["NT_sg1"]
    X = np.zeros((adata.n_obs, len(names)))
    for i, g in enumerate(adata.obs["guide_ids"]):
        if g:
            for t in g.split(","):
                X[i, targets.index(t)] = 7
        else:
            X[i, -1] = nt_count
    var = pd.DataFrame({"target": targets + ["non-targeting"]}, index=names)
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=adata.obs_names), var=var)


def test_setup_mudata_from_guide_modality(sim_adata):
    mdata = md.MuData({"rna": sim_adata, "guides": _guides(sim_adata)})
    scsena.SENAVAE.setup_mudata(
        mdata, rna_mod="rna", perturbation_mod_or_key="guides", guide_target_key="target"
    )
    rna = mdata.mod["rna"]
    canon = rna.obs["guide_ids"].map(lambda g: ",".join(sorted(g.split(","))) if g else "")
    # registered with scvi-tools' MuData fields: the manager holds the MuData, each field
    # reads the RNA modality; the guide-derived labels sit in a private column
    model = scsena.SENAVAE(mdata)
    assert model.adata is mdata and model.data_splitter().adata is rna
    assert {f.mod_key for f in model.adata_manager.fields} == {"rna"}
    labels = model.adata_manager.get_from_registry("perturbation")
    assert np.array_equal(np.asarray(labels).ravel(), canon.to_numpy())
    assert "scsena_rna_mod" not in mdata.uns
    model.train(**dict(TRAIN_KW, max_epochs=1))
    pair = ",".join(model.targets_[:2])
    assert model.predict_perturbation(pair, n_cells=4).n_obs == 4
    assert "scsena_fold" in rna.obs  # results go to the RNA modality


def test_mudata_model_save_load_identical_predictions(sim_adata, tmp_path):
    mdata = md.MuData({"rna": sim_adata, "guides": _guides(sim_adata)})
    scsena.SENAVAE.setup_mudata(
        mdata, rna_mod="rna", perturbation_mod_or_key="guides", guide_target_key="target",
        batch_key=None,
    )
    model = scsena.SENAVAE(mdata)
    model.train(**dict(TRAIN_KW, max_epochs=1))
    pair = ",".join(model.targets_[:2])
    before = model.predict_perturbation(pair, n_cells=20, seed=3).X
    model.save(tmp_path / "m", save_anndata=True)
    assert (tmp_path / "m" / "mdata.h5mu").exists()
    loaded = scsena.SENAVAE.load(tmp_path / "m")
    assert loaded.adata.mod.keys() == mdata.mod.keys()
    np.testing.assert_array_equal(loaded.predict_perturbation(pair, n_cells=20, seed=3).X, before)
    again = scsena.SENAVAE.load(tmp_path / "m", adata=mdata)
    np.testing.assert_array_equal(again.predict_perturbation(pair, n_cells=20, seed=3).X, before)


def test_setup_mudata_from_label_column(sim_adata):
    mdata = md.MuData({"rna": sim_adata})
    scsena.SENAVAE.setup_mudata(mdata, rna_mod="rna", perturbation_mod_or_key="guide_ids")
    model = scsena.SENAVAE(mdata)
    labels = sim_adata.obs["guide_ids"].astype(str)
    assert model.targets_ == sorted({g for g in labels if g and "," not in g})
    assert model.adata is mdata and model.data_splitter().adata is mdata["rna"]
    # a label column of mdata.obs needs the RNA cells to be the MuData's
    two = md.MuData({"rna": sim_adata[:100].copy()})
    two.obs["condition"] = two["rna"].obs["guide_ids"].to_numpy()
    scsena.SENAVAE.setup_mudata(two, perturbation_mod_or_key="condition", min_genes=2)
    assert scsena.SENAVAE(two).targets_


def test_setup_mudata_errors(sim_adata):
    mdata = md.MuData({"rna": sim_adata})
    with pytest.raises(KeyError, match="No modality 'gex'"):
        scsena.SENAVAE.setup_mudata(mdata, rna_mod="gex")
    with pytest.raises(KeyError, match="neither a modality nor a column"):
        scsena.SENAVAE.setup_mudata(mdata, perturbation_mod_or_key="sgRNA")


def test_train_log_to_mlflow(sim_adata, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    scsena.SENAVAE.setup_anndata(sim_adata)
    model = scsena.SENAVAE(sim_adata)
    kw = dict(TRAIN_KW, max_epochs=2)
    kw.pop("logger")
    model.train(**kw, log_to="mlflow", checkpoint_dir=tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing in the cwd
    db = tmp_path / "run" / "mlflow.db"
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("scsena")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["mmd_train"] > 0
    assert len(client.get_metric_history(run.info.run_id, "loss_train")) == 2
    # model.history is filled as well, each series once, equal to what MLflow holds
    hist = model.history
    assert len(hist["loss_train"]) == 2 and "train_loss" not in hist
    logged = [m.value for m in client.get_metric_history(run.info.run_id, "loss_train")]
    assert hist["loss_train"].to_numpy().ravel().tolist() == pytest.approx(logged)


def test_explicit_logger(sim_adata, tmp_path):
    pytest.importorskip("mlflow")
    from scsena.tracking import mlflow_logger

    scsena.SENAVAE.setup_anndata(sim_adata)
    model = scsena.SENAVAE(sim_adata)
    logger = mlflow_logger(experiment_name="explicit", directory=tmp_path)
    kw = dict(TRAIN_KW, max_epochs=1)
    kw.pop("logger")
    model.train(**kw, logger=logger)
    assert (tmp_path / "mlflow.db").exists()
    # the epoch's losses are in the store, under the named experiment
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("explicit")
    (run,) = client.search_runs([experiment.experiment_id])
    assert {"loss_train", "mmd_train", "distinct_factors"} <= set(run.data.metrics)


def test_view_anndata_setup_prints_the_registration(sim_adata, capsys):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    scsena.SENAVAE(sim_adata).view_anndata_setup()
    out = capsys.readouterr().out
    for text in ("Data Registry", "gene_set_mask", "perturbation", "guide_ids"):
        assert text in out
