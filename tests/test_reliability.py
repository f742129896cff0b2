"""Bad input gets a clear error; nothing is lost; results are reproducible.

Each test name below is referenced from docs/reliability.md.
"""

import warnings

import anndata as ad
import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings

import scsena
from conftest import TRAIN_KW, toy_adata
from scsena.data import encode_labels, normalise_labels, parse_perturbations


# ---------------------------------------------------------------- perturbation column
def test_missing_perturbation_column():
    with pytest.raises(KeyError, match="Perturbation column 'condition' not found"):
        scsena.SENAVAE.setup_anndata(toy_adata(), perturbation_key="condition")


def test_non_string_labels():
    a = toy_adata()
    a.obs["guide_ids"] = np.arange(a.n_obs)
    with pytest.raises(TypeError, match="must be strings"):
        scsena.SENAVAE.setup_anndata(a)


def test_missing_label_values():
    a = toy_adata()
    a.obs["guide_ids"] = a.obs["guide_ids"].astype(object)
    a.obs.iloc[3, 0] = None
    with pytest.raises(ValueError, match="missing value"):
        scsena.SENAVAE.setup_anndata(a)


def test_no_control_cells():
    a = toy_adata(labels=["A"] * 50 + ["B"] * 50)
    with pytest.raises(ValueError, match="No control cells.*control_value"):
        scsena.SENAVAE.setup_anndata(a)


def test_control_label_absent():
    a = toy_adata(labels=["NT"] * 40 + ["A"] * 40 + ["B"] * 40)
    with pytest.raises(ValueError, match="control_value=''.*'NT'"):
        scsena.SENAVAE.setup_anndata(a)
    scsena.SENAVAE.setup_anndata(a, control_value="NT")


def test_empty_target_name():
    a = toy_adata(labels=[""] * 40 + ["A"] * 40 + ["A,"] * 40)
    with pytest.raises(ValueError, match="empty target name"):
        scsena.SENAVAE.setup_anndata(a)


def test_more_than_two_targets():
    a = toy_adata(labels=[""] * 40 + ["A"] * 40 + ["A,B,C"] * 40)
    with pytest.raises(ValueError, match="at most 2 targets"):
        scsena.SENAVAE.setup_anndata(a)


def test_double_with_unseen_target_at_prediction():
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a)
    with pytest.raises(ValueError, match=r"Unknown target\(s\) \['C'\].*seen singly"):
        model.predict_perturbation("A,C", n_cells=3)


# ------------------------------------------------------------------------- genes
def test_symbols_versus_ensembl():
    a = toy_adata()
    a.var_names = [f"GENE{i}" for i in range(a.n_vars)]
    with pytest.raises(ValueError, match="(?i)symbol|ensembl"):
        scsena.SENAVAE.setup_anndata(a)


def test_versioned_ensembl_ids_say_strip_the_version():
    a = toy_adata()
    a.var_names = [f"{g}.{i % 20 + 1}" for i, g in enumerate(a.var_names)]
    with pytest.raises(ValueError, match="versioned Ensembl IDs.*Strip the version"):
        scsena.SENAVAE.setup_anndata(a)


def test_unicode_forms_of_a_label_are_one_target():
    import unicodedata

    composed, decomposed = (unicodedata.normalize(f, "Caf\u00e9") for f in ("NFC", "NFD"))
    assert composed != decomposed
    labels = [""] * 60 + [composed] * 40 + [decomposed] * 40 + ["B"] * 40
    a = toy_adata(labels=labels)
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a)
    assert list(model.targets_) == ["B", composed]
    pred = model.predict_perturbation(decomposed, n_cells=3)
    assert pred.obs["perturbation"].iloc[0] == composed


def test_duplicated_var_names():
    a = toy_adata()
    a.var_names = [a.var_names[0]] * 2 + list(a.var_names[2:])
    with pytest.raises(ValueError, match="var_names_make_unique"):
        scsena.SENAVAE.setup_anndata(a)


def test_all_zero_genes_warn():
    a = toy_adata()
    a.X[:, :3] = 0
    with pytest.warns(UserWarning, match="3 gene\\(s\\) are zero in every cell"):
        scsena.SENAVAE.setup_anndata(a)


def test_nothing_left_after_min_genes():
    a = toy_adata()
    with pytest.raises(ValueError, match="min_genes"):
        scsena.SENAVAE.setup_anndata(a, gene_sets={"S1": list(a.var_names[:3])}, min_genes=5)


# ------------------------------------------------------------------------ values
@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative values")],
)
def test_bad_values(value, match):
    a = toy_adata()
    a.X[2, 5] = value
    with pytest.raises(ValueError, match=match):
        scsena.SENAVAE.setup_anndata(a)


def test_raw_counts_warn_with_fix():
    a = toy_adata(X=np.random.default_rng(0).poisson(12, size=(140, 60)).astype(np.float32))
    with pytest.warns(UserWarning, match="raw counts.*normalize_total"):
        scsena.SENAVAE.setup_anndata(a)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_matrix_formats_give_identical_results(fmt):
    base = toy_adata()
    a = base.copy()
    a.X = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}[fmt](base.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a, seed=3)
    act = model.get_pathway_activity(key_added=None)
    ref = toy_adata()
    scsena.SENAVAE.setup_anndata(ref)
    expected = scsena.SENAVAE(ref, seed=3).get_pathway_activity(key_added=None)
    np.testing.assert_allclose(act, expected, rtol=1e-5, atol=1e-6)


def test_backed_anndata(tmp_path):
    a = toy_adata()
    a.X = sp.csr_matrix(a.X)
    a.write_h5ad(tmp_path / "toy.h5ad")
    backed = ad.read_h5ad(tmp_path / "toy.h5ad", backed="r")
    scsena.SENAVAE.setup_anndata(backed)
    model = scsena.SENAVAE(backed, seed=1)
    model.train(**dict(TRAIN_KW, max_epochs=1, batch_size=16))
    pred = model.predict_perturbation("A,B", n_cells=5)
    assert pred.shape == (5, a.n_vars) and np.isfinite(pred.X).all()
    # pathway readouts and their gene-level evidence read the backed rows in batches
    da = model.differential_activity()
    assert da["consistent"].all() and np.isfinite(da["members_lfc"]).all()


# ------------------------------------------------------------------- transfer
def test_load_onto_other_genes_is_clear(tmp_path):
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    scsena.SENAVAE(a).save(tmp_path / "m")
    other = toy_adata(n_genes=50)
    with pytest.raises(ValueError, match="genes differ from the model's"):
        scsena.SENAVAE.load(tmp_path / "m", adata=other)


def test_load_onto_new_perturbation_categories(tmp_path):
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a)
    model.save(tmp_path / "m")
    # new data: a new single target C, unknown to the model, is kept out of its folds
    new = toy_adata(labels=[""] * 30 + ["A"] * 30 + ["C"] * 30 + ["A,C"] * 10)
    loaded = scsena.SENAVAE.load(tmp_path / "m", adata=new)
    assert loaded.targets_ == ["A", "B"]
    assert set(new.obs["scsena_fold"][new.obs["guide_ids"].isin(["C", "A,C"])]) == {"excluded"}
    pred = loaded.predict_perturbation("A,B", adata=new, n_cells=4)
    assert pred.n_obs == 4


# --------------------------------------------------------------- nothing lost
def test_save_refuses_overwrite_and_is_atomic(tmp_path):
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left
    assert (tmp_path / "m" / "scsena.json").exists()


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved model"):
        scsena.SENAVAE.load(tmp_path / "nothing", adata=toy_adata())


def test_activity_never_overwrites_user_keys():
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    model = scsena.SENAVAE(a)
    a.obsm["X_scsena_activity"] = np.zeros((a.n_obs, 2))
    with pytest.raises(ValueError, match="not written by scsena"):
        model.get_pathway_activity()
    model.get_pathway_activity(key_added="my_bp")
    assert a.obsm["my_bp"].shape[1] == len(model.term_ids_)
    model.get_pathway_activity(key_added="my_bp")  # ours: may be refreshed
    model.get_pathway_activity(overwrite=True)
    assert a.obsm["X_scsena_activity"].shape[1] == len(model.term_ids_)


def test_foreign_mask_key_refused():
    a = toy_adata()
    a.uns["scsena_mask"] = "something of mine"
    with pytest.raises(ValueError, match="not a scsena gene-set mask"):
        scsena.SENAVAE.setup_anndata(a)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    a = toy_adata()
    scsena.SENAVAE.setup_anndata(a)
    kw = dict(TRAIN_KW, batch_size=16, max_epochs=4)
    kw.pop("enable_checkpointing")
    full = scsena.SENAVAE(a, seed=2)
    full.train(**kw)
    # interrupted after 2 of 4 epochs, then resumed from the checkpoint
    first = scsena.SENAVAE(a, seed=2)
    first.train(**dict(kw, max_epochs=4), checkpoint_dir=tmp_path / "ck", callbacks=[_StopAfter(2)])
    assert (tmp_path / "ck" / "last.ckpt").exists()
    resumed = scsena.SENAVAE(a, seed=2)
    resumed.train(**kw, ckpt_path=tmp_path / "ck" / "last.ckpt")
    for k, v in full.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[k], v, rtol=0, atol=0)


class _StopAfter(__import__("lightning").pytorch.Callback):
    def __init__(self, n):
        self.n = n

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.n:
            trainer.should_stop = True


# ------------------------------------------------------------ property-based
label = st.text(alphabet="ABCDxy-", min_size=1, max_size=5)


@given(
    st.lists(
        st.one_of(st.just(""), label, st.tuples(label, label).map(",".join)),
        min_size=1,
        max_size=30,
    )
)
def test_label_parser_never_crashes_unexpectedly(labels):
    try:
        parsed = parse_perturbations(labels)
    except ValueError as err:
        assert any(
            s in str(err) for s in ("No control", "No single", "empty target", "repeats", "at most")
        )
        return
    assert parsed.codes.shape == (len(labels), 2)
    assert set(parsed.kind) <= {"control", "single", "double", "other"}
    for lab, code, kind in zip(parsed.labels, parsed.codes, parsed.kind):
        if kind == "single":
            assert parsed.targets[code[0]] == lab and code[1] == -1
        if kind == "double":
            assert ",".join(parsed.targets[c] for c in code) == lab


@given(st.lists(st.tuples(label, label), min_size=1, max_size=10))
def test_pertpy_and_cpa_conventions_agree(pairs):
    cpa = [f"{a},{b}" if a != b else a for a, b in pairs]
    pertpy = [f"{a}+{b}" if a != b else a for a, b in pairs]
    assert list(normalise_labels(cpa)) == list(normalise_labels(pertpy, "control", "+"))


def test_encode_labels_round_trip():
    targets = ["A", "B", "C"]
    np.testing.assert_array_equal(encode_labels(["B", "A,C"], targets), [[1, -1], [0, 2]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_cells=st.integers(3, 40),
    n_genes=st.integers(1, 40),
    p_control=st.floats(0, 1),
    data=st.data(),
)
def test_setup_anndata_random_inputs(n_cells, n_genes, p_control, data):
    rng = np.random.default_rng(0)
    labels = [
        "" if rng.random() < p_control else data.draw(st.sampled_from(["A", "B", "A,B", "C"]))
        for _ in range(n_cells)
    ]
    X = data.draw(
        st.sampled_from(
            [
                np.log1p(rng.poisson(1.0, size=(n_cells, n_genes))).astype(np.float32),
                np.zeros((n_cells, n_genes), np.float32),
            ]
        )
    )
    a = toy_adata(n_genes=n_genes, labels=labels, X=X)
    sets = {"S": list(a.var_names[: max(1, n_genes // 2)])}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scsena.SENAVAE.setup_anndata(a, gene_sets=sets, min_genes=1)
    except (ValueError, KeyError, TypeError) as err:
        assert any(s in str(err) for s in ("No control", "No single", "min_genes", "overlap"))
        return
    model = scsena.SENAVAE(a)
    assert model.module.fc1.out_features == 1
