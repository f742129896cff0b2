"""What a user of a real screen meets: outdated target symbols, fold choices, control
predictions, layers, threads, and a quiet training run."""

import logging
import os
import signal
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch

import scsena
from scsena import cli
from scsena.metrics import top_de_genes

FAST = dict(batch_size=32, enable_progress_bar=False, enable_model_summary=False)


def _sim(**kw):
    args = dict(n_cells=400, n_genes=200, n_targets=4, n_doubles=2, seed=1)
    return scsena.datasets.simulate_perturbseq(**{**args, **kw})


@pytest.fixture(scope="module")
def small():
    return _sim()


def _model(adata, **kw):
    a = adata.copy()
    scsena.SENAVAE.setup_anndata(a)
    return scsena.SENAVAE(a, **kw), a


# --------------------------------------------------------------------------- targets


def test_activation_test_maps_outdated_target_symbols(small):
    a = _sim(n_doubles=0)
    old = sorted(set(a.obs["guide_ids"]) - {""})[0]
    a.obs["guide_ids"] = a.obs["guide_ids"].astype(str).replace(old, "MARCH8")
    model, _ = _model(a)
    terms = model.term_ids_[:3]
    # gene sets name the current symbol MARCHF8 only
    metrics = model.activation_test(gene_sets={t: ["MARCHF8", "TP53"] for t in terms})
    row = metrics.set_index("perturbation").loc["MARCH8"]
    assert row["n_affected"] == 3


# --------------------------------------------------------------------------- folds


def test_heldout_choices_and_plain_str_names(small):
    model, a = _model(small)  # "auto", no known list: 10% of the targets, at least one
    assert len(model.heldout_) == 1 and type(model.heldout_[0]) is str
    every, a = _model(small, heldout="all")
    assert every.heldout_ == sorted(every.targets_)
    assert all(type(t) is str for t in every.heldout_)
    fold = a.obs["scsena_fold"].astype(str)
    labels = a.obs["guide_ids"].astype(str)
    for t in every.targets_:  # test cells of every target
        assert ((labels == t) & (fold == "test")).any()
    two, _ = _model(small, heldout=2)
    assert len(two.heldout_) == 2 and set(two.heldout_) <= set(two.targets_)
    assert all(type(t) is str for t in two.heldout_)
    with pytest.raises(ValueError, match="heldout=9 asks for more targets"):
        _model(small, heldout=9)
    assert cli.heldout_option(["all"]) == "all" and cli.heldout_option(["3"]) == 3
    assert cli.heldout_option(None) == "auto" and cli.heldout_option(["A", "B"]) == ["A", "B"]


# --------------------------------------------------------------------------- predictions


def test_predict_perturbation_accepts_the_control_label(small):
    model, a = _model(small)
    target = model.targets_[0]
    pred = model.predict_perturbation(["", target], n_cells=20, seed=3)
    # shown as "control" (the data's control value is ""), read back as control
    assert pred.obs["perturbation"].cat.categories.tolist() == ["control", target]
    ctrl = pred[pred.obs["perturbation"] == "control"]
    # residual prediction without an intervention: the control cells themselves
    real = a[ctrl.obs["control_cell"].to_numpy()].X
    real = real.toarray() if sp.issparse(real) else np.asarray(real)
    np.testing.assert_allclose(ctrl.X, real, atol=1e-5)
    assert not ctrl.obs["untrained_target"].any()


def test_predict_control_label_direct_is_the_reconstruction(small):
    model, a = _model(small, prediction="direct")
    pred = model.predict_perturbation("", n_cells=10, seed=0, use_mean=True)
    assert pred.n_obs == 10 and np.isfinite(pred.X).all()
    x = a[pred.obs["control_cell"].to_numpy()].X
    x = torch.as_tensor(x.toarray() if sp.issparse(x) else np.asarray(x))
    with torch.no_grad():
        _, mu, _ = model.module.encode(x)
        recon = model.module.decode(model.module.causal(mu)).numpy()
    np.testing.assert_allclose(pred.X, recon, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_picks_de_genes_from_the_registered_layer(small):
    from scsena.evaluate import evaluate_model

    a = small.copy()
    a.layers["lognorm"] = a.X.copy()
    a.X = a.X[:, ::-1].copy()  # adata.X holds other values per gene than the layer
    scsena.SENAVAE.setup_anndata(a, layer="lognorm")
    model = scsena.SENAVAE(a)
    cache = {}
    evaluate_model(
        model, folds=("test",), baselines=(), n_de_genes=5, max_cells=30,
        activation_test=False, de_cache=cache,
    )
    (pert, n), genes = next(iter(cache.items()))
    ref = a.copy()
    ref.X = ref.layers["lognorm"]
    ref.obs["g"] = np.where(ref.obs["scsena_fold"].astype(str) == "control", "",
                            ref.obs["guide_ids"].astype(str))
    keep = ref.obs["g"].isin([pert, ""]).to_numpy()
    expected = top_de_genes(ref[keep].copy(), "g", pert, "", n_genes=n)
    assert list(genes) == list(expected)


# --------------------------------------------------------------------------- threads


class _Threads(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.seen = torch.get_num_threads()


def test_train_honours_scvi_num_threads(small):
    model, _ = _model(small)
    before = torch.get_num_threads()
    record = _Threads()
    try:
        scvi.settings.num_threads = 1
        torch.set_num_threads(2)  # changed since, e.g. by another library
        model.train(max_epochs=1, logger=False, callbacks=[record], **FAST)
        assert record.seen == 1
    finally:
        scvi.settings._num_threads = None
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- quiet runs


def test_train_save_load_without_third_party_chatter(small, tmp_path, caplog, capfd):
    model, a = _model(small)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        model.train(max_epochs=1, logger=False, **FAST)
        model.save(tmp_path / "m")
        scsena.SENAVAE.load(tmp_path / "m", adata=a)
    out = capfd.readouterr()
    text = out.out + out.err + caplog.text
    for noise in ("litlogger", "GPU available", "already downloaded", "Trainer.fit"):
        assert noise not in text
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m or "__version__" in m]
    assert not [m for m in messages if "logging interval" in m]
    # Lightning's loggers are back to their levels afterwards
    assert logging.getLogger("lightning.pytorch.utilities.rank_zero").level == logging.NOTSET


class _Sigterm(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_says_what_happened_without_scvi_nameerror_line(small, capfd):
    model, _ = _model(small)
    with (
        pytest.warns(UserWarning, match=r"stopped by SIGTERM during epoch 1 of 3"),
        pytest.raises(SystemExit),
    ):
        model.train(max_epochs=3, logger=False, callbacks=[_Sigterm()], **FAST)
    out = capfd.readouterr()
    assert "NameError" not in out.out + out.err
    assert "Exception raised during training" not in out.out + out.err


def test_cli_demo_threads_and_no_third_party_lines(capfd):
    before = torch.get_num_threads()
    try:
        rc = cli.main(
            ["demo", "--n-cells", "300", "--n-genes", "150", "--n-targets", "3",
             "--n-doubles", "1", "--epochs", "1", "--threads", "1"]
        )
        assert rc == 0 and scvi.settings.num_threads == 1
    finally:
        scvi.settings._num_threads = None
        torch.set_num_threads(before)
    out = capfd.readouterr()
    lines = (out.out + out.err).splitlines()
    assert any(line.startswith("[train]") for line in lines)
    third_party = [
        line for line in lines
        if "INFO" in line or "Warning" in line or "litlogger" in line or "GPU available" in line
    ]
    assert third_party == []


def test_cli_train_keep_terms_heldout_all_then_activity(tmp_path):
    sim = ["--data", "simulate", "--sim-cells", "300", "--sim-genes", "150",
           "--sim-targets", "3", "--sim-doubles", "1", "--sim-seed", "0"]
    data = scsena.datasets.simulate_perturbseq(
        n_cells=300, n_genes=150, n_targets=3, n_doubles=1, seed=0
    )
    term = scsena.gene_sets.dropped_terms(data.var_names, "go_bp_sena")["term"].iloc[0]
    save = tmp_path / "run"
    before = torch.get_num_threads()
    try:
        rc = cli.main(["train", *sim, "--epochs", "1", "--save-dir", str(save),
                       "--heldout", "all", "--keep-terms", term, "--threads", "1"])
    finally:
        scvi.settings._num_threads = None
        torch.set_num_threads(before)
    assert rc == 0
    with pytest.warns(UserWarning, match="loaded without data"):
        model = scsena.SENAVAE.load(save / "seed0" / "model")
    assert term in model.term_ids_ and model.heldout_ == sorted(model.targets_)
    # activity rebuilds the data's mask from config.json, keep_terms included
    assert cli.main(["activity", "--model-dir", str(save), "--out", str(tmp_path / "a")]) == 0
