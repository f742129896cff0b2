"""scsena.data: label grammar, input checks, MuData guides and the registration fields."""

import re
import warnings
from contextlib import contextmanager

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, CategoricalObsField, LayerField

import scsena
from conftest import toy_adata
from scsena.data import (
    GUIDE_LABEL_KEY,
    GeneSetMaskField,
    ParsedPerturbations,
    PerturbationField,
    canonical_label,
    check_aligned_cells,
    check_expression,
    check_known_categories,
    covariate_category_counts,
    covariate_fields,
    display_labels,
    labels_from_guides,
    mask_from_state,
    mudata_fields,
    parse_perturbations,
    rna_modality,
    split_label,
    targets_from_state,
    warn_case_duplicates,
    warn_constant_genes,
)
from scsena.gene_sets import build_mask


@contextmanager
def no_user_warning():
    """Fail on any UserWarning raised inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


# ------------------------------------------------------------------ label grammar
def test_split_label_returns_the_targets_and_drops_control_tokens():
    assert split_label("CBL") == ("CBL",)
    assert split_label(" CBL , PTPN12 ") == ("CBL", "PTPN12")
    assert split_label("") == ()
    assert split_label("NT", control_value="NT") == ()
    assert split_label("A+ctrl", delimiter="+") == ("A",)
    assert split_label("control_B", control_value="NT", delimiter="_") == ("B",)
    # order is kept: split_label does not canonicalise
    assert split_label("B,A") == ("B", "A")


def test_split_label_refuses_an_empty_target():
    msg = (
        "Perturbation label 'A,,B' has an empty target name (delimiter ','). "
        "Fix the label, or pass the right `delimiter`/`control_value`."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        split_label("A,,B")


def test_display_labels_speak_the_datas_convention():
    shown = display_labels(["", "A", "A,B"], control_value="ctrl", delimiter="+")
    assert shown.tolist() == ["ctrl", "A", "A+B"]
    # an empty control value is shown as "control", which parses back as control
    assert display_labels([""], "", ",").tolist() == ["control"]
    assert split_label("control", "") == ()


def test_canonical_label_sorts_and_joins_targets():
    assert canonical_label(["B", "A"]) == "A,B"
    assert canonical_label(("A", "B")) == "A,B"
    assert canonical_label(["CBL"]) == "CBL"
    assert canonical_label([]) == ""


def test_parsed_perturbations_fields():
    labels = pd.Series(["ctrl", "B", "A", "B+A", "A+C"], index=list("vwxyz"))
    parsed = parse_perturbations(labels, control_value="ctrl", delimiter="+")
    assert isinstance(parsed, ParsedPerturbations)
    assert parsed.labels.tolist() == ["", "B", "A", "A,B", "A,C"]
    assert parsed.labels.index.tolist() == list("vwxyz")
    assert parsed.kind.tolist() == ["control", "single", "single", "double", "other"]
    assert parsed.targets == ["A", "B"]
    assert parsed.codes.dtype == np.int64
    assert parsed.codes.tolist() == [[-1, -1], [1, -1], [0, -1], [0, 1], [-1, -1]]
    # against a given vocabulary, a single outside it is "other" and codes index into it
    given = parse_perturbations(["", "B", "D"], targets=["B", "C"])
    assert given.kind.tolist() == ["control", "single", "other"]
    assert given.codes.tolist() == [[-1, -1], [0, -1], [-1, -1]]


def test_warn_case_duplicates_names_both_spellings():
    with pytest.warns(UserWarning, match=r"Targets 'OXT' and 'oxt' differ only by letter case"):
        warn_case_duplicates(["A", "OXT", "oxt"])
    with no_user_warning():
        warn_case_duplicates(["A", "B", "OXT"])


# ------------------------------------------------------------------ expression checks
@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_check_expression_refuses_nan_and_infinite_values(to_matrix):
    for bad in (np.nan, np.inf):
        x = np.full((3, 2), 0.5)
        x[1, 1] = bad
        with pytest.raises(ValueError, match=r"^adata\.layers\['lg'\] contains NaN or infinite"):
            check_expression(to_matrix(x), "adata.layers['lg']")


@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_check_expression_refuses_negative_values(to_matrix):
    x = np.array([[0.5, -1.5], [0.0, 2.25]])
    with pytest.raises(ValueError, match=re.escape("adata.X contains negative values (min -1.5)")):
        check_expression(to_matrix(x))


@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_check_expression_warns_on_raw_counts(to_matrix):
    x = np.array([[0.0, 3.0], [13.0, 1.0]], dtype=np.float32)
    with pytest.warns(
        UserWarning, match=re.escape("adata.X looks like raw counts (integers up to 13)")
    ):
        check_expression(to_matrix(x))


@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_check_expression_accepts_log_normalised_values(to_matrix):
    x = np.log1p(np.array([[0.0, 3.0], [13.0, 1.0]], dtype=np.float32))
    with no_user_warning():
        check_expression(to_matrix(x))
        check_expression(to_matrix(np.zeros((2, 2))))  # all zeros: not counts


def test_check_expression_refuses_empty_and_non_numeric_matrices():
    with pytest.raises(ValueError, match=re.escape("adata.X is empty (shape (0, 3)).")):
        check_expression(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="adata.X must be numeric"):
        check_expression(np.array([["a", "b"]], dtype=object).astype(str))


@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_warn_constant_genes_counts_all_zero_genes(to_matrix):
    x = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    with pytest.warns(UserWarning, match=r"^2 gene\(s\) are zero in every cell"):
        warn_constant_genes(to_matrix(x))
    with no_user_warning():
        warn_constant_genes(to_matrix(x[:, [1, 3]]))  # no constant gene


def test_warn_constant_genes_ignores_stored_zeros_and_reads_only_n_rows_max():
    stored_zero = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), (1, 2))
    assert stored_zero.nnz == 2
    with pytest.warns(UserWarning, match=r"^1 gene\(s\) are zero"):
        warn_constant_genes(stored_zero)
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    with pytest.warns(UserWarning, match=r"^1 gene\(s\) are zero"):
        warn_constant_genes(x, n_rows_max=1)


# ------------------------------------------------------------------ MuData and guides
def _guides(obs_names, counts, targets):
    return ad.AnnData(
        X=np.asarray(counts, dtype=np.float32),
        obs=pd.DataFrame(index=obs_names),
        var=pd.DataFrame({"target": targets}, index=[f"g{i}" for i in range(len(targets))]),
    )


def test_labels_from_guides_joins_the_sorted_targets_of_each_cells_guides():
    # guides:    g0->B  g1->A  g2->A  g3->non-targeting
    counts = [
        [0, 3, 0, 0],  # c0: A
        [2, 0, 5, 0],  # c1: A and B
        [0, 0, 0, 4],  # c2: a non-targeting guide only -> control
        [0, 1, 1, 0],  # c3: two guides of A -> A (one count each)
        [0, 0, 0, 0],  # c4: no guide -> control
    ]
    guides = _guides([f"c{i}" for i in range(5)], counts, ["B", "A", "A", "Non-Targeting"])
    obs_names = pd.Index(["c4", "c0", "c1", "c2", "c3"])
    labels = labels_from_guides(guides, obs_names, target_key="target")
    assert labels.name == GUIDE_LABEL_KEY
    assert labels.index.tolist() == obs_names.tolist()
    assert labels.tolist() == ["", "A", "A,B", "", "A"]
    # min_count: guides below the threshold are not assigned
    labels = labels_from_guides(guides, obs_names, target_key="target", min_count=2)
    assert labels.tolist() == ["", "A", "A,B", "", ""]
    # without target_key the guide names are the targets
    labels = labels_from_guides(guides, pd.Index(["c0", "c1"]))
    assert labels.tolist() == ["g1", "g0,g2"]


def test_labels_from_guides_refuses_missing_cells_and_an_unknown_target_key():
    guides = _guides(["c0", "c1"], [[1], [0]], ["A"])
    msg = (
        "1 RNA cells (e.g. ['c9']) are absent from the guide modality; subset the MuData "
        "to cells present in both (`mu.pp.intersect_obs(mdata)`)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        labels_from_guides(guides, pd.Index(["c0", "c9"]))
    with pytest.raises(KeyError, match="'gene' is not a column of the guide modality's var"):
        labels_from_guides(guides, pd.Index(["c0"]), target_key="gene")


def test_rna_modality_returns_anndata_as_is_and_the_named_rna_modality():
    adata = toy_adata(labels=["", "A", "B", "A,B"] * 4)
    assert rna_modality(adata) is adata
    other = ad.AnnData(np.zeros((adata.n_obs, 2), dtype=np.float32), obs=adata.obs[[]].copy())
    mdata = md.MuData({"rna": adata, "other": other})
    for name in (None, "gex"):
        with pytest.raises(ValueError, match=r"Name the RNA modality of this MuData \(modalities"):
            rna_modality(mdata, name)
    assert rna_modality(mdata, "rna") is mdata.mod["rna"]
    # a model registered on the MuData reads its RNA modality, named in its setup arguments
    scsena.SENAVAE.setup_mudata(mdata, rna_mod="rna", perturbation_mod_or_key="guide_ids")
    model = scsena.SENAVAE(mdata)
    assert "scsena_rna_mod" not in mdata.uns
    assert model.registry_["setup_args"]["rna_mod"] == "rna"
    assert model.data_splitter().adata is mdata.mod["rna"]


def test_check_aligned_cells_names_the_fix():
    adata = toy_adata(labels=["", "A", "B", "A,B"] * 4)
    other = ad.AnnData(np.zeros((3, 2), dtype=np.float32), obs=adata.obs[[]].iloc[:3].copy())
    other.obs_names = ["x1", "x2", "x3"]
    aligned = md.MuData({"rna": adata})
    check_aligned_cells(aligned, "rna")
    mixed = md.MuData({"rna": adata, "other": other})
    with pytest.raises(ValueError, match=r"mu\.pp\.intersect_obs\(mdata\)"):
        check_aligned_cells(mixed, "rna")


def test_mudata_fields_read_their_modality():
    adata = toy_adata(labels=["", "A", "B", "A,B"] * 4)
    adata.obs["lane"] = ["L1", "L2"] * 8
    mdata = md.MuData({"rna": adata})
    fields = mudata_fields(mdata, "rna", "guide_ids", batch_key="lane")
    assert [f.registry_key for f in fields] == ["X", "perturbation", "gene_set_mask", "batch"]
    assert {f.mod_key for f in fields} == {"rna"}
    with pytest.raises(KeyError, match="neither a modality nor a column"):
        mudata_fields(mdata, "rna", "sgRNA")


# ------------------------------------------------------------------ fields
def _mask_for(var_names):
    genes = list(var_names)
    return build_mask(genes, {"T1": genes[:3], "T2": genes[2:5]}, min_genes=1, aliases=False)


def _field_adata(labels):
    adata = ad.AnnData(
        X=np.ones((len(labels), 6), dtype=np.float32),
        obs=pd.DataFrame({"pert": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=[f"G{i}" for i in range(6)]),
    )
    adata.uns["mask"] = _mask_for(adata.var_names).to_uns()
    return adata


def test_perturbation_field_registers_targets_label_conventions_and_counts():
    adata = _field_adata(["NT", "NT", "B", "A", "A+B", "A+C"])
    field = PerturbationField("pert", control_value="NT", delimiter="+")
    assert field.registry_key == "perturbation"
    assert (field.attr_name, field.attr_key) == ("obs", "pert")
    state = field.register_field(adata)
    assert state == {
        "control_value": "NT",
        "delimiter": "+",
        "targets": ["A", "B"],
        "n_control": 2,
        "n_single": 2,
        "n_double": 1,
        "n_other": 1,
    }
    assert field.get_summary_stats(state) == {"n_targets": 2}
    # new data are parsed against the registered targets: C alone stays "other"
    new = _field_adata(["NT", "C", "A+B"])
    moved = field.transfer_field(state, new)
    assert moved["targets"] == ["A", "B"]
    assert (moved["n_control"], moved["n_single"], moved["n_double"], moved["n_other"]) == (
        1,
        0,
        1,
        1,
    )
    with pytest.raises(KeyError, match="Perturbation column 'guide' not found in adata.obs"):
        PerturbationField("guide").register_field(adata)


def test_gene_set_mask_field_registers_the_mask_and_restores_it():
    adata = _field_adata(["", "A"])
    mask = _mask_for(adata.var_names)
    field = GeneSetMaskField("mask")
    assert (field.registry_key, field.attr_key) == ("gene_set_mask", "mask")
    state = field.register_field(adata)
    assert state["terms"] == ["T1", "T2"]
    assert state["n_terms"] == 2
    assert mask_from_state(state) == mask
    assert field.get_summary_stats(state) == {"n_terms": 2}
    # new data with the same genes and no mask get the model's mask
    new = _field_adata(["", "A"])
    del new.uns["mask"]
    assert mask_from_state(field.transfer_field(state, new)) == mask
    assert "mask" in new.uns
    # a mask for other genes is refused
    wrong = _field_adata(["", "A"])[:, :5].copy()
    with pytest.raises(ValueError, match=r"holds a mask for 6 genes that do not match"):
        field.register_field(wrong)
    del wrong.uns["mask"]
    with pytest.raises(KeyError, match=r"No gene-set mask in adata.uns\['mask'\]"):
        field.validate_field(wrong)


def test_mask_and_targets_from_state_read_a_state_registry():
    var_names = [f"G{i}" for i in range(6)]
    mask = _mask_for(var_names)
    restored = mask_from_state({"mask": mask.to_uns()})
    assert restored == mask
    assert restored.to_dense().tolist() == mask.to_dense().tolist()
    # a saved and loaded registry holds numpy strings
    targets = targets_from_state({"targets": np.array(["A", "CBL"], dtype=object)})
    assert targets == ["A", "CBL"]
    assert all(type(t) is str for t in targets)


def _covariate_adata():
    labels = [""] * 12 + ["A"] * 12 + ["B"] * 12 + ["A,B"] * 6
    adata = toy_adata(labels=labels)
    adata.obs["lane"] = np.where(np.arange(adata.n_obs) % 2, "L2", "L1")
    adata.obs["phase"] = np.where(np.arange(adata.n_obs) % 3, "G1", "S")
    return adata


def test_covariate_fields_builds_the_batch_and_joint_covariate_fields():
    adata = _covariate_adata()
    assert covariate_fields(adata) == []
    (batch,) = covariate_fields(adata, batch_key="lane")
    assert type(batch) is CategoricalObsField
    assert batch.registry_key == "batch"
    state = batch.register_field(adata.copy())
    assert state["original_key"] == "lane"
    assert list(state["categorical_mapping"]) == ["L1", "L2"]
    batch, covs = covariate_fields(adata, "lane", ["phase"])
    assert type(covs) is CategoricalJointObsField
    assert covs.registry_key == "extra_categorical_covs"
    assert list(covs.attr_keys) == ["phase"]
    (covs,) = covariate_fields(adata, categorical_covariate_keys=["phase", "lane"])
    assert list(covs.attr_keys) == ["phase", "lane"]


def test_covariate_fields_errors_name_the_problem():
    adata = _covariate_adata()
    with pytest.raises(TypeError, match=re.escape("e.g. ['phase']")):
        covariate_fields(adata, categorical_covariate_keys="phase")
    with pytest.raises(KeyError, match="batch_key 'donor' is not a column of adata.obs"):
        covariate_fields(adata, batch_key="donor")
    with pytest.raises(KeyError, match="categorical_covariate_keys 'x' is not a column"):
        covariate_fields(adata, categorical_covariate_keys=["x"])
    with pytest.raises(ValueError, match="'lane' is both the batch_key and a categorical"):
        covariate_fields(adata, "lane", ["lane"])
    adata.obs["lane"] = adata.obs["lane"].astype(object)
    adata.obs.iloc[:3, adata.obs.columns.get_loc("lane")] = np.nan
    with pytest.raises(ValueError, match=re.escape("adata.obs['lane'] (batch_key) has 3 missing")):
        covariate_fields(adata, batch_key="lane")


@pytest.fixture(scope="module")
def covariate_model():
    """One small model (not trained) with a batch (2 lanes) and a covariate (2 phases)."""
    adata = _covariate_adata()
    adata.obs["phase"] = np.where(np.arange(adata.n_obs) % 3 == 0, "S", "G1")
    adata.obs.loc[adata.obs_names[::5], "phase"] = "G2M"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scsena.SENAVAE.setup_anndata(adata, batch_key="lane", categorical_covariate_keys=["phase"])
        model = scsena.SENAVAE(adata)
    return model, adata


def test_covariate_category_counts_reads_the_registry(covariate_model):
    model, _ = covariate_model
    assert covariate_category_counts(model.registry_) == [2, 3]  # lanes, then phases
    adata = _covariate_adata()
    plain = AnnDataManager(
        fields=[LayerField("X", None, is_count_data=False), *covariate_fields(adata)]
    )
    plain.register_fields(adata)
    assert covariate_category_counts(plain.registry) == []
    only_batch = AnnDataManager(fields=covariate_fields(adata, batch_key="lane"))
    only_batch.register_fields(adata.copy())
    assert covariate_category_counts(only_batch.registry) == [2]


def test_check_known_categories_names_unknown_categories(covariate_model):
    model, adata = covariate_model
    check_known_categories(adata, model.registry_)  # the training data pass
    subset = adata[adata.obs["lane"] == "L1"].copy()
    check_known_categories(subset, model.registry_)  # a subset of the categories passes
    new = adata.copy()
    new.obs["lane"] = new.obs["lane"].astype(str)
    new.obs.iloc[0, new.obs.columns.get_loc("lane")] = "L3"
    msg = (
        "adata.obs['lane'] holds ['L3'], which the model was not trained on; "
        "its decoder knows ['L1', 'L2']."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        check_known_categories(new, model.registry_)
    new = adata.copy()
    new.obs["phase"] = new.obs["phase"].astype(str)
    new.obs.iloc[0, new.obs.columns.get_loc("phase")] = "M"
    with pytest.raises(ValueError, match=re.escape("adata.obs['phase'] holds ['M'], which")):
        check_known_categories(new, model.registry_)
