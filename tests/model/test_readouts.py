"""Pathway readouts on a knock-out screen: evidence, twins, consensus, model-free scores."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scsena
from scsena import readouts
from scsena.metrics import gene_set_scores, members_lfc

KO = dict(
    n_cells=1600, n_genes=300, n_targets=8, n_doubles=4, seed=0, perturbation_type="knockout"
)
QUIET = dict(
    batch_size=32,
    enable_progress_bar=False,
    enable_model_summary=False,
    logger=False,
    enable_checkpointing=False,
)


def _model(adata, seed=0, epochs=8, **kwargs):
    model = scsena.SENAVAE(adata, seed=seed, **kwargs)
    model.train(max_epochs=epochs, **QUIET)
    return model


@pytest.fixture(scope="module")
def ko():
    adata = scsena.datasets.simulate_perturbseq(**KO)
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    models = [_model(adata, seed=s) for s in (0, 1)]
    return adata, models


@pytest.fixture(scope="module")
def ko_da(ko):
    adata, models = ko
    return models[0].differential_activity(gene_symbols="gene_symbols")


def _lfc(adata, label):
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    labels = adata.obs["guide_ids"].astype(str).to_numpy()
    return x[labels == label].mean(axis=0) - x[labels == ""].mean(axis=0)


def test_every_row_carries_the_genes_behind_it(ko, ko_da):
    adata, models = ko
    model = models[0]
    da = ko_da
    for col in ("members_lfc", "members_up", "members_down", "driver_genes", "consistent"):
        assert col in da.columns
    # members_lfc is the weighted mean log-fold change of the members, by hand
    target = model.targets_[0]
    lfc = _lfc(adata, target)
    weights = model.module.fc1.member_weights().toarray()
    rows = da[da["perturbation"] == target].set_index("term")
    expected = (weights @ lfc) / np.abs(weights).sum(axis=1)
    np.testing.assert_allclose(rows.loc[model.term_ids_, "members_lfc"], expected, atol=1e-5)
    moved = np.abs(lfc) >= 0.1
    member = model.gene_set_mask.membership.toarray().astype(bool)
    np.testing.assert_array_equal(
        rows.loc[model.term_ids_, "members_up"], (member & (lfc >= 0.1)[:, None]).sum(axis=0)
    )
    assert moved.any()
    # drivers are named by the symbols asked for, each with its own log-fold change
    top = rows.iloc[0]
    first = top["driver_genes"].split(", ")[0]
    symbol, value = first.split(" (")
    gene = adata.var_names[adata.var["gene_symbols"] == symbol][0]
    assert float(value.rstrip(")")) == pytest.approx(lfc[adata.var_names.get_loc(gene)], abs=0.01)


def test_default_directions_hold_by_construction(ko, ko_da):
    _, models = ko
    assert (models[0].get_term_orientation()["sign"] == 1).all()
    da = ko_da
    # the effect is the weighted mean log-fold change of the members: same sign, same value
    assert da["consistent"].all()
    np.testing.assert_allclose(da["effect"], da["members_lfc"], atol=1e-5)


def test_knocked_out_target_reads_down_in_its_own_terms(ko, ko_da):
    adata, models = ko
    truth = adata.uns["scsena_simulation"]
    sets = models[0].gene_set_mask.gene_sets()
    for target, ensembl in zip(truth["targets"], truth["target_ensembl"]):
        own = [t for t, genes in sets.items() if ensembl in genes]
        rows = ko_da[(ko_da["perturbation"] == target) & ko_da["term"].isin(own)]
        # the knocked-out gene itself drives its smallest term down
        smallest = rows.sort_values("n_genes").iloc[0]
        assert smallest["effect"] < 0, (target, smallest.to_dict())


def test_identical_member_terms_answer_alike(ko, ko_da):
    _, models = ko
    sets = models[0].gene_set_mask.gene_sets()
    groups = pd.Series({t: tuple(g) for t, g in sets.items()})
    twins = groups[groups.duplicated(keep=False)]
    assert len(twins) >= 2  # the knock-out simulator makes twins on purpose
    rows = ko_da[ko_da["term"].isin(twins.index)].assign(key=lambda d: d["term"].map(groups))
    spread = rows.groupby(["perturbation", "key"]).agg(
        effect=("effect", np.ptp), rank=("rank", np.ptp)
    )
    assert (spread["effect"] == 0).all() and (spread["rank"] == 0).all()


def test_reference_preset_reports_whether_rows_agree(ko):
    adata, _ = ko
    ref = _model(adata, epochs=2, preset="reference")
    da = ref.differential_activity()
    assert da["consistent"].notna().all()
    assert set(ref.get_term_orientation()["sign"]) <= {-1, 1}


def test_consensus_counts_the_seeds_that_agree(ko):
    _, models = ko
    table = readouts.consensus_activity(models, top_k=5)
    assert {"n_up", "n_down", "direction", "agree_direction", "n_top_k"} <= set(table.columns)
    assert (table["n_seeds"] == 2).all()
    assert ((table["n_up"] + table["n_down"]) <= 2).all()
    das = [m.differential_activity() for m in models]
    row = table.iloc[0]
    in_top = sum(
        int(d[(d.perturbation == row.perturbation) & (d.term == row.term)]["rank"].iloc[0] <= 5)
        for d in das
    )
    assert row["n_top_k"] == in_top
    # the same from the tables
    again = readouts.consensus_activity(das, top_k=5)
    pd.testing.assert_frame_equal(again, table)


def test_consensus_refuses_models_of_other_genes_terms_or_targets(ko):
    adata, models = ko
    fewer_genes = adata[:, adata.var_names[10:]].copy()
    scsena.SENAVAE.setup_anndata(fewer_genes, perturbation_key="guide_ids")
    with pytest.raises(ValueError, match="other genes"):
        readouts.consensus_activity([models[0], scsena.SENAVAE(fewer_genes)])
    other_terms = adata.copy()
    scsena.SENAVAE.setup_anndata(other_terms, perturbation_key="guide_ids", min_genes=8)
    with pytest.raises(ValueError, match="other terms"):
        readouts.consensus_activity([models[0], scsena.SENAVAE(other_terms)])
    drop = models[0].targets_[0]
    keep = ~adata.obs["guide_ids"].astype(str).str.contains(drop).to_numpy()
    fewer_targets = adata[keep].copy()
    scsena.SENAVAE.setup_anndata(fewer_targets, perturbation_key="guide_ids")
    with pytest.raises(ValueError, match=f"other targets.*{drop}"):
        readouts.consensus_activity([models[0], scsena.SENAVAE(fewer_targets)])
    da = models[0].differential_activity()
    with pytest.raises(ValueError, match="other terms"):
        readouts.consensus_activity([da, da[da["term"] != da["term"].iloc[0]]])
    with pytest.raises(ValueError, match="at least 2"):
        readouts.consensus_activity([da])
    with pytest.raises(ValueError, match="top_k must be"):
        readouts.consensus_activity([da, da], top_k=0)
    with pytest.raises(ValueError, match="either models or"):
        readouts.consensus_activity([da, models[0]])


def test_members_lfc_names_missing_members(ko):
    adata, _ = ko
    genes = list(adata.var_names[:4])
    table = members_lfc(adata, {"T1": genes}, "guide_ids")
    lfc = _lfc(adata, table["perturbation"].iloc[0])
    assert table["members_lfc"].iloc[0] == pytest.approx(lfc[:4].mean(), abs=1e-6)
    with pytest.raises(ValueError, match=r"Term 'T2'.*\['NOTAGENE'\].*not in the data"):
        members_lfc(adata, {"T1": genes, "T2": [genes[0], "NOTAGENE"]}, "guide_ids")
    with pytest.raises(ValueError, match="perturbation_key='guide'"):
        members_lfc(adata, {"T1": genes}, "guide")


def test_model_free_scores(ko):
    adata, models = ko
    sets = models[0].gene_set_mask.gene_sets()
    mean = gene_set_scores(adata, sets, method="mean")
    term = next(iter(sets))
    x = adata[:, sets[term]].X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    np.testing.assert_allclose(mean[term], x.mean(axis=1), atol=1e-6)
    ulm = gene_set_scores(adata, sets, method="ulm")
    assert ulm.shape == mean.shape
    # a term's ULM score follows its members' mean across cells
    assert np.corrcoef(ulm[term], mean[term])[0, 1] > 0.5
    with pytest.raises(ValueError, match="method must be one of"):
        gene_set_scores(adata, sets, method="gsea")


def test_compare_and_score_against_truth(ko):
    adata, models = ko
    table = readouts.compare_readouts(models[0], methods=("model", "mean"))
    assert set(table["method"]) == {"model", "mean"}
    model_rows = table[table["method"] == "model"]
    mean_rows = table[table["method"] == "mean"]
    assert len(model_rows) == len(mean_rows)
    # the plain mean's evidence is the plain mean of the members, so always consistent
    assert mean_rows["consistent"].all()
    scores = readouts.score_readouts(table, adata, models[0].gene_set_mask.gene_sets())
    assert list(scores["method"]) == ["model", "mean"]
    for col in ("sign_one_way", "top_k_recall", "top_k_direction", "null_quiet", "truth_sign"):
        assert scores[col].between(0, 1).all(), col
    assert (scores["identical_max_diff"] == 0).all()
    with pytest.raises(ValueError, match="Unknown readout method"):
        readouts.compare_readouts(models[0], methods=("model", "gsva"))
    plain = adata.copy()
    del plain.uns["scsena_simulation"]
    with pytest.raises(ValueError, match="ground truth"):
        readouts.score_readouts(table, plain, models[0].gene_set_mask.gene_sets())


def test_model_gene_set_scores_and_activation_test_beside_the_model(ko):
    adata, models = ko
    model = models[0]
    scores = model.gene_set_scores(indices=np.arange(50), batch_size=16)
    assert list(scores.columns) == model.term_ids_ and len(scores) == 50
    sets = model.gene_set_mask.gene_sets()
    whole = gene_set_scores(adata[:50], sets).reindex(columns=model.term_ids_)
    np.testing.assert_allclose(scores.to_numpy(), whole.to_numpy(), atol=1e-5)
    for readout in ("mean", "ulm"):
        test = model.activation_test(readout=readout)
        assert test["recall@25"].between(0, 1).all()
    from scsena.evaluate import evaluate_model

    res = evaluate_model(model, folds=(), n_de_genes=0).results
    recall = res[res["metric"] == "recall@25"]
    assert set(recall["method"]) == {"scsena", "gene-set mean", "gene-set ULM"}
    with pytest.raises(ValueError, match="Unknown readout baseline"):
        evaluate_model(model, folds=(), n_de_genes=0, readout_baselines=("gsva",))
