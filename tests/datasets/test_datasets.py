"""Tests of scsena.datasets: the Perturb-seq simulator and the real-data readers."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from urllib.error import URLError

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from scsena.datasets import (
    CPA_BINARIES_URL,
    SIMULATION_UNS_KEY,
    WESSEL_HELDOUT,
    default_cache_dir,
    norman2019,
    simulate_perturbseq,
    wessel2023_hek293,
)

SMALL = {"n_cells": 700, "n_genes": 300, "n_targets": 8, "n_doubles": 4}

# Real (symbol, Ensembl id) pairs of the bundled gene table.
GENES = {
    "CBL": "ENSG00000110395",
    "PTPN12": "ENSG00000127947",
    "ETS2": "ENSG00000157557",
    "SGK1": "ENSG00000118515",
    "KLF1": "ENSG00000105610",
    "GAPDH": "ENSG00000111640",
    "ACTB": "ENSG00000075624",
    "CD46": "ENSG00000117335",
    "CD55": "ENSG00000196352",
    "TFRC": "ENSG00000072274",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return simulate_perturbseq(**SMALL, seed=0)


@pytest.fixture(scope="module")
def sim_additive() -> ad.AnnData:
    return simulate_perturbseq(**SMALL, seed=0, interaction_strength=0.0)


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _means(adata: ad.AnnData) -> dict[str, np.ndarray]:
    X = _dense(adata.X)
    labels = adata.obs["guide_ids"].astype(str).to_numpy()
    return {lab: X[labels == lab].mean(axis=0) for lab in np.unique(labels)}


def _log_normalised(counts: np.ndarray) -> sparse.csr_matrix:
    totals = counts.sum(axis=1, keepdims=True)
    return sparse.csr_matrix(np.log1p(counts / totals * 1e4).astype(np.float32))


def _counts(n_cells: int, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(3.0, size=(n_cells, n_genes)).astype(np.float32) + 1


def _cpa_file(path, rng) -> ad.AnnData:
    """A tiny file in the layout of CPA's Norman2019_raw.h5ad."""
    labels = ["", "", "CBL", "CBL", "PTPN12", "CBL,PTPN12", "ETS2", "ETS2,SGK1", "", "SGK1"]
    var = pd.DataFrame(index=pd.Index(list(GENES.values())))
    X = _log_normalised(_counts(len(labels), len(var), rng))
    obs = pd.DataFrame(
        {"guide_ids": pd.Categorical(labels), "dose_val": "1.0"},
        index=[f"AAAC-{i}" for i in range(len(labels))],
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.write_h5ad(path)
    return adata


def _pertpy_file(path, rng, *, ensembl_column: bool = False) -> ad.AnnData:
    """A tiny file in the layout of pertpy's norman_2019 (symbols, 'control', 'A+B', counts)."""
    labels = ["control", "CBL", "CBL+PTPN12", "control", "ETS2", "PTPN12", "ETS2+SGK1", "SGK1"]
    symbols = [*GENES.keys(), "NOTAGENE1"]
    var = pd.DataFrame(index=pd.Index(symbols))
    if ensembl_column:
        var["ensemble_id"] = [*GENES.values(), "ENSG99999999999"]
    X = sparse.csr_matrix(_counts(len(labels), len(symbols), rng) * 20)
    obs = pd.DataFrame(
        {"perturbation_name": pd.Categorical(labels), "gemgroup": 1},
        index=[f"c{i}" for i in range(len(labels))],
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.write_h5ad(path)
    return adata


def _wessel_file(path, rng) -> ad.AnnData:
    labels = ["NT", "CD46", "CD46_CD55", "NT_NT", "CD55_NT", "CD71", "CD46_CD55_CD71", "NT"]
    var = pd.DataFrame(index=pd.Index(list(GENES.values())))
    X = _log_normalised(_counts(len(labels), len(var), rng))
    obs = pd.DataFrame({"TargetGenes": labels}, index=[f"w{i}" for i in range(len(labels))])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.write_h5ad(path)
    return adata


# --------------------------------------------------------------------------- simulator


def test_simulator_shapes_and_schema(sim):
    truth = sim.uns[SIMULATION_UNS_KEY]
    assert sim.shape == (SMALL["n_cells"], SMALL["n_genes"])
    assert sparse.isspmatrix_csr(sim.X) and sim.X.dtype == np.float32
    counts = sim.layers["counts"]
    assert sparse.isspmatrix_csr(counts) and counts.dtype == np.float32
    assert np.all(counts.data == np.round(counts.data)) and counts.data.min() >= 1
    assert sim.var_names.is_unique and all(g.startswith("ENSG") for g in sim.var_names)
    assert sim.var["gene_symbols"].is_unique

    labels = sim.obs["guide_ids"].astype(str)
    kind = sim.obs["perturbation_type"]
    assert list(kind.cat.categories) == ["control", "single", "double"]
    assert (labels == "").sum() == round(0.15 * SMALL["n_cells"])
    assert ((labels == "") == (kind == "control")).all()
    singles = sorted(labels[kind == "single"].unique())
    doubles = sorted(labels[kind == "double"].unique())
    targets = list(truth["targets"])
    assert singles == sorted(targets) and len(targets) == SMALL["n_targets"]
    assert len(doubles) == SMALL["n_doubles"]
    pairs = [tuple(d.split(",")) for d in doubles]
    assert all(len(p) == 2 and p[0] != p[1] and set(p) <= set(targets) for p in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    assert not any("," in s for s in singles)
    # Targets are genes of the data set (labels are symbols, as in Norman 2019).
    assert set(targets) <= set(sim.var["gene_symbols"])
    # Cells are split evenly over perturbations.
    sizes = labels[labels != ""].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_simulator_x_is_log_normalised_counts(sim):
    ref = ad.AnnData(X=sim.layers["counts"].copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(_dense(sim.X), _dense(ref.X), rtol=1e-5, atol=1e-5)
    assert np.array_equal(sim.X.indices, sim.layers["counts"].indices)


def test_simulator_library_sizes_are_realistic(sim):
    sim_big = simulate_perturbseq(n_cells=400, n_genes=2000, n_targets=10, n_doubles=2)
    for adata in (sim, sim_big):
        totals = np.asarray(adata.layers["counts"].sum(axis=1)).ravel()
        assert 3_500 < np.median(totals) < 7_000
        cv = totals.std() / totals.mean()
        assert 0.15 < cv < 0.8
    # Sparse like real data at 2,000 genes, and NB-overdispersed (variance > mean).
    counts = _dense(sim_big.layers["counts"])
    assert 0.2 < np.mean(counts > 0) < 0.95
    ctrl = counts[sim_big.obs["guide_ids"].astype(str).to_numpy() == ""]
    mean, var = ctrl.mean(0), ctrl.var(0)
    ok = mean > 2
    assert np.median(var[ok] / mean[ok]) > 1.2


def test_simulator_seed_reproducible(sim):
    again = simulate_perturbseq(**SMALL, seed=0)
    assert (again.X != sim.X).nnz == 0
    assert (again.layers["counts"] != sim.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(again.obs, sim.obs)
    pd.testing.assert_frame_equal(again.var, sim.var)
    t1, t2 = sim.uns[SIMULATION_UNS_KEY], again.uns[SIMULATION_UNS_KEY]
    for key in ("dag", "loadings", "factor_terms", "targets", "target_shift"):
        np.testing.assert_array_equal(_dense(t1[key]), _dense(t2[key]))

    other = simulate_perturbseq(**SMALL, seed=1)
    assert not np.array_equal(other.var_names, sim.var_names)
    assert (other.X != sim.X).nnz > 0


def test_simulator_result_does_not_depend_on_threads():
    # 2,100 cells of 2,000 genes are generated in two blocks of cells.
    kwargs = {"n_cells": 2100, "n_genes": 2000, "n_targets": 8, "n_doubles": 4, "seed": 3}
    one = simulate_perturbseq(**kwargs, n_jobs=1)
    two = simulate_perturbseq(**kwargs, n_jobs=2)
    assert (one.layers["counts"] != two.layers["counts"]).nnz == 0
    assert (one.X != two.X).nnz == 0


def test_simulator_genes_support_a_sena_mask(sim):
    from scsena.gene_sets import go_bp

    genes = set(sim.var_names)
    kept = {
        t for t, members in go_bp(terms="sena").items() if len(genes.intersection(members)) >= 5
    }
    assert len(kept) >= 40
    truth = sim.uns[SIMULATION_UNS_KEY]
    assert set(truth["factor_terms"]) <= kept


def test_simulator_truth_is_consistent(sim):
    truth = sim.uns[SIMULATION_UNS_KEY]
    k = len(truth["factor_terms"])
    loadings = _dense(truth["loadings"])
    assert loadings.shape == (k, sim.n_vars)
    # Each program loads on its GO term's genes among the simulated genes.
    from scsena.gene_sets import go_bp

    sets = go_bp(terms=list(truth["factor_terms"]))
    for f, term in enumerate(truth["factor_terms"]):
        members = np.isin(sim.var_names, sets[term])
        assert np.array_equal(loadings[f] != 0, members)
    symbol_to_gene = dict(zip(sim.var["gene_symbols"], sim.var_names))
    for i, t in enumerate(truth["targets"]):
        factors = np.asarray(truth["target_factors"][t])
        assert len(factors) >= 1
        assert list(truth["target_terms"][t]) == [truth["factor_terms"][f] for f in factors]
        gene = symbol_to_gene[t]
        # Exactly the programs whose GO term contains the target.
        containing = [f for f, term in enumerate(truth["factor_terms"]) if gene in sets[term]]
        assert list(factors) == containing
        assert truth["target_ensembl"][i] == gene
        shift = truth["target_shift"][i]
        assert np.all(shift[factors] > 0) and np.count_nonzero(shift) == len(factors)


def test_simulator_dag_is_acyclic(sim):
    truth = sim.uns[SIMULATION_UNS_KEY]
    dag = np.asarray(truth["dag"])
    order = np.asarray(truth["dag_order"])
    k = dag.shape[0]
    assert sorted(order) == list(range(k))
    permuted = dag[np.ix_(order, order)]
    assert np.array_equal(permuted, np.triu(permuted, 1))
    assert np.count_nonzero(dag) > 0
    assert not np.any(np.linalg.matrix_power(dag != 0, k))  # nilpotent: no cycle
    # Factor scale stays bounded however deep the DAG (parents explain variance 0.5).
    dense = simulate_perturbseq(
        n_cells=200, n_genes=1200, n_targets=60, n_doubles=0, dag_density=0.5
    ).uns[SIMULATION_UNS_KEY]["dag"]
    propagate = np.linalg.inv(np.eye(dense.shape[0]) - dense)
    variance = (propagate**2).sum(axis=0)
    assert np.all(variance < 1.5 + 1e-4)


def test_simulator_effects_land_on_target_programs(sim):
    truth = sim.uns[SIMULATION_UNS_KEY]
    means = _means(sim)
    control = means[""]
    loadings = _dense(truth["loadings"])
    symbols = sim.var["gene_symbols"].to_numpy()
    for t in truth["targets"]:
        delta = means[t] - control
        program = (loadings[np.asarray(truth["target_factors"][t])] != 0).any(axis=0)
        target = symbols == t
        program &= ~target
        assert delta[program].mean() > 0.25, t
        assert delta[program].mean() > delta[~program & ~target].mean() + 0.25, t
        assert delta[target][0] > 1.0, t  # CRISPRa: the target itself goes up


def test_simulator_doubles_are_not_additive(sim, sim_additive):
    def gap(adata):
        means = _means(adata)
        out = []
        for label in adata.uns[SIMULATION_UNS_KEY]["doubles"]:
            a, b = label.split(",")
            additive = means[a] + means[b] - means[""]
            out.append(np.linalg.norm(means[label] - additive))
        return np.mean(out)

    assert np.allclose(
        np.stack(list(sim_additive.uns[SIMULATION_UNS_KEY]["interaction"].values())), 0
    )
    assert gap(sim) > 1.5 * gap(sim_additive)


def test_simulator_h5ad_roundtrip(sim, tmp_path):
    path = tmp_path / "sim.h5ad"
    sim.write_h5ad(path)
    back = ad.read_h5ad(path)
    t1, t2 = sim.uns[SIMULATION_UNS_KEY], back.uns[SIMULATION_UNS_KEY]
    assert set(t1) == set(t2)
    np.testing.assert_array_equal(_dense(t1["loadings"]), _dense(t2["loadings"]))
    assert t2["params"]["n_genes"] == SMALL["n_genes"]
    for t in t1["targets"]:
        np.testing.assert_array_equal(t1["target_factors"][t], t2["target_factors"][t])
        assert list(t1["target_terms"][t]) == list(t2["target_terms"][t])
    assert list(back.uns["scsena_dataset"]["heldout"]) == list(sim.uns["scsena_dataset"]["heldout"])


def _counts_digest(adata: ad.AnnData) -> str:
    counts = adata.layers["counts"]
    digest = hashlib.sha256()
    for part in (counts.data, counts.indices, counts.indptr):
        digest.update(part.astype(np.int64).tobytes())
    digest.update("|".join(adata.obs["guide_ids"].astype(str)).encode())
    digest.update("|".join(adata.var_names).encode())
    return digest.hexdigest()[:16]


def test_simulator_output_unchanged_at_a_fixed_seed():
    # Digest of the counts, labels and genes computed before batches were added: one
    # batch (the default) must keep giving the same data at a fixed seed.
    adata = simulate_perturbseq(n_cells=300, n_genes=200, n_targets=6, n_doubles=3, seed=7)
    assert _counts_digest(adata) == "bedcdac737ce2ef9"
    assert "batch" not in adata.obs
    truth = adata.uns[SIMULATION_UNS_KEY]
    assert "batch_effects" not in truth and "n_batches" not in truth["params"]


@pytest.fixture(scope="module")
def sim_batches() -> ad.AnnData:
    return simulate_perturbseq(**SMALL, seed=0, n_batches=2, batch_effect=0.5)


def test_simulator_batches_are_balanced_and_independent_of_perturbation(sim, sim_batches):
    batch = sim_batches.obs["batch"]
    assert list(batch.cat.categories) == ["batch0", "batch1"]
    assert batch.value_counts().tolist() == [SMALL["n_cells"] // 2] * 2
    # Same design as without batches; every perturbation is seen in every batch.
    pd.testing.assert_series_equal(sim_batches.obs["guide_ids"], sim.obs["guide_ids"])
    table = pd.crosstab(sim_batches.obs["guide_ids"], batch)
    assert (table > 0).all(axis=None)
    truth = sim_batches.uns[SIMULATION_UNS_KEY]
    assert list(truth["batches"]) == ["batch0", "batch1"]
    assert truth["batch_effects"].shape == (2, SMALL["n_genes"])
    assert truth["params"]["n_batches"] == 2 and truth["params"]["batch_effect"] == 0.5
    three = simulate_perturbseq(**SMALL, seed=0, n_batches=3).obs["batch"]
    assert sorted(three.value_counts().tolist()) == [233, 233, 234]


def test_simulator_batch_effect_is_visible_in_control_cells(sim_batches):
    truth = sim_batches.uns[SIMULATION_UNS_KEY]
    counts = _dense(sim_batches.layers["counts"])
    proportions = counts / counts.sum(axis=1, keepdims=True)
    control = sim_batches.obs["guide_ids"].astype(str).to_numpy() == ""
    batch = sim_batches.obs["batch"].cat.codes.to_numpy()
    mean0 = proportions[control & (batch == 0)].mean(axis=0)
    mean1 = proportions[control & (batch == 1)].mean(axis=0)
    expressed = (mean0 > 1e-3) & (mean1 > 1e-3)
    observed = np.log(mean1[expressed]) - np.log(mean0[expressed])
    true = (truth["batch_effects"][1] - truth["batch_effects"][0])[expressed]
    assert expressed.sum() > 100
    assert np.corrcoef(observed, true)[0, 1] > 0.9
    slope = np.polyfit(true, observed, 1)[0]
    assert 0.8 < slope < 1.2  # log-scale gene means differ by the drawn effects
    assert 0.5 < np.std(true) / (0.5 * np.sqrt(2)) < 1.5


def test_simulator_zero_batch_effect_keeps_the_counts(sim):
    plain = simulate_perturbseq(**SMALL, seed=0, n_batches=3, batch_effect=0.0)
    assert (plain.layers["counts"] != sim.layers["counts"]).nnz == 0
    assert plain.obs["batch"].nunique() == 3


def test_simulator_batches_h5ad_roundtrip(sim_batches, tmp_path):
    sim_batches.write_h5ad(tmp_path / "batches.h5ad")
    back = ad.read_h5ad(tmp_path / "batches.h5ad")
    pd.testing.assert_series_equal(back.obs["batch"], sim_batches.obs["batch"])
    np.testing.assert_array_equal(
        back.uns[SIMULATION_UNS_KEY]["batch_effects"],
        sim_batches.uns[SIMULATION_UNS_KEY]["batch_effects"],
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_batches": 0}, "n_batches must be between 1"),
        ({"n_batches": 2, "batch_effect": -0.1}, "batch_effect must be >= 0"),
        ({"batch_effect": 0.3}, "n_batches >= 2"),
        ({"n_targets": 4, "n_doubles": 7}, "n_doubles"),
        ({"n_genes": 40, "n_targets": 10, "n_programs": 10}, "n_genes"),
        ({"n_cells": 10}, "n_cells"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"n_genes": 20_000, "n_targets": 5}, "exceeds the"),
    ],
)
def test_simulator_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_perturbseq(**kwargs)


# --------------------------------------------------------------------------- loaders


def test_norman_cpa_layout(tmp_path):
    path = tmp_path / "Norman2019_raw.h5ad"
    _cpa_file(path, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log-normalised: no counts warning
        adata = norman2019(path)
    assert adata.obs["guide_ids"].astype(str).tolist()[:6] == [
        "",
        "",
        "CBL",
        "CBL",
        "PTPN12",
        "CBL,PTPN12",
    ]
    assert adata.var["gene_symbols"].tolist() == list(GENES)
    info = adata.uns["scsena_dataset"]
    assert info["name"] == "norman2019" and info["layout"] == "cpa"
    assert list(info["heldout"])[:3] == ["ETS2", "SGK1", "POU3F2"] and len(info["heldout"]) == 11


@pytest.mark.parametrize("ensembl_column", [False, True])
def test_norman_pertpy_layout(tmp_path, ensembl_column):
    path = tmp_path / "norman_2019.h5ad"
    _pertpy_file(path, np.random.default_rng(0), ensembl_column=ensembl_column)
    with pytest.warns(UserWarning, match="raw counts"):
        adata = norman2019(path)
    assert adata.obs["guide_ids"].astype(str).tolist() == [
        "",
        "CBL",
        "CBL,PTPN12",
        "",
        "ETS2",
        "PTPN12",
        "ETS2,SGK1",
        "SGK1",
    ]
    assert adata.obs["perturbation_name"].astype(str).iloc[2] == "CBL+PTPN12"  # kept
    assert adata.var_names[0] == "CBL"
    assert adata.var["gene_symbols"].tolist() == [*GENES, "NOTAGENE1"]
    expected = [*GENES.values(), "ENSG99999999999" if ensembl_column else ""]
    assert adata.var["ensembl_id"].tolist() == expected
    info = adata.uns["scsena_dataset"]
    assert info["layout"] == "pertpy"
    assert info["n_genes_ensembl"] == len(GENES) + int(ensembl_column)
    adata.write_h5ad(tmp_path / "normalised.h5ad")  # the added fields are h5ad-serialisable
    back = ad.read_h5ad(tmp_path / "normalised.h5ad")
    assert back.obs["guide_ids"].astype(str).tolist() == adata.obs["guide_ids"].astype(str).tolist()
    assert list(back.uns["scsena_dataset"]["heldout"]) == list(info["heldout"])


def test_wessel_layout(tmp_path):
    path = tmp_path / "HEK293FT_carpool_processed.h5ad"
    _wessel_file(path, np.random.default_rng(0))
    adata = wessel2023_hek293(path)
    assert adata.obs["guide_ids"].astype(str).tolist() == [
        "",
        "CD46",
        "CD46,CD55",
        "",
        "CD55",
        "CD71",
        "CD46,CD55,CD71",
        "",
    ]
    info = adata.uns["scsena_dataset"]
    assert info["name"] == "wessel2023_hek293"
    assert list(info["heldout"]) == list(WESSEL_HELDOUT) == ["CD46", "CD55", "CD71"]
    assert adata.var.loc[GENES["CD46"], "gene_symbols"] == "CD46"


def test_loaders_report_missing_columns(tmp_path):
    path = tmp_path / "bad.h5ad"
    obs = pd.DataFrame({"condition": ["ctrl", "A"], "cell_type": "K562"}, index=["a", "b"])
    ad.AnnData(X=np.zeros((2, 3), dtype=np.float32), obs=obs).write_h5ad(path)
    with pytest.raises(ValueError, match="guide_ids") as err:
        norman2019(path)
    assert "'condition'" in str(err.value) and "perturbation_name" in str(err.value)
    with pytest.raises(ValueError, match="TargetGenes") as err:
        wessel2023_hek293(path)
    assert "'cell_type'" in str(err.value)


def test_loaders_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        norman2019(tmp_path / "absent.h5ad")
    with pytest.raises(FileNotFoundError, match="local path"):
        wessel2023_hek293(tmp_path / "absent.h5ad")


def _no_network(*args, **kwargs):
    raise URLError("network is unreachable")


def test_norman_download_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionError) as err:
        norman2019(cache_dir=cache, progress=False)
    message = str(err.value)
    assert "norman2019(path=...)" in message and str(cache) in message
    assert "network is unreachable" in message
    assert not list(cache.glob("*"))  # no partial file left behind


def test_norman_uses_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    monkeypatch.setenv("SCSENA_CACHE_DIR", str(tmp_path))
    _cpa_file(tmp_path / "Norman2019_raw.h5ad", np.random.default_rng(0))
    adata = norman2019()
    assert adata.n_obs == 10 and "guide_ids" in adata.obs


def test_default_cache_dir_from_environment_or_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCSENA_CACHE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "scsena"
    monkeypatch.setenv("SCSENA_CACHE_DIR", "")  # empty: as if unset
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "scsena"
    monkeypatch.setenv("SCSENA_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("SCSENA_CACHE_DIR", "~/data")  # "~" is expanded
    assert default_cache_dir() == tmp_path / "home" / "data"
    assert not (tmp_path / "home").exists()  # naming the directory creates nothing


def test_norman_download_extracts_only_the_member(tmp_path, monkeypatch):
    source = tmp_path / "src.h5ad"
    _cpa_file(source, np.random.default_rng(0))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        other = b"not needed"
        info = tarfile.TarInfo("cpa_binaries/models/model.pt")
        info.size = len(other)
        tar.addfile(info, io.BytesIO(other))
        tar.add(source, arcname="cpa_binaries/datasets/Norman2019_raw.h5ad")
    payload = buffer.getvalue()
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    adata = norman2019(cache_dir=cache, progress=False)
    assert calls == [CPA_BINARIES_URL]
    assert sorted(p.name for p in cache.iterdir()) == ["Norman2019_raw.h5ad"]
    assert adata.n_obs == 10
    norman2019(cache_dir=cache, progress=False)  # second call: from the cache
    assert len(calls) == 1


def test_download_reports_missing_member(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("datasets/other.h5ad")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    monkeypatch.setattr(
        "urllib.request.urlopen", lambda url, timeout=None: io.BytesIO(buffer.getvalue())
    )
    with pytest.raises(FileNotFoundError, match="Norman2019_raw.h5ad"):
        norman2019(cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.part"))
