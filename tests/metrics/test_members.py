"""Gene-level evidence of pathway calls and model-free gene-set scores, by hand."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scsena.metrics import (
    consistent_sign,
    gene_set_matrix,
    gene_set_scores,
    group_mean_difference,
    member_evidence,
    members_lfc,
)


def _toy():
    x = np.array(
        [
            [1.0, 2.0, 0.0, 1.0],  # control
            [1.0, 2.0, 0.0, 3.0],  # control
            [3.0, 2.0, 0.5, 2.0],  # A
            [3.0, 2.0, 0.5, 2.0],  # A
        ]
    )
    obs = pd.DataFrame({"pert": ["", "", "A", "A"]}, index=[f"c{i}" for i in range(4)])
    var = pd.DataFrame({"symbol": ["G0", "G1", "G2", "G3"]}, index=["e0", "e1", "e2", "e3"])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var)


def test_gene_set_matrix_rows_are_weighted_means():
    terms, w = gene_set_matrix({"T1": ["e0", "e1"], "T2": ["e3"]}, ["e0", "e1", "e2", "e3"])
    assert terms == ["T1", "T2"]
    np.testing.assert_allclose(w.toarray(), [[0.5, 0.5, 0, 0], [0, 0, 0, 1]])
    weights = pd.DataFrame([[3.0, 1.0, 0.0, 0.0]], index=["T"], columns=["e0", "e1", "e2", "e3"])
    _, w = gene_set_matrix(weights, ["e0", "e1", "e2", "e3"])
    np.testing.assert_allclose(w.toarray(), [[0.75, 0.25, 0, 0]])
    with pytest.raises(ValueError, match=r"Term 'T1'.*\['x9'\]"):
        gene_set_matrix({"T1": ["e0", "x9"]}, ["e0", "e1"])
    terms, w = gene_set_matrix({"T1": ["e0", "x9"], "T2": ["x8"]}, ["e0", "e1"], missing="drop")
    assert terms == ["T1"] and w.toarray().tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="non-negative"):
        gene_set_matrix(weights * -1, ["e0", "e1", "e2", "e3"])


def test_group_mean_difference():
    adata = _toy()
    diff = group_mean_difference(adata.X, adata.obs["pert"], ["A"])
    np.testing.assert_allclose(diff, [[2.0, 0.0, 0.5, 0.0]])
    with pytest.raises(ValueError, match="No cells with label 'B'"):
        group_mean_difference(adata.X, adata.obs["pert"], ["B"])
    with pytest.raises(ValueError, match="No control cells"):
        group_mean_difference(adata.X, adata.obs["pert"], ["A"], control_value="ctrl")


def test_member_evidence_weighs_counts_and_names_drivers():
    diff = np.array([[2.0, -0.05, 0.5, -1.0]])
    weights = sp.csr_matrix(np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, -0.75]]))
    out = member_evidence(diff, ["A"], ["T1", "T2"], weights, ["G0", "G1", "G2", "G3"], 2)
    t1, t2 = out.iloc[0], out.iloc[1]
    assert t1["members_lfc"] == pytest.approx((2.0 - 0.05) / 2)
    # a signed weight (free layer oriented down) counts against the member's change
    assert t2["members_lfc"] == pytest.approx((0.25 * 0.5 + 0.75 * 1.0) / 1.0)
    assert (t1["members_up"], t1["members_down"]) == (1, 0)  # -0.05 is below min_lfc
    assert (t2["members_up"], t2["members_down"]) == (1, 1)
    assert t1["driver_genes"] == "G0 (+2.00), G1 (-0.05)"
    assert t2["driver_genes"] == "G3 (-1.00), G2 (+0.50)"
    every = member_evidence(diff, ["A"], ["T1", "T2"], weights, list("abcd"), 1, min_lfc=0.0)
    assert every.iloc[0]["members_down"] == 1 and every.iloc[0]["driver_genes"] == "a (+2.00)"


def test_members_lfc_on_anndata_with_symbols():
    out = members_lfc(_toy(), {"T1": ["e0", "e2"]}, "pert", gene_symbols="symbol")
    row = out.iloc[0]
    assert row["perturbation"] == "A" and row["members_lfc"] == pytest.approx(1.25)
    assert row["driver_genes"].startswith("G0 (+2.00)")


def test_gene_set_scores_mean_dense_and_sparse_agree():
    adata = _toy()
    sets = {"T1": ["e0", "e3"], "T2": ["e1", "e2", "e3"]}
    sparse_scores = gene_set_scores(adata, sets)
    dense = adata.copy()
    dense.X = dense.X.toarray()
    np.testing.assert_allclose(gene_set_scores(dense, sets), sparse_scores)
    np.testing.assert_allclose(sparse_scores["T1"], [1.0, 2.0, 2.5, 2.5])


def test_ulm_without_decoupler_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "decoupler", None)  # import decoupler fails
    with pytest.raises(ImportError, match=r"pip install 'scsena\[eval\]'"):
        gene_set_scores(_toy(), {"T1": ["e0", "e3"]}, method="ulm")


def test_consistent_sign():
    out = consistent_sign([0.5, -0.2, 1e-9, 0.3, 0.1], [0.4, 0.1, -1e-9, np.nan, -0.1])
    assert out.tolist() == [True, False, True, pd.NA, False]


def test_member_evidence_checks_its_options():
    w = sp.csr_matrix(np.eye(2))
    with pytest.raises(ValueError, match="n_drivers must be"):
        member_evidence(np.zeros((1, 2)), ["A"], ["T1", "T2"], w, ["a", "b"], n_drivers=-1)
    with pytest.raises(ValueError, match="min_lfc must be"):
        member_evidence(np.zeros((1, 2)), ["A"], ["T1", "T2"], w, ["a", "b"], min_lfc=-0.1)
    none = member_evidence(np.ones((1, 2)), ["A"], ["T1", "T2"], w, ["a", "b"], n_drivers=0)
    assert none["driver_genes"].tolist() == ["", ""]
