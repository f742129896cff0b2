"""The two presets: the published model reproduced exactly, and the default's remedies."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import scsena
import scsena.evaluate
from conftest import TRAIN_KW
from scsena.module import (
    InterventionEncoder,
    InterventionTable,
    assignment_imbalance,
    mean_shift_error,
)

#: Numbers printed by the published-model implementation before presets existed
#: (same data, seed and arguments); ``preset="reference"`` must reproduce them.
REFERENCE_NUMBERS = {
    "best_epoch": 4,
    "mmd": [2.7025806, 1.9936582],
    "mse": [0.7662562, 0.7370913],
    "pred_sum": 22742.06007230282,
    "pred_00": 2.9637396335601807,
    "latent": ["z2", "z3", "z2", "z3"],
}


def _tiny():
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=600, n_genes=150, n_targets=4, n_doubles=2, seed=3
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    return adata


def test_reference_preset_reproduces_the_published_model_numbers():
    adata = _tiny()
    model = scsena.SENAVAE(adata, seed=5, preset="reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the numbers were printed with one thread
    try:
        model.train(**(TRAIN_KW | {"max_epochs": 8, "batch_size": 16}))
    finally:
        torch.set_num_threads(threads)
    folds = model.get_fold_losses("double")
    t0, t1 = model.targets_[:2]
    pred = model.predict_perturbation([t0, f"{t0},{t1}"], n_cells=20, seed=2)
    assert model.best_epoch_ == REFERENCE_NUMBERS["best_epoch"]
    np.testing.assert_allclose(folds["mmd"], REFERENCE_NUMBERS["mmd"], rtol=1e-5)
    np.testing.assert_allclose(folds["mse"], REFERENCE_NUMBERS["mse"], rtol=1e-5)
    assert float(np.float64(pred.X).sum()) == pytest.approx(REFERENCE_NUMBERS["pred_sum"], rel=1e-5)
    assert float(pred.X[0, 0]) == pytest.approx(REFERENCE_NUMBERS["pred_00"], rel=1e-5)
    assert model.get_intervention_targets()["latent"].tolist() == REFERENCE_NUMBERS["latent"]


def test_presets_set_the_network_and_explicit_arguments_win(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    ref = scsena.SENAVAE(sim_adata, preset="reference")
    assert isinstance(ref.module.intervention, InterventionEncoder)
    assert ref.module.prediction == "direct" and ref.module.lambda_mean == 0
    default = scsena.SENAVAE(sim_adata)
    assert default.preset_ == "scsena"
    assert isinstance(default.module.intervention, InterventionTable)
    assert default.module.prediction == "residual" and default.module.lambda_mean > 0
    mixed = scsena.SENAVAE(sim_adata, preset="reference", assignment="table", lambda_mean=3.0)
    assert isinstance(mixed.module.intervention, InterventionTable)
    assert mixed.module.lambda_mean == 3.0 and mixed.module.prediction == "direct"
    with pytest.raises(ValueError, match="preset must be one of"):
        scsena.SENAVAE(sim_adata, preset="paper")
    with pytest.raises(ValueError, match="assignment must be"):
        scsena.SENAVAE(sim_adata, assignment="gumbel")
    with pytest.raises(ValueError, match="prediction must be"):
        scsena.SENAVAE(sim_adata, prediction="noise")


def test_table_starts_one_to_one_and_random_when_too_few_factors():
    torch.manual_seed(0)
    table = InterventionTable(5, 7)
    bc = table.assignment(torch.arange(5), temperature=1000.0)
    assert bc.argmax(1).tolist() == [0, 1, 2, 3, 4]
    few = InterventionTable(5, 3)  # Z < P: no one-to-one start
    assert not few.one_to_one and few.table.abs().max() < 0.1
    # slots: -1 is "no target"; strengths are zero there
    bc, s = table(torch.tensor([[0, -1], [2, 4]]), temperature=1.0)
    assert bc.shape == (2, 2, 7) and s[0, 1] == 0 and s[1, 1] == table.shift[4]


def test_extra_loss_terms():
    one = torch.eye(4)
    assert float(assignment_imbalance(one)) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.zeros(4, 4)
    collapsed[:, 2] = 1
    assert float(assignment_imbalance(collapsed)) == pytest.approx(np.log(4), rel=1e-5)
    y = torch.randn(32, 10)
    assert float(mean_shift_error(y + 2.0, y)) == pytest.approx(4.0, rel=1e-5)
    assert float(mean_shift_error(y[torch.randperm(32)], y)) == pytest.approx(0.0, abs=1e-10)


def test_residual_prediction_is_the_counterfactual_of_the_control_cell(sim_adata):
    scsena.SENAVAE.setup_anndata(sim_adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(sim_adata, seed=1)
    with torch.no_grad():  # a non-trivial decoder and intervention
        model.module.d2.bias.normal_(0, 1)
        model.module.intervention.shift.fill_(3.0)
    control = np.flatnonzero(sim_adata.obs["guide_ids"].astype(str) == "")[:16]
    target = model.targets_[1]
    pred = model.predict_perturbation(target, control_indices=control, use_mean=True).X
    x = torch.as_tensor(sim_adata.X[control].toarray())
    m = model.module
    with torch.no_grad():
        _, mu, _ = m.encode(x)
        codes = torch.full((len(control), 2), -1)
        codes[:, 0] = 1
        z_int, _ = m.intervene(mu, codes, 1000.0)
        expected = torch.relu(x + m.decode(m.causal(z_int)) - m.decode(m.causal(mu)))
    np.testing.assert_allclose(pred, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert (pred >= 0).all()


def test_published_protocol_stacks_chunks_of_batches(trained):
    model, adata, _ = trained
    per_batch = model.get_fold_losses("double")
    published = model.get_fold_losses("double", protocol="published", chunk_batches=2)
    n_batches = sum(n // 32 for n in per_batch["n_cells"])  # incomplete batches dropped
    # batch 0 alone, then 1-2, 3-4, ...; batches after the last multiple of K dropped
    expected_chunks = 1 + (n_batches - 1) // 2
    assert len(published) == expected_chunks
    assert published["n_cells"].iloc[0] == 32
    assert (published["n_cells"].iloc[1:] == 64).all()
    # the chunk MMD equals the MMD of the stacked cells: larger stacks mix perturbations,
    # which a per-batch average never does; the two protocols give different numbers
    assert not np.isclose(published["mmd"].mean(), per_batch["mmd"].mean())
    with pytest.raises(ValueError, match="protocol must be"):
        model.get_fold_losses("double", protocol="chunked")


def test_shared_factor_warning_names_factor_and_count(sim_adata):
    small = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(small, perturbation_key="guide_ids")
    model = scsena.SENAVAE(small, seed=0, preset="reference")
    with torch.no_grad():  # every target's logits favour factor 3 (a collapse)
        model.module.intervention.c2.bias.zero_()
        model.module.intervention.c2.bias[3] = 50.0
    # epoch 0 has alpha = 0: the intervention encoder gets no gradient
    with pytest.warns(
        UserWarning,
        match=r"8 of 8 perturbation targets act on the same latent "
        r"factor z3.*preset='scsena'",
    ):
        model.train(**(TRAIN_KW | {"max_epochs": 1}))
    default = scsena.SENAVAE(small, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default.train(**(TRAIN_KW | {"max_epochs": 1}))
    assert not [w for w in caught if "act on the same latent factor" in str(w.message)]
    assert default.get_intervention_targets()["latent"].nunique() == len(default.targets_)


def test_default_intervention_targets_recover_the_truth(trained):
    model, adata, _ = trained
    truth = adata.uns["scsena_simulation"]["target_factors"]
    score = scsena.metrics.assignment_recovery(model.get_intervention_targets()["latent"], truth)
    assert score["distinct_factors"] == len(model.targets_)
    assert isinstance(score["matching"], pd.DataFrame)
    # the one-to-one start names factors arbitrarily: recovery is measured after matching
    assert score["accuracy"] >= 0.75


@pytest.mark.slow
def test_default_beats_control_on_the_issue_data():
    """The default model, set up and trained with defaults (40 epochs), on 6,000 cells."""
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=6000, n_genes=1000, n_targets=12, n_doubles=8, seed=0
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(adata)
    model.train(**(TRAIN_KW | {"max_epochs": 40, "batch_size": 32}))
    distinct = model.get_intervention_targets()["latent"].nunique()
    assert distinct >= 0.8 * len(model.targets_)
    res = scsena.evaluate.evaluate_model(model, folds=("double", "test"), activation_test=False)
    for fold in ("double", "test"):
        table = res.table(["mmd", "energy", "l2_top1000", "pearson_delta_de"], fold=fold)
        for metric in ("mmd", "energy", "l2_top1000"):
            assert table.loc["scsena", metric] < table.loc["control", metric], (fold, metric)
        additive = table.loc["additive", "pearson_delta_de"]
        assert table.loc["scsena", "pearson_delta_de"] >= 0.8 * additive, fold



def test_building_blocks_default_to_the_published_settings():
    """One place for defaults: the module's and the plan's signatures read the presets."""
    import inspect

    from scsena.model import MODULE_PRESETS, TRAIN_PRESETS
    from scsena.module import SENAModule
    from scsena.train import SENATrainingPlan

    module = inspect.signature(SENAModule).parameters
    reference = MODULE_PRESETS["reference"]
    assert {k: module[k].default for k in reference} == reference
    plan = inspect.signature(SENATrainingPlan).parameters
    shared = [k for k in TRAIN_PRESETS["reference"] if k in plan]
    assert shared == ["lr", "alpha_max", "beta_max", "tau_max", "select_best_epoch"]
    assert all(plan[k].default == TRAIN_PRESETS["reference"][k] for k in shared)
