"""Plausible input never gives silently wrong results: it is refused, fixed or flagged.

Each test name below is referenced from docs/reliability.md.
"""

import warnings

import numpy as np
import pytest

import scsena
from conftest import TRAIN_KW, toy_adata
from scsena.data import encode_labels, parse_perturbations


def _model(labels=None, **setup):
    a = toy_adata(labels=labels)
    scsena.SENAVAE.setup_anndata(a, **setup)
    return scsena.SENAVAE(a, seed=0), a


# ------------------------------------------------------------------ gene order
def test_other_gene_order_refused_in_activity_and_prediction():
    model, a = _model()
    b = a[:, a.var_names[::-1]].copy()
    del b.uns["scsena_mask"]
    scsena.SENAVAE.setup_anndata(b)
    with pytest.raises(ValueError, match=r"another order.*model\.var_names"):
        model.get_pathway_activity(b, key_added=None)
    with pytest.raises(ValueError, match=r"another order.*model\.var_names"):
        model.predict_perturbation("A", n_cells=5, adata=b)
    # the documented fix works and gives the model's own result
    c = b[:, model.var_names].copy()
    del c.uns["scsena_mask"]
    scsena.SENAVAE.setup_anndata(c)
    np.testing.assert_array_equal(
        model.get_pathway_activity(c, key_added=None),
        model.get_pathway_activity(a, key_added=None),
    )


# ---------------------------------------------------------------------- labels
def test_labels_with_another_delimiter_refused():
    a = toy_adata(labels=[""] * 40 + ["A"] * 40 + ["B"] * 40 + ["A+B"] * 20)
    match = r"'A\+B' looks like targets joined by '\+'.*delimiter='\+'"
    with pytest.raises(ValueError, match=match):
        scsena.SENAVAE.setup_anndata(a)
    scsena.SENAVAE.setup_anndata(a, delimiter="+")  # the fix


def test_pertpy_labels_with_comma_delimiter_refused():
    labels = ["control"] * 40 + ["A"] * 40 + ["B"] * 40 + ["A+ctrl"] * 20
    with pytest.raises(ValueError, match="joined by '\\+'"):
        parse_perturbations(labels, "control", ",")


def test_canonical_double_labels():
    parsed = parse_perturbations(["", "A", "B", "A,B", "B,A"])
    assert list(parsed.labels) == ["", "A", "B", "A,B", "A,B"]
    assert (parsed.codes[3] == parsed.codes[4]).all()
    np.testing.assert_array_equal(encode_labels(["B,A"], ["A", "B"]), [[0, 1]])
    model, _ = _model(labels=[""] * 40 + ["A"] * 40 + ["B"] * 40 + ["B,A"] * 20)
    pred = model.predict_perturbation(["B,A", "A,B"], n_cells=4, use_mean=True)
    assert list(pred.obs["perturbation"].unique()) == ["A,B"]
    np.testing.assert_array_equal(pred.X[:4], pred.X[4:])


def test_repeated_target_refused_at_setup():
    a = toy_adata(labels=[""] * 40 + ["A"] * 40 + ["B"] * 40 + ["A,A"] * 20)
    with pytest.raises(ValueError, match="'A,A' repeats target 'A'"):
        scsena.SENAVAE.setup_anndata(a)


def test_case_only_target_difference_warns():
    a = toy_adata(labels=[""] * 40 + ["OXT"] * 40 + ["oxt"] * 40 + ["B"] * 20)
    with pytest.warns(UserWarning, match="'OXT' and 'oxt' differ only by letter case"):
        scsena.SENAVAE.setup_anndata(a)


# ------------------------------------------------------------ untrained targets
def test_targets_smaller_than_a_batch_warned_and_flagged():
    labels = [""] * 40 + ["A"] * 40 + ["B"] * 40 + ["C"] * 8 + ["A,C"] * 10
    model, _ = _model(labels=labels)
    with pytest.warns(UserWarning, match=r"never trained.*C \(\d\)"):
        model.train(**dict(TRAIN_KW, max_epochs=1, batch_size=16))
    assert model.untrained_targets_ == ["C"]
    with pytest.warns(UserWarning, match=r"\['C'\] rest on untrained parameters"):
        pred = model.predict_perturbation(["A", "A,C"], n_cells=3)
    flags = pred.obs.groupby("perturbation", observed=True)["untrained_target"].all()
    assert not flags["A"] and flags["A,C"]


# ---------------------------------------------------------------------- values
def test_shallow_integer_counts_warn():
    X = np.random.default_rng(0).poisson(1.5, size=(140, 60)).astype(np.float32)
    assert X.max() <= 13
    a = toy_adata(X=X)
    with pytest.warns(UserWarning, match=r"raw counts \(integers up to \d+\)"):
        scsena.SENAVAE.setup_anndata(a)


def test_missing_layer_names_layers_present():
    a = toy_adata()
    a.layers["lognorm"] = a.X.copy()
    with pytest.raises(KeyError, match=r"Layer 'nope' not found.*\['lognorm'\]"):
        scsena.SENAVAE.setup_anndata(a, layer="nope")


def test_duplicate_obs_names_refused():
    a = toy_adata()
    a.obs_names = ["c0"] * 2 + list(a.obs_names[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's own notice
        with pytest.raises(ValueError, match="obs_names has duplicates.*obs_names_make_unique"):
            scsena.SENAVAE.setup_anndata(a)


# ---------------------------------------------------------- prediction arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "`n_cells` must be a positive integer"),
        ({"n_cells": -3}, "`n_cells` must be a positive integer"),
        ({"n_cells": 2.5}, "`n_cells` must be a positive integer"),
        ({"control_indices": [0, 10_000]}, r"`control_indices` out of range: \[10000\]"),
        ({"control_indices": [-1]}, r"`control_indices` out of range"),
        ({"control_indices": [0, 45]}, r"`control_indices` must point at control cells.*45"),
        ({"control_indices": []}, "`control_indices` must be a non-empty list"),
        ({"temperature": 0}, "`temperature` must be a positive number"),
        ({"temperature": -1.0}, "`temperature` must be a positive number"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ],
)
def test_predict_argument_checks(kwargs, match):
    model, _ = _model()
    with pytest.raises(ValueError, match=match):
        model.predict_perturbation("A", **kwargs)


# ------------------------------------------------------------------ model files
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.pt", b""),
        ("model.pt", b"PK\x03\x04 truncated"),
        ("model.pt", b"some text, not a model"),
        ("scsena.json", b"{not json"),
        ("scsena.json", b"[1, 2]"),
    ],
)
def test_broken_model_files_named_in_error(tmp_path, name, content):
    model, _ = _model()
    model.save(tmp_path / "m")
    if name == "model.pt" and content.startswith(b"PK"):
        content = (tmp_path / "m" / name).read_bytes()[:200]  # a truncated real file
    (tmp_path / "m" / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name}' is not a valid scsena model file"):
        scsena.SENAVAE.load(tmp_path / "m")
