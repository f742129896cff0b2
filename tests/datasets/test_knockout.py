"""The simulator's knock-out mode and the traps of real screens."""

import numpy as np
import pytest
import scipy.sparse as sp

import scsena
from scsena.datasets import simulate_perturbseq

KO = dict(n_cells=2400, n_genes=400, n_targets=8, n_doubles=4, seed=1)


@pytest.fixture(scope="module")
def ko():
    return simulate_perturbseq(**KO, perturbation_type="knockout")


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _means(adata, label):
    return _dense(adata[adata.obs["guide_ids"].astype(str) == label].X).mean(axis=0)


def test_knocked_out_gene_falls_in_its_own_cells(ko):
    truth = ko.uns["scsena_simulation"]
    assert truth["perturbation_type"] == "knockout"
    control = _means(ko, "")
    for target, ensembl in zip(truth["targets"], truth["target_ensembl"]):
        g = ko.var_names.get_loc(ensembl)
        assert _means(ko, target)[g] < control[g] - 0.3, target
        # the truth says so too
        i = list(truth["targets"]).index(target)
        assert truth["target_gene_effect"][i, g] < 0


def test_null_targets_move_only_their_own_gene(ko):
    truth = ko.uns["scsena_simulation"]
    effect = np.asarray(truth["target_effect"])
    assert effect.sum() == 4  # the knock-out default: half of the targets are null
    for i, target in enumerate(truth["targets"]):
        row = truth["target_gene_effect"][i]
        if effect[i]:
            assert np.count_nonzero(row) > 1 and len(truth["target_factors"][target]) > 0
        else:
            assert np.count_nonzero(row) == 1 and len(truth["target_factors"][target]) == 0
            assert not np.any(truth["target_shift"][i])


def test_programs_act_on_part_of_their_members_with_mixed_signs(ko):
    truth = ko.uns["scsena_simulation"]
    loadings = np.asarray(
        truth["loadings"].todense() if sp.issparse(truth["loadings"]) else truth["loadings"]
    )
    sets = scsena.gene_sets.go_bp(terms="sena", id_type="ensembl")
    var = set(ko.var_names)
    negative, acting, members = 0, 0, 0
    for k, term in enumerate(truth["factor_terms"]):
        measured = [g for g in sets[term] if g in var]
        pos = ko.var_names.get_indexer(measured)
        members += len(pos)
        acting += np.count_nonzero(loadings[k, pos])
        negative += int((loadings[k, pos] < 0).sum())
    assert 0.5 <= acting / members <= 0.75  # program_fraction 0.6
    assert 0.15 <= negative / acting <= 0.35  # negative_fraction 0.25


def test_twin_terms_have_identical_measured_members(ko):
    truth = ko.uns["scsena_simulation"]
    assert len(truth["twin_terms"]) >= 1
    adata = ko.copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    sets = scsena.SENAVAE(adata).gene_set_mask.gene_sets()
    for program, twins in truth["twin_terms"].items():
        for twin in twins:
            assert sets[program] == sets[twin], (program, twin)


def test_dominant_genes_dominate_control_variance(ko):
    truth = ko.uns["scsena_simulation"]
    dominant = ko.var_names.get_indexer(list(truth["dominant_genes"]))
    assert len(dominant) == 8  # max(3, 400 // 50)
    control = _dense(ko[ko.obs["guide_ids"].astype(str) == ""].X)
    var = control.var(axis=0)
    others = np.setdiff1d(np.arange(ko.n_vars), dominant)
    assert np.median(var[dominant]) > np.quantile(var[others], 0.9)
    assert control[:, dominant].mean() > control[:, others].mean() + 1.0
    targets = ko.var_names.get_indexer(list(truth["target_ensembl"]))
    assert not set(dominant) & set(targets)


def test_each_trap_alone_and_their_checks():
    off = simulate_perturbseq(
        **KO,
        perturbation_type="knockout",
        null_fraction=0.0,
        program_fraction=1.0,
        negative_fraction=0.0,
        redundant_programs=0,
        n_dominant_genes=0,
    )
    truth = off.uns["scsena_simulation"]
    assert truth["target_effect"].all() and not truth["twin_terms"]
    assert len(truth["dominant_genes"]) == 0
    with pytest.raises(ValueError, match="perturbation_type must be one of"):
        simulate_perturbseq(**KO, perturbation_type="crispri")
    with pytest.raises(ValueError, match="null_fraction must be in"):
        simulate_perturbseq(**KO, perturbation_type="knockout", null_fraction=1.0)
    with pytest.raises(ValueError, match="negative_fraction"):
        simulate_perturbseq(**KO, negative_fraction=0.8)
    with pytest.raises(ValueError, match="n_dominant_genes"):
        simulate_perturbseq(**KO, n_dominant_genes=1000)


def test_activation_mode_is_untouched_by_the_new_options():
    """Defaults stay bit-identical; activation records no trap settings."""
    plain = simulate_perturbseq(n_cells=300, n_genes=200, n_targets=4, n_doubles=2)
    truth = plain.uns["scsena_simulation"]
    assert truth["perturbation_type"] == "activation" and truth["target_effect"].all()
    assert "null_fraction" not in truth["params"]


def test_knockout_panel_of_300_genes_with_full_go_runs_end_to_end():
    adata = simulate_perturbseq(
        n_cells=900, n_genes=300, n_targets=6, n_doubles=2, perturbation_type="knockout"
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp")
    model = scsena.SENAVAE(adata)
    model.train(
        max_epochs=2,
        batch_size=32,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    da = model.differential_activity(gene_symbols="gene_symbols")
    assert len(model.term_ids_) > 100 and da["consistent"].all()
    pred = model.predict_perturbation(adata.obs["guide_ids"].cat.categories[-1], n_cells=20)
    assert np.isfinite(pred.X).all()


def test_saturating_response_makes_doubles_sub_additive():
    kw = dict(
        n_cells=3000,
        n_genes=300,
        n_targets=6,
        n_doubles=3,
        seed=2,
        interaction_strength=0,
        effect_size=3.0,
    )
    linear = simulate_perturbseq(**kw)
    saturated = simulate_perturbseq(**kw, saturation=1.0)
    assert saturated.uns["scsena_simulation"]["params"]["saturation"] == 1.0
    assert "saturation" not in linear.uns["scsena_simulation"]["params"]

    def gap(adata):
        """How far the doubles' mean change is from the sum of their singles' changes,
        relative to the doubles' change."""
        control = _means(adata, "")
        gaps, sizes = [], []
        for double in adata.uns["scsena_simulation"]["doubles"]:
            a, b = double.split(",")
            additive = _means(adata, a) + _means(adata, b) - control
            gaps.append(np.abs(_means(adata, double) - additive).mean())
            sizes.append(np.abs(_means(adata, double) - control).mean())
        return np.mean(gaps) / np.mean(sizes)

    # without interactions a linear response is additive up to noise; saturation is not
    assert gap(saturated) > 1.5 * gap(linear)
    truth = saturated.uns["scsena_simulation"]["target_gene_effect"]
    assert np.abs(truth).max() <= 1.0 + 2.0 * 1.4 + 1e-5  # saturated programs + own gene
    with pytest.raises(ValueError, match="saturation must be > 0"):
        simulate_perturbseq(**kw, saturation=0)
