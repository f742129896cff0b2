"""Command line: demo, train -> evaluate -> activity, MLflow tracking."""

import json

import pandas as pd
import pytest

from scsena.cli import main

SIM = [
    "--data",
    "simulate",
    "--sim-cells",
    "700",
    "--sim-genes",
    "200",
    "--sim-targets",
    "5",
    "--sim-doubles",
    "3",
]


def test_demo_mask_only(capsys):
    assert (
        main(
            [
                "demo",
                "--n-cells",
                "500",
                "--n-genes",
                "200",
                "--n-targets",
                "5",
                "--n-doubles",
                "2",
                "--mask-only",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[data] simulated 500 cells x 200 genes" in out
    assert "[mask] SENA GO BP preset" in out


def test_demo_trains_and_predicts(capsys):
    assert (
        main(
            [
                "demo",
                "--n-cells",
                "700",
                "--n-genes",
                "200",
                "--n-targets",
                "5",
                "--n-doubles",
                "2",
                "--epochs",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for key in ("[train] 4 epochs", "[eval] double fold", "[predict] unseen double", "[interpret]"):
        assert key in out


def test_train_evaluate_activity_with_mlflow(tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    save = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *SIM,
                "--epochs",
                "3",
                "--seeds",
                "0",
                "1",
                "--save-dir",
                str(save),
                "--log",
                "mlflow",
                "--experiment",
                "cli-test",
            ]
        )
        == 0
    )
    config = json.loads((save / "config.json").read_text())
    assert config["epochs"] == 3 and config["seeds"] == [0, 1] and config["encoder"] == "sena"
    for seed in (0, 1):
        assert (save / f"seed{seed}" / "model" / "model.pt").exists()
        folds = pd.read_csv(save / f"seed{seed}" / "folds.tsv", sep="\t", index_col=0)
        assert set(folds["scsena_fold"]) >= {"train", "double", "control"}
    # the runs' metrics landed in the local MLflow store
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{save / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cli-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    assert {"mmd_train", "mse_train", "kl_train", "l1_train", "loss_train"} <= set(
        runs[0].data.metrics
    )
    history = client.get_metric_history(runs[0].info.run_id, "loss_train")
    assert len(history) == 3

    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--model-dir", str(save), "--out", str(out), "--n-de-genes", "10"]) == 0
    )
    summary = pd.read_csv(out / "summary_over_seeds.tsv", sep="\t")
    double = summary[(summary["fold"] == "double") & (summary["metric"] == "mmd")]
    assert set(double["method"]) == {"sena", "control", "additive"}
    assert (double.loc[double["method"] == "sena", "n_seeds"] == 2).all()
    tidy = pd.read_csv(out / "seed0" / "metrics.tsv", sep="\t")
    assert list(tidy.columns) == ["method", "fold", "perturbation", "metric", "value"]

    assert main(["activity", "--model-dir", str(save)]) == 0
    assert (save / "seed0" / "activity.h5ad").exists()
    assert "recall@25" in capsys.readouterr().out


def test_evaluate_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no trained runs"):
        main(["evaluate", "--model-dir", str(tmp_path)])


def test_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", "--data", str(tmp_path / "nope.h5ad"), "--save-dir", str(tmp_path / "o")])
