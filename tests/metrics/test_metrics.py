import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

from scsena import metrics

# ---------------------------------------------------------------- distribution metrics

X2 = np.array([[0.0, 0.0], [1.0, 0.0]])
Y2 = np.array([[0.0, 1.0], [1.0, 1.0]])
# Squared distances: within X and within Y {0, 1, 1, 0}; across {1, 2, 2, 1}, so
# MMD = (k0 + k1)/2 + (k0 + k1)/2 - 2 (k1 + k2)/2 = k0 - k2 for any kernel k(d2).


def test_mmd_single_kernel_by_hand():
    # kernel_num = 1: one bandwidth, sigma / 2**0 = sigma = 2 -> k(d2) = exp(-d2 / 2)
    assert metrics.mmd(X2, Y2, sigma=2.0, kernel_num=1) == pytest.approx(1.0 - math.exp(-1.0))


def test_mmd_reference_kernels_by_hand():
    # SENA default sigma = 200, 10 kernels with bandwidths 200 / 32 * 2**i
    bws = [6.25, 12.5, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0]
    k0 = 10.0
    k2 = sum(math.exp(-2.0 / b) for b in bws)
    assert metrics.mmd(X2, Y2) == pytest.approx(k0 - k2, rel=1e-12)
    assert metrics.mmd(X2, Y2, sigma=200.0) == pytest.approx(0.5769113, abs=1e-6)


def test_mmd_unequal_sizes_by_hand():
    x = np.array([[0.0]])
    y = np.array([[0.0], [2.0]])
    # k(d2) = exp(-d2 / 4); Kxx = 1, Kyy = Kxy = (1 + e^-1) / 2
    expected = 1.0 + (1 + math.exp(-1)) / 2 - 2 * (1 + math.exp(-1)) / 2
    assert metrics.mmd(x, y, sigma=4.0, kernel_num=1) == pytest.approx(expected)


def test_mmd_brute_force_and_identity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)) * 3
    y = rng.normal(size=(4, 3)) * 3 + 1
    bws = [20.0 / 32 * 2**i for i in range(10)]

    def k(a, b):
        d2 = float(np.sum((a - b) ** 2))
        return sum(math.exp(-d2 / bw) for bw in bws)

    kxx = np.mean([k(a, b) for a in x for b in x])
    kyy = np.mean([k(a, b) for a in y for b in y])
    kxy = np.mean([k(a, b) for a in x for b in y])
    assert metrics.mmd(x, y, sigma=20.0) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)
    assert metrics.mmd(x, x) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_1d_by_hand():
    x = np.array([[0.0], [1.0]])
    y = np.array([[3.0]])
    # E|X-Y| = (3 + 2)/2 = 2.5; E|X-X'| = (0 + 1 + 1 + 0)/4 = 0.5; E|Y-Y'| = 0
    assert metrics.energy_distance(x, y) == pytest.approx(2 * 2.5 - 0.5 - 0.0)
    # scipy returns the square root of the same V-statistic
    assert metrics.energy_distance(x, y) == pytest.approx(
        stats.energy_distance(x[:, 0], y[:, 0]) ** 2
    )
    assert metrics.energy_distance(x, x) == pytest.approx(0.0)


def test_energy_distance_2d_by_hand():
    # within-sample distances {0, 1, 1, 0}; across {1, sqrt2, sqrt2, 1}
    expected = 2 * (2 + 2 * math.sqrt(2)) / 4 - 0.5 - 0.5
    assert metrics.energy_distance(X2, Y2) == pytest.approx(expected)


def test_distribution_input_checks():
    with pytest.raises(ValueError, match="genes"):
        metrics.mmd(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        metrics.energy_distance(np.zeros(3), np.zeros((2, 3)))


# ---------------------------------------------------------------- mean-expression metrics

CTRL = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])  # mean [1, 1, 1]
REAL = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])  # mean [2, 1, 0] -> delta [1, 0, -1]
PRED = np.array([[4.0, 1.0, 1.0], [2.0, 1.0, 1.0]])  # mean [3, 1, 1] -> delta [2, 0, 0]


def test_delta_metrics_by_hand():
    out = metrics.delta_metrics(PRED, REAL, CTRL)
    assert set(out) == {"mse_delta", "pearson_delta"}
    assert out["mse_delta"] == pytest.approx(2.0 / 3.0)
    # centred deltas [4/3, -2/3, -2/3] and [1, 0, -1]: 2 / (sqrt(24)/3 * sqrt(2))
    assert out["pearson_delta"] == pytest.approx(math.sqrt(3) / 2)


def test_delta_metrics_de_genes():
    out = metrics.delta_metrics(PRED, REAL, CTRL, de_genes=np.array([0, 2]))
    # deltas on genes 0, 2: [2, 0] vs [1, -1]
    assert out["mse_delta_de"] == pytest.approx(1.0)
    assert out["pearson_delta_de"] == pytest.approx(1.0)
    mask = metrics.delta_metrics(PRED, REAL, CTRL, de_genes=np.array([True, False, True]))
    assert mask["mse_delta_de"] == pytest.approx(1.0)


def test_delta_metrics_perfect_and_constant():
    perfect = metrics.delta_metrics(REAL, REAL, CTRL)
    assert perfect["mse_delta"] == 0.0
    assert perfect["pearson_delta"] == pytest.approx(1.0)
    # predicting the control mean: constant (zero) delta -> NaN correlation, no error
    const = metrics.delta_metrics(CTRL, REAL, CTRL)
    assert math.isnan(const["pearson_delta"])
    assert const["mse_delta"] == pytest.approx(2.0 / 3.0)
    # 1-D means are accepted
    means = metrics.delta_metrics(np.array([3.0, 1, 1]), REAL.mean(0), np.ones(3))
    assert means["mse_delta"] == pytest.approx(2.0 / 3.0)


def test_l2_top_expressed_picks_control_top_genes():
    control = np.array([5.0, 1.0, 3.0, 0.0])
    real = np.array([5.0, 10.0, 3.0, 0.0])
    pred = np.array([6.0, 0.0, 1.0, 0.0])
    # top-2 control genes are 0 and 2: diff [-1, 2]; gene 1 (top in real) would give ~10
    assert metrics.l2_top_expressed(pred, real, control, n_genes=2) == pytest.approx(math.sqrt(5.0))
    assert metrics.l2_top_expressed(pred, real, control, n_genes=1) == pytest.approx(1.0)
    # more genes than exist: all genes
    assert metrics.l2_top_expressed(pred, real, control) == pytest.approx(math.sqrt(105.0))
    # cells x genes inputs use the means
    cells = np.stack([control - 1, control + 1])
    assert metrics.l2_top_expressed(
        np.stack([pred, pred]), np.stack([real, real]), cells, n_genes=2
    ) == pytest.approx(math.sqrt(5.0))


def test_additive_baseline():
    ctrl = np.array([1.0, 1.0, 1.0])
    singles = {"A": np.array([2.0, 1.0, 0.0]), "B": np.array([1.0, 3.0, 1.0])}
    expected = np.array([2.0, 3.0, 0.0])  # A + B - ctrl
    np.testing.assert_allclose(metrics.additive_baseline(singles, ctrl, "A,B"), expected)
    np.testing.assert_allclose(metrics.additive_baseline(singles, ctrl, "B,A"), expected)
    np.testing.assert_allclose(
        metrics.additive_baseline(singles, ctrl, "A+B", delimiter="+"), expected
    )
    np.testing.assert_allclose(metrics.additive_baseline(singles, ctrl, "A"), singles["A"])
    with pytest.raises(KeyError, match="C"):
        metrics.additive_baseline(singles, ctrl, "A,C")


def _toy_adata(rng, sparse_x=False):
    n_per, n_genes = 30, 10
    x = rng.normal(loc=2.0, scale=0.3, size=(2 * n_per, n_genes))
    x[n_per:, 2] += 3.0
    x[n_per:, 5] -= 1.5  # down-regulated: ranked by |score|
    x[n_per:, 7] += 2.0
    obs = pd.DataFrame({"pert": [""] * n_per + ["X"] * n_per})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(
        X=sparse.csr_matrix(x) if sparse_x else x,
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]),
    )
    adata.uns["log1p"] = {"base": None}
    adata.uns["mine"] = 1
    return adata


def test_top_de_genes_finds_shifted_genes_and_leaves_uns():
    adata = _toy_adata(np.random.default_rng(0))
    uns_keys = set(adata.uns)
    top = metrics.top_de_genes(adata, "pert", "X", "", n_genes=3)
    assert set(top.tolist()) == {2, 5, 7}
    assert top.dtype.kind == "i"
    assert set(adata.uns) == uns_keys
    assert list(adata.obs.columns) == ["pert"]
    full = metrics.top_de_genes(adata, "pert", "X", "", n_genes=100)
    assert sorted(full.tolist()) == list(range(10))
    assert set(full[:3].tolist()) == {2, 5, 7}
    sparse_top = metrics.top_de_genes(
        _toy_adata(np.random.default_rng(0), sparse_x=True), "pert", "X", "", n_genes=3
    )
    np.testing.assert_array_equal(sparse_top, top)
    with pytest.raises(ValueError, match="No cells"):
        metrics.top_de_genes(adata, "pert", "Y", "")


def test_perturbation_metrics_keys_perfect_and_mean_pred():
    keys = {
        "mmd",
        "energy",
        "spread_ratio",
        "mse_delta",
        "pearson_delta",
        "mse_delta_de",
        "pearson_delta_de",
        "l2_top1000",
    }
    perfect = metrics.perturbation_metrics(REAL, REAL, CTRL, de_genes=[0, 2])
    assert set(perfect) == keys
    assert perfect["mmd"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["energy"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["spread_ratio"] == pytest.approx(1.0)
    assert perfect["mse_delta"] == 0.0
    assert perfect["pearson_delta"] == pytest.approx(1.0)
    assert perfect["l2_top1000"] == 0.0

    out = metrics.perturbation_metrics(PRED, REAL, CTRL)
    assert set(out) == keys
    assert out["mmd"] == pytest.approx(metrics.mmd(PRED, REAL))
    assert out["energy"] == pytest.approx(metrics.energy_distance(PRED, REAL))
    assert math.isnan(out["mse_delta_de"]) and math.isnan(out["pearson_delta_de"])
    assert out["l2_top1000"] == pytest.approx(math.sqrt(2.0))  # means [3,1,1] vs [2,1,0]

    mean_pred = metrics.perturbation_metrics(PRED.mean(0), REAL, CTRL)
    assert math.isnan(mean_pred["mmd"]) and math.isnan(mean_pred["energy"])
    for k in ("mse_delta", "pearson_delta", "l2_top1000"):
        assert mean_pred[k] == pytest.approx(out[k])

    no_dist = metrics.perturbation_metrics(PRED, REAL, CTRL, include_distribution=False)
    assert math.isnan(no_dist["mmd"]) and no_dist["mse_delta"] == out["mse_delta"]


def test_sparse_and_dense_agree():
    rng = np.random.default_rng(1)
    dense = [rng.poisson(1.0, size=(n, 12)).astype(float) for n in (6, 5, 7)]
    sp = [sparse.csr_matrix(a) for a in dense]
    de = np.array([0, 3, 4])
    d = metrics.perturbation_metrics(*dense, de_genes=de, sigma=20.0)
    s = metrics.perturbation_metrics(*sp, de_genes=de, sigma=20.0)
    assert set(d) == set(s)
    for k in d:
        np.testing.assert_allclose(s[k], d[k], rtol=1e-12, err_msg=k)
    assert metrics.mmd(sp[0], sp[1]) == pytest.approx(metrics.mmd(dense[0], dense[1]))
    assert metrics.energy_distance(sp[0], dense[1]) == pytest.approx(
        metrics.energy_distance(dense[0], dense[1])
    )


def test_spread_ratio_sees_over_smoothing():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 30))
    assert metrics.spread_ratio(real, real) == pytest.approx(1.0)
    assert metrics.spread_ratio(0.5 * real, real) == pytest.approx(0.25)
    assert np.isnan(metrics.spread_ratio(real, np.ones((5, 30))))


def test_assignment_recovery_matches_learned_to_true_factors():
    # learned names are arbitrary: z7 <-> 0, z2 <-> 1; C's factor is taken by A and B
    truth = {"A": [0], "B": [0, 2], "C": [1], "D": [1]}
    res = metrics.assignment_recovery({"A": "z7", "B": "z7", "C": "z2", "D": "z2"}, truth)
    assert res["accuracy"] == 1.0 and res["distinct_factors"] == 2
    assert dict(zip(res["matching"]["learned"], res["matching"]["true"])) == {"z2": 1, "z7": 0}
    # a collapse onto one factor recovers only the targets of the factor it is matched to
    collapsed = metrics.assignment_recovery({t: "z0" for t in truth}, truth)
    assert collapsed["accuracy"] == 0.5
    assert list(collapsed["per_target"]["recovered"]) == [True, True, False, False]
    # targets missing from the truth are ignored; no overlap at all is an error
    assert metrics.assignment_recovery({"A": "z1", "X": "z1"}, truth)["n_targets"] == 1
    with pytest.raises(ValueError, match="same target names"):
        metrics.assignment_recovery({"X": "z1"}, truth)


# ---------------------------------------------------------------- activation-score test


def _activity():
    """Six control and six 'A' cells over three terms: A moves t1 by 2 and t2 by 1."""
    rng = np.random.default_rng(0)
    control = rng.normal(0.0, 0.1, size=(6, 3))
    perturbed = rng.normal(0.0, 0.1, size=(6, 3)) + np.array([0.0, 2.0, 1.0])
    labels = [""] * 6 + ["A"] * 6
    return np.vstack([control, perturbed]), labels, ["t0", "t1", "t2"]


def test_activation_scores_mean_diff_is_min_max_normalised():
    activity, labels, terms = _activity()
    scores = metrics.activation_scores(activity, labels, terms)
    assert list(scores.index) == ["A"] and list(scores.columns) == terms
    diff = np.abs(activity[:6].mean(0) - activity[6:].mean(0))
    expected = (diff - diff.min()) / (diff.max() - diff.min())
    np.testing.assert_allclose(scores.loc["A"].to_numpy(), expected)
    assert scores.loc["A", "t1"] == 1.0 and scores.loc["A", "t0"] == 0.0


def test_activation_scores_ttest_is_minus_log10_welch_p():
    activity, labels, terms = _activity()
    scores = metrics.activation_scores(activity, labels, terms, method="ttest")
    p = stats.ttest_ind(activity[:6], activity[6:], axis=0, equal_var=False).pvalue
    np.testing.assert_allclose(scores.loc["A"].to_numpy(), -np.log10(p))
    assert scores.loc["A"].idxmax() == "t1" and scores.loc["A"].idxmin() == "t0"


def test_activation_scores_errors_name_the_problem():
    activity, labels, terms = _activity()
    with pytest.raises(ValueError, match="method must be 'mean_diff' or 'ttest'"):
        metrics.activation_scores(activity, labels, terms, method="rank")
    with pytest.raises(ValueError, match="No control cells"):
        metrics.activation_scores(activity, labels, terms, control_value="ctrl")
    with pytest.raises(ValueError, match="No cells with label 'B'"):
        metrics.activation_scores(activity, labels, terms, perturbations=["B"])
    with pytest.raises(ValueError, match=r"expected \(12, 2\)"):
        metrics.activation_scores(activity, labels, terms[:2])


def test_affected_terms_by_gene_id_among_kept_terms():
    gene_sets = {"t0": ["ENSG1", "ENSG2"], "t1": ["ENSG2"], "t2": ["ENSG3"], "dropped": ["ENSG1"]}
    terms = ["t0", "t1", "t2"]
    ids = {"A": "ENSG1", "B": "ENSG2"}
    got = metrics.affected_terms(["A", "B", "C"], gene_sets, terms, target_ids=ids)
    # "dropped" is not a kept term; C has no gene ID, so no affected term
    assert got == {"A": ["t0"], "B": ["t0", "t1"], "C": []}
    # without IDs the target names are the gene IDs
    assert metrics.affected_terms(["ENSG3"], gene_sets, terms) == {"ENSG3": ["t2"]}


def test_interpretability_metrics_recall_and_z_diff_by_hand():
    scores = pd.DataFrame(
        [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6], [0.5, 0.5, 0.5, 0.5]],
        index=pd.Index(["A", "A,B", "C"], name="perturbation"),
        columns=["t0", "t1", "t2", "t3"],
    )
    affected = {"A": ["t0", "t3"], "B": ["t1", "not-scored"], "C": []}
    out = metrics.interpretability_metrics(scores, affected, ks=(1, 2))
    # C has no affected term: no row
    assert list(out["perturbation"]) == ["A", "A,B"]
    a = out.iloc[0]
    # A: ranking t0 > t2 > t3 > t1; affected {t0, t3}
    assert a["n_affected"] == 2 and a["recall@1"] == 0.5 and a["recall@2"] == 0.5
    assert a["z_diff"] == pytest.approx((0.9 + 0.3) / 2 - np.median([0.9, 0.1, 0.5, 0.3]))
    ab = out.iloc[1]
    # a double's affected terms are the union of its targets' (scored terms only)
    assert ab["n_affected"] == 3 and ab["recall@1"] == pytest.approx(1 / 3)
    assert ab["recall@2"] == pytest.approx(2 / 3)
    assert ab["z_diff"] == pytest.approx((0.2 + 0.8 + 0.6) / 3 - 0.5)


def test_random_recall_is_the_mean_recall_of_random_rankings():
    assert metrics.random_recall(100, 25) == 0.25
    assert metrics.random_recall(10, 25) == 1.0
    rng = np.random.default_rng(0)
    terms = [f"t{i}" for i in range(40)]
    scores = pd.DataFrame(rng.random((2000, 40)), columns=terms)
    scores.index = [f"p{i}" for i in range(2000)]
    affected = {p: list(rng.choice(terms, 3, replace=False)) for p in scores.index}
    out = metrics.interpretability_metrics(scores, affected, ks=(10,))
    assert out["recall@10"].mean() == pytest.approx(metrics.random_recall(40, 10), abs=0.02)
