"""Model files load without running code; saves keep the user's files and survive a kill.

Each test name below is referenced from docs/reliability.md.
"""

import json
import os
import shutil
import warnings
from collections import defaultdict
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scvi.model.base import BaseModelClass

import scsena
from conftest import Payload

N_GENES = 60


def _toy(seed=0):
    """A small AnnData whose genes overlap the GO gene sets."""
    sets = scsena.gene_sets.go_bp(terms="sena")
    big = sorted(sets, key=lambda t: -len(sets[t]))[:8]
    genes = sorted({g for t in big for g in sets[t]})[:N_GENES]
    labels = [""] * 40 + ["A"] * 40 + ["B"] * 40 + ["A,B"] * 20
    rng = np.random.default_rng(seed)
    X = np.log1p(rng.poisson(2.0, size=(len(labels), len(genes))).astype(np.float32))
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame({"guide_ids": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
    scsena.SENAVAE.setup_anndata(adata)
    return adata


def _poison(model_dir: Path, marker: Path, where: str) -> None:
    """Add a payload to a saved model file, as someone sharing a model could."""
    file = model_dir / "model.pt"
    saved = torch.load(file, weights_only=True)
    if where == "top":
        saved["extra"] = Payload(marker)
    else:
        saved["attr_dict"]["seed_"] = Payload(marker)
    torch.save(saved, file)


def _predict(model, adata):
    return model.predict_perturbation(["A", "A,B"], adata=adata, n_cells=10, seed=3).X


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("where", ["top", "attr_dict"])
def test_malicious_model_never_runs(tmp_path, where):
    adata = _toy()
    scsena.SENAVAE(adata).save(tmp_path / "m", save_anndata=True)
    marker = tmp_path / "payload-ran"
    _poison(tmp_path / "m", marker, where)
    calls = [
        lambda: scsena.SENAVAE.load(tmp_path / "m"),
        lambda: scsena.SENAVAE.load(tmp_path / "m", adata=_toy()),
        lambda: scsena.SENAVAE.load_registry(tmp_path / "m"),
        lambda: scsena.SENAVAE.view_setup_args(tmp_path / "m"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="Refusing to load .*trusted=True"):
            call()
        assert not marker.exists()


def test_model_file_loads_with_weights_only(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1)
    model.save(tmp_path / "m")
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert saved["scsena_format"] == 2
    registry = scsena.SENAVAE.load_registry(tmp_path / "m")
    mask = registry["field_registries"]["gene_set_mask"]["state_registry"]["mask"]
    ours = model.registry_["field_registries"]["gene_set_mask"]["state_registry"]["mask"]
    for key, value in ours.items():
        np.testing.assert_array_equal(mask[key], value)
        assert np.asarray(mask[key]).dtype == np.asarray(value).dtype
    loaded = scsena.SENAVAE.load(tmp_path / "m", adata=adata)
    for name in ("targets_", "heldout_", "term_ids_", "seed_", "init_params_"):
        assert getattr(loaded, name) == getattr(model, name)
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_older_model_file_needs_trusted(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1)
    # the layout of older scsena versions: scvi-tools' pickled NumPy arrays
    BaseModelClass.save(model, str(tmp_path / "old"))
    with pytest.raises(ValueError, match="older scsena version"):
        scsena.SENAVAE.load(tmp_path / "old", adata=adata)
    with pytest.warns(UserWarning, match="unrestricted unpickler"):
        loaded = scsena.SENAVAE.load(tmp_path / "old", adata=adata, trusted=True)
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))
    loaded.save(tmp_path / "new")  # converted: loads without trusted
    scsena.SENAVAE.load(tmp_path / "new", adata=adata)


def test_file_from_before_presets_loads_as_reference(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1, preset="reference")
    # files saved before presets existed have no "preset" among their init params
    del model.init_params_["non_kwargs"]["preset"]
    BaseModelClass.save(model, str(tmp_path / "old"))
    with pytest.warns(UserWarning, match="unrestricted unpickler"):
        loaded = scsena.SENAVAE.load(tmp_path / "old", adata=adata, trusted=True)
    assert loaded.preset_ == "reference"
    assert type(loaded.module.intervention).__name__ == "InterventionEncoder"
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_file_from_before_member_weights_loads_with_free_weights(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1, member_weights="free")
    # files saved before the option existed have no "member_weights": their layer was free
    del model.init_params_["non_kwargs"]["member_weights"]
    model.save(tmp_path / "old")
    loaded = scsena.SENAVAE.load(tmp_path / "old", adata=adata)
    assert loaded.preset_ == "scsena"
    assert type(loaded.module.fc1).__name__ == "MaskedLinear"
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_plain_encoding_round_trip(tmp_path):
    """Saved attributes of every kind come back with their values and types."""
    frame = pd.DataFrame(
        {"loss": np.arange(3, dtype=np.float32), "kind": pd.Categorical(["a", "b", "a"])},
        index=pd.Index([5, 6, 7], name="epoch"),
    )
    value = {
        "f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "i64": np.arange(4),
        "bool": np.array([True, False]),
        "str": np.array(["GO:1", "GO:22"]),
        "obj": np.array(["x", None, 3], dtype=object),
        "scalars": [np.float64(0.5), np.int32(3), np.str_("s"), 1, 2.5, "t", None, True],
        "frame": frame,
        "series": frame["loss"],
        "tuple": (1, "a"),
        "set": {1, 2},
        "path": Path("a/b"),
        "dd": defaultdict(dict, {"x": {"y": 1}}),
    }
    model = scsena.SENAVAE(_toy())
    model.saved_values_ = value
    model.save(tmp_path / "m")
    torch.load(tmp_path / "m" / "model.pt", weights_only=True)  # plain tensors and containers
    back = scsena.SENAVAE.load(tmp_path / "m", adata=_toy()).saved_values_
    for key in ("f32", "i64", "bool", "str", "obj"):
        np.testing.assert_array_equal(back[key], value[key])
        assert back[key].dtype == value[key].dtype
    assert [type(x) for x in back["scalars"]] == [type(x) for x in value["scalars"]]
    assert back["scalars"] == value["scalars"]
    pd.testing.assert_frame_equal(back["frame"], frame)
    pd.testing.assert_series_equal(back["series"], frame["loss"])
    assert back["tuple"] == (1, "a") and back["set"] == {1, 2} and back["path"] == Path("a/b")
    assert isinstance(back["dd"], defaultdict) and back["dd"] == value["dd"]
    model.unstorable_ = object()
    with pytest.raises(TypeError, match="Cannot store unstorable_"):
        model.save(tmp_path / "m2")


# ------------------------------------------------------------------- saving
def test_save_overwrite_keeps_user_files(tmp_path):
    adata = _toy()
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        scsena.SENAVAE(adata).save(target)
    scsena.SENAVAE(adata).save(target, overwrite=True, save_anndata=True)
    assert (target / "adata.h5ad").exists()
    model = scsena.SENAVAE(adata, seed=4)
    model.save(target, overwrite=True)  # no data this time: the old copy goes
    assert sorted(p.name for p in target.iterdir()) == ["model.pt", "notes.txt", "scsena.json"]
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    loaded = scsena.SENAVAE.load(target, adata=adata)
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_save_uses_unique_temporary_names(tmp_path):
    adata = _toy()
    scsena.SENAVAE(adata).save(tmp_path / "m")
    # the name older versions used for the previous model, taken by someone else
    blocker = tmp_path / f".m.old-{os.getpid()}"
    blocker.mkdir()
    (blocker / "x.txt").write_text("not a model")
    model = scsena.SENAVAE(adata, seed=5)
    model.save(tmp_path / "m", overwrite=True)
    assert (blocker / "x.txt").read_text() == "not a model"
    loaded = scsena.SENAVAE.load(tmp_path / "m", adata=adata)
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_killed_save_is_completed_on_next_load(tmp_path, monkeypatch):
    adata = _toy()
    scsena.SENAVAE(adata, seed=1).save(tmp_path / "m")
    new = scsena.SENAVAE(adata, seed=2)
    moves = []
    real_replace = os.replace

    def killed_after_first_move(src, dst):
        moves.append(dst)
        if len(moves) == 3:  # 1: the completion mark, 2: model.pt, 3: scsena.json
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "m", overwrite=True)
    monkeypatch.undo()
    assert any(p.name.startswith(".scsena-save-") for p in (tmp_path / "m").iterdir())
    with pytest.warns(UserWarning, match="Completed a save"):
        loaded = scsena.SENAVAE.load(tmp_path / "m", adata=adata)
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(new, adata))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.pt", "scsena.json"]


def _staging(model_dir, pid, token, host=None):
    """A staging directory as a killed save leaves it: its marker, half a file."""
    import socket

    partial = model_dir / f".scsena-save-{pid}-{token}"
    partial.mkdir()
    marker = {"token": token, "host": host or socket.gethostname(), "pid": pid}
    (partial / "scsena-staging.json").write_text(json.dumps(marker))
    (partial / "model.pt").write_bytes(b"half a file")
    return partial


def test_killed_save_leftovers_are_removed(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1)
    model.save(tmp_path / "m")
    # killed while writing (no completion mark; its process is gone)
    partial = _staging(tmp_path / "m", 999999999, "abc123")
    with pytest.warns(UserWarning, match="Removed '.scsena-save-999999999-abc123'"):
        loaded = scsena.SENAVAE.load(tmp_path / "m", adata=adata)
    assert not partial.exists()
    np.testing.assert_array_equal(_predict(loaded, adata), _predict(model, adata))


def test_recovery_touches_only_what_a_save_wrote(tmp_path):
    adata = _toy()
    model = scsena.SENAVAE(adata, seed=1)
    model.save(tmp_path / "m")
    model.save(tmp_path / "x")
    # a dated backup and an older version's leftover name: user data, never removed
    shutil.copytree(tmp_path / "x", tmp_path / ".m.20261207")
    shutil.copytree(tmp_path / "x", tmp_path / ".m.old-4242")
    # a staging name without the marker its save writes first, a marker of another
    # run (token differs), and a save running on another host of a shared file system
    unmarked = tmp_path / "m" / ".scsena-save-999999999-zz9"
    unmarked.mkdir()
    (unmarked / "model.pt").write_bytes(b"mine")
    forged = _staging(tmp_path / "m", 999999998, "tok1")
    (forged / "scsena-staging.json").write_text(
        json.dumps({"token": "other", "host": "x", "pid": 999999998})
    )
    elsewhere = _staging(tmp_path / "m", 999999997, "tok2", host="another-node")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scsena.SENAVAE.load(tmp_path / "m", adata=adata)
        model.save(tmp_path / "m", overwrite=True)
    for kept in (tmp_path / ".m.20261207", tmp_path / ".m.old-4242", unmarked, forged, elsewhere):
        assert kept.exists(), kept
    assert (unmarked / "model.pt").read_bytes() == b"mine"
    scsena.SENAVAE.load(tmp_path / ".m.20261207", adata=adata)


def test_save_follows_the_umask(tmp_path):
    import stat

    model = scsena.SENAVAE(_toy(), seed=1)
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_convert_legacy_save_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="trusted=True"):
        scsena.SENAVAE.convert_legacy_save(str(tmp_path), str(tmp_path / "out"))
