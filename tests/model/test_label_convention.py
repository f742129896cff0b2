"""One label convention out: the data's own delimiter and control value, read back in."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import pertpy_style  # noqa: E402
from scsena import pl  # noqa: E402
from scsena.evaluate import baseline_cells, evaluate_model  # noqa: E402


@pytest.fixture(scope="module")
def pertpy_model():
    return pertpy_style(seed=2, n_cells=900, n_targets=4, n_doubles=2, epochs=2)


def _no_comma(labels) -> None:
    labels = {str(v) for v in labels}
    assert labels and not any("," in v for v in labels), labels


def test_every_output_speaks_the_datas_labels_and_each_goes_back_in(pertpy_model):
    model, adata = pertpy_model
    doubles = sorted(set(adata.obs["perturbation"]) - {"control", *model.targets_})
    asked = [model.targets_[0], doubles[0], "control"]
    pred = model.predict_perturbation(asked, n_cells=5)
    _no_comma(pred.obs["perturbation"])
    assert list(pred.uns["scsena_change"].index) == asked
    da = model.differential_activity()
    _no_comma(da["perturbation"])
    assert doubles[0] in set(da["perturbation"])
    bp = model.pathway_activity_anndata(differential=True)
    _no_comma(bp.obs["scsena_perturbation"])
    assert "control" in set(bp.obs["scsena_perturbation"])
    _no_comma(bp.uns["rank_genes_groups"]["names"].dtype.names)
    res = evaluate_model(model, folds=("double",), activation_test=False, readout_baselines=())
    _no_comma(set(res.results["perturbation"]) - {"(all)"})
    ax = pl.differential_activity(da, n_terms=1)
    _no_comma(t.get_text() for t in ax.get_xticklabels())
    # every label that comes out goes back in
    for label in set(da["perturbation"]) | set(pred.obs["perturbation"]):
        again = model.predict_perturbation(label, n_cells=2)
        assert again.obs["perturbation"].iloc[0] == label
    sub = model.differential_activity(perturbations=[doubles[0]])
    assert set(sub["perturbation"]) == {doubles[0]}
    start = np.flatnonzero(adata.obs["perturbation"] == "control")[:3]
    both = baseline_cells(model, doubles[0], start, baselines=["control", "additive"])
    assert set(both) == {"control", "additive"}
