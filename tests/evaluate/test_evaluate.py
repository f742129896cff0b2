"""Evaluation protocol on the trained simulator model."""

import numpy as np
import pandas as pd
import pytest

from scsena.evaluate import (
    FOLD_WIDE,
    EvaluationResult,
    baseline_cells,
    combine,
    evaluate_model,
    seed_summary,
)


def test_evaluate_model_folds_methods_metrics(trained, tmp_path):
    model, adata, _ = trained
    res = evaluate_model(model, adata, n_de_genes=10, max_cells=60)
    df = res.results
    assert list(df.columns) == ["method", "fold", "perturbation", "metric", "value"]
    assert set(df["fold"]) == {"train", "test", "double"}
    methods = {"scsena", "control", "mean", "additive", "gene-set mean", "gene-set ULM"}
    assert set(df["method"]) == methods
    doubles = set(adata.obs["guide_ids"][adata.obs["scsena_fold"] == "double"])
    got = set(df.loc[(df["fold"] == "double") & (df["method"] == "additive"), "perturbation"])
    assert got == doubles
    # the mean baseline is for seen singles, the additive one for doubles, named as the
    # field names them; where one is not defined it is left out, with a note
    assert set(df.loc[df["method"] == "mean", "fold"]) == {"train", "test"}
    assert set(df.loc[df["method"] == "additive", "fold"]) == {"double"}
    assert any(n.startswith("mean: not defined for combinations") for n in res.meta["notes"])
    assert any(n.startswith("additive: not defined for single") for n in res.meta["notes"])
    # the model-free readouts get the activation-score test beside the model
    recall = df[df["metric"] == "recall@25"]
    assert set(recall["method"]) == {"scsena", "gene-set mean", "gene-set ULM"}
    metrics = set(df["metric"])
    assert {
        "mmd",
        "energy",
        "mse_delta",
        "pearson_delta",
        "mse_delta_de",
        "pearson_delta_de",
        "l2_top1000",
        "ref_mmd",
        "batch_mmd",
        "spread_ratio",
        "distinct_factors",
        "assignment_recovery",
        "recall@25",
        "recall@100",
        "z_diff",
    } <= metrics
    # the additive baseline is informative on this simulator: it beats predicting no change
    table = res.table(["pearson_delta"], fold="double")
    assert table.loc["additive", "pearson_delta"] > table.loc["control", "pearson_delta"]
    # the published protocol gives one value per fold: the mean over its chunks
    ref = df[df["metric"] == "ref_mmd"]
    assert set(ref["perturbation"]) == {FOLD_WIDE} and set(ref["method"]) == {"scsena"}
    published = model.get_fold_losses("double", adata=adata, protocol="published", seed=0)
    value = ref.loc[ref["fold"] == "double", "value"].item()
    assert np.isclose(value, published["mmd"].mean())
    # the per-batch average is per perturbation, and a different number
    batch = df[(df["metric"] == "batch_mmd") & (df["fold"] == "double")]
    assert set(batch["perturbation"]) == doubles
    assert not np.isclose(batch["value"].mean(), value)
    # the default model keeps every target on its own factor
    distinct = df.loc[df["metric"] == "distinct_factors", "value"].item()
    assert distinct == len(model.targets_)
    # counterfactual predictions keep the spread of real cells (the control baseline is
    # real cells); the model's cells are not over-smoothed
    spread = res.table(["spread_ratio"], fold="double")["spread_ratio"]
    assert spread["scsena"] > 0.7 and abs(spread["scsena"] - spread["control"]) < 0.2
    res.write(tmp_path)
    back = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert len(back) == len(df)
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert {"mean", "sd", "n"} <= set(summary.columns)


def test_seed_summary_mean_and_sd():
    cols = ["method", "fold", "perturbation", "metric", "value"]

    def run(value):
        return EvaluationResult(
            pd.DataFrame(
                [("m", "double", "A,B", "mmd", value), ("m", "double", "C,D", "mmd", value + 2)],
                columns=cols,
            )
        )

    s = seed_summary(combine([run(1.0), run(3.0)], [0, 1]))
    row = s.iloc[0]
    # per-seed means over perturbations: 2 and 4 -> mean 3, sd sqrt(2)
    assert row["mean"] == 3.0 and np.isclose(row["sd"], np.sqrt(2)) and row["n_seeds"] == 2


def test_evaluation_result_summary_table_and_write(tmp_path):
    cols = ["method", "fold", "perturbation", "metric", "value"]
    rows = [
        ("m", "double", "A,B", "mmd", 1.0),
        ("m", "double", "C,D", "mmd", 3.0),
        ("m", "double", "A,B", "pearson_delta", 0.5),
        ("control", "double", "A,B", "mmd", 4.0),
        ("m", "test", "A", "mmd", 9.0),
    ]
    res = EvaluationResult(pd.DataFrame(rows, columns=cols))
    summary = res.summary().set_index(["method", "fold", "metric"])
    assert summary.loc[("m", "double", "mmd"), "mean"] == 2.0
    assert summary.loc[("m", "double", "mmd"), "sd"] == pytest.approx(np.sqrt(2))
    assert summary.loc[("m", "double", "mmd"), "n"] == 2
    # methods x metrics of one fold (default: the unseen doubles)
    table = res.table()
    assert table.loc["m", "mmd"] == 2.0 and table.loc["control", "mmd"] == 4.0
    assert np.isnan(table.loc["control", "pearson_delta"])
    assert list(res.table(["mmd"], fold="test").columns) == ["mmd"]
    assert res.table(["mmd"], fold="test").loc["m", "mmd"] == 9.0
    res.write(tmp_path / "out")
    back = pd.read_csv(tmp_path / "out" / "metrics.tsv", sep="\t")
    pd.testing.assert_frame_equal(back, res.results)
    written = pd.read_csv(tmp_path / "out" / "summary.tsv", sep="\t")
    assert len(written) == len(res.summary())


def test_baselines_are_clipped_and_unknown_ones_refused(trained):
    model, adata, _ = trained
    with pytest.raises(ValueError, match=r"Unknown baseline\(s\) \['median'\]"):
        evaluate_model(model, adata, baselines=("median",), folds=("double",))
    control = np.flatnonzero(adata.obs["scsena_fold"].to_numpy() == "control")[:50]
    single = model.targets_[0]
    cells = baseline_cells(model, single, control, baselines=("control", "mean"))
    start, mean = cells["control"], cells["mean"]
    guides = adata.obs["guide_ids"].to_numpy()
    train = (guides == single) & (adata.obs["scsena_fold"].to_numpy() == "train")
    x = adata.X.toarray()
    shift = x[train].mean(0) - x[adata.obs["scsena_fold"].to_numpy() == "control"].mean(0)
    assert (start + shift < 0).any()  # a shift takes some genes below zero...
    np.testing.assert_allclose(mean, np.maximum(start + shift, 0), atol=1e-5)  # ...clipped
    assert mean.min() >= 0
    double = sorted(set(guides[adata.obs["scsena_fold"].to_numpy() == "double"]))[0]
    additive = baseline_cells(model, double, control, baselines=("additive",))["additive"]
    assert additive.min() >= 0 and additive.shape == start.shape
    with pytest.raises(ValueError, match="additive: not defined for single perturbations"):
        baseline_cells(model, single, control, baselines=("additive",))
    with pytest.raises(ValueError, match="mean: not defined for combinations"):
        baseline_cells(model, double, control, baselines=("mean",))
