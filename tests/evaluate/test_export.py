"""Predictions and baselines exported for Arc Institute's cell-eval, and scored by it."""

import shutil
import subprocess

import anndata as ad
import numpy as np
import pytest

from conftest import pertpy_style
from scsena.evaluate import export_predictions


@pytest.fixture(scope="module")
def pertpy_style_model():
    return pertpy_style(seed=1, n_cells=900, n_targets=6, n_doubles=3, epochs=3)[0]


def test_export_predictions_writes_cell_eval_layout(pertpy_style_model, tmp_path):
    model = pertpy_style_model
    files = export_predictions(model, tmp_path, max_cells=50, n_control=80)
    assert set(files) == {"real", "pred_scsena", "pred_control", "pred_additive"}
    real = ad.read_h5ad(files["real"])
    doubles = sorted(set(real.obs["target_gene"]) - {"control"})
    assert doubles and all("+" in d for d in doubles)  # the data's own labels
    for stem, path in files.items():
        pred = ad.read_h5ad(path)
        assert list(pred.obs["target_gene"]) == list(real.obs["target_gene"]), stem
        assert list(pred.var_names) == list(real.var_names)
        assert pred.X.min() >= 0, stem  # baselines and model clipped at 0
    control = ad.read_h5ad(files["pred_control"])
    np.testing.assert_array_equal(
        control[control.obs["target_gene"] == "control"].X.toarray(),
        real[real.obs["target_gene"] == "control"].X.toarray(),
    )
    # each label goes back in
    model.predict_perturbation(doubles[0], n_cells=2)


def test_export_predictions_refuses_undefined_baselines(pertpy_style_model, tmp_path):
    with pytest.raises(ValueError, match="not defined for .*double fold.*combinations"):
        export_predictions(pertpy_style_model, tmp_path, baselines=["mean"])
    with pytest.raises(ValueError, match="Unknown baseline"):
        export_predictions(pertpy_style_model, tmp_path, baselines=["median"])
    with pytest.raises(ValueError, match="folds"):
        export_predictions(pertpy_style_model, tmp_path, folds=["validation"])


@pytest.mark.skipif(shutil.which("cell-eval") is None, reason="cell-eval (the eval extra)")
def test_cell_eval_runs_on_the_exported_files(pertpy_style_model, tmp_path):
    files = export_predictions(pertpy_style_model, tmp_path / "x", max_cells=50, n_control=80)
    for stem in ("pred_scsena", "pred_additive"):
        out = subprocess.run(
            [
                "cell-eval",
                "run",
                "-ap",
                str(files[stem]),
                "-ar",
                str(files["real"]),
                "--control-pert",
                "control",
                "--pert-col",
                "target_gene",
                "--profile",
                "minimal",
                "-o",
                str(tmp_path / stem),
                "--num-threads",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert (tmp_path / stem / "agg_results.csv").exists()
