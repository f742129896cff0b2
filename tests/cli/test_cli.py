"""Command line: demo, train -> evaluate -> activity, MLflow tracking."""

import json
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scsena
from conftest import Payload
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
    # the mask printed is the one setup_anndata builds on the same data; nothing trains
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=500, n_genes=200, n_targets=5, n_doubles=2, seed=0
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    mask = scsena.gene_sets.GeneSetMask.from_uns(adata.uns["scsena_mask"])
    assert (
        f"[mask] SENA GO BP preset: {mask.n_terms} terms with >= 5 genes, "
        f"{mask.membership.nnz} gene-term pairs"
    ) in out
    assert out.rstrip().splitlines()[-1].startswith("[mask]")


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
                "16",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    out = captured.out
    for key in (
        "[train] 16 epochs",
        "[eval] unseen doubles",
        "[predict] unseen double",
        "[interpret]",
    ):
        assert key in out
    # every model figure is printed beside the control and additive baselines
    table = {
        line[:20].strip(): line[20:].split()
        for line in out.splitlines()
        if line.startswith("  ") and len(line[20:].split()) == 2
    }
    assert {"model, untrained", "model, trained", "control baseline", "additive baseline"} <= set(
        table
    )
    mmd = {k: float(v[0]) for k, v in table.items() if k}
    pearson = {k: float(v[1]) for k, v in table.items() if k}
    # training lowers the model's MMD on the unseen doubles; on this simulator the additive
    # baseline follows the observed change better than predicting no change
    assert mmd["model, trained"] < mmd["model, untrained"]
    assert pearson["additive baseline"] > pearson["control baseline"]
    # the table is over the double cells the data line reports; the rest names the model
    doubles = int(out.split("'double': ")[1].split(",")[0])
    assert f"[eval] unseen doubles, {doubles} cells" in out
    assert "200 generated cells x 200 genes" in out
    assert "[interpret] activation-score test over 5 targets" in out
    # progress is on: one line per epoch (pytest's stderr is not a terminal)
    assert [ln.split()[1] for ln in captured.err.splitlines() if ln.startswith("epoch ")] == [
        f"{i}/16" for i in range(1, 17)
    ]


def test_demo_with_too_few_cells_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as err:
        main(["demo", "--n-cells", "200", "--n-genes", "200"])
    message = str(err.value)
    assert message.startswith("error: --n-cells 200 leaves at most")
    assert "--batch-size 32" in message and "Raise --n-cells" in message
    assert "\n" not in message


def test_help_gives_every_option_a_text_and_its_default(capsys):
    import argparse

    from scsena.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        silent = [a.option_strings for a in command._actions if not a.help]
        assert not silent, f"scsena {name}: options without help {silent}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "Perturbation-pure batch size (default: the preset's, 32)",
        "(default: 'guide_ids')",
        "Training epochs (default: the preset's, 100)",
        "(default: True)",
    ):
        assert shown in text
    assert "(default: None)" not in text


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
    printed = capsys.readouterr().out
    assert printed.count("[train] seed 0") == 2 and printed.count("[train] seed 1") == 2
    assert printed.rstrip().splitlines()[-2:] == [
        f"  scsena evaluate --model-dir {save}   # metrics and baselines on the folds",
        f"  scsena activity --model-dir {save}   # pathway activities, activation-score test",
    ]
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
    assert set(double["method"]) == {"scsena", "control", "additive"}
    assert (double.loc[double["method"] == "scsena", "n_seeds"] == 2).all()
    tidy = pd.read_csv(out / "seed0" / "metrics.tsv", sep="\t")
    assert list(tidy.columns) == ["method", "fold", "perturbation", "metric", "value"]
    # evaluate names every file it wrote
    wrote = _wrote(capsys.readouterr().out)
    assert wrote == {str(p) for p in out.rglob("*") if p.is_file()} and len(wrote) == 5

    before = {p for p in save.rglob("*") if p.is_file()}
    assert main(["activity", "--model-dir", str(save)]) == 0
    assert (save / "seed0" / "activity.h5ad").exists()
    printed = capsys.readouterr().out
    # the printed figures are the means of the test written beside the activities
    test = pd.read_csv(save / "seed0" / "activity_test.tsv", sep="\t")
    assert f"recall@25 {test['recall@25'].mean():.3f}" in printed
    assert f"z-diff {test['z_diff'].mean():.3f}" in printed
    bp = ad.read_h5ad(save / "seed0" / "activity.h5ad")
    assert f"{bp.n_obs} cells x {bp.n_vars} BPs" in printed
    assert _wrote(printed) == {str(p) for p in save.rglob("*") if p.is_file()} - {
        str(p) for p in before
    }
    # every seed gets its differential activity, with the genes behind each call, and
    # the run a consensus over its seeds
    for seed in (0, 1):
        da = pd.read_csv(save / f"seed{seed}" / "differential_activity.tsv", sep="\t")
        assert {"members_lfc", "driver_genes", "consistent"} <= set(da.columns)
    consensus = pd.read_csv(save / "activity_consensus.tsv", sep="\t")
    assert (consensus["n_seeds"] == 2).all()
    agree = (consensus["agree_direction"] == 2).mean()
    assert f"{agree:.1%} of (perturbation, BP) calls agree in direction" in printed


def _wrote(printed: str) -> set[str]:
    """The files a command said it wrote."""
    return {ln[len("[wrote] ") :] for ln in printed.splitlines() if ln.startswith("[wrote] ")}


def test_evaluate_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no trained runs"):
        main(["evaluate", "--model-dir", str(tmp_path)])


def test_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", "--data", str(tmp_path / "nope.h5ad"), "--save-dir", str(tmp_path / "o")])


# --------------------------------------------------------------- hostile and careless use
SMALL = [
    "--data",
    "simulate",
    "--sim-cells",
    "400",
    "--sim-genes",
    "200",
    "--sim-targets",
    "4",
    "--sim-doubles",
    "2",
]


@pytest.fixture(scope="module")
def _small_run(tmp_path_factory):
    save = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--save-dir", str(save)]) == 0
    return save


@pytest.fixture
def small_run(_small_run, tmp_path):
    """A copy of a one-epoch CLI run, free to change."""
    return Path(shutil.copytree(_small_run, tmp_path / "run"))


@pytest.mark.parametrize("command", ["evaluate", "activity"])
def test_cli_refuses_malicious_model(small_run, tmp_path, command):
    file = small_run / "seed0" / "model" / "model.pt"
    saved = torch.load(file, weights_only=True)
    marker = tmp_path / "payload-ran"
    saved["extra"] = Payload(marker)
    torch.save(saved, file)
    with pytest.raises(SystemExit, match="Refusing to load .*--trusted") as err:
        main([command, "--model-dir", str(small_run)])
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_cli_config_cannot_redirect_writes(small_run, tmp_path):
    config_file = small_run / "config.json"
    config = json.loads(config_file.read_text())
    elsewhere = tmp_path / "elsewhere"
    config_file.write_text(json.dumps({**config, "out": str(elsewhere)}))
    with pytest.raises(SystemExit, match=r"unknown option\(s\) \['out'\]"):
        main(["activity", "--model-dir", str(small_run)])
    config_file.write_text(json.dumps({**config, "sim_cells": "400"}))
    with pytest.raises(SystemExit, match="wrong type.*sim_cells='400'"):
        main(["activity", "--model-dir", str(small_run)])
    # a known option naming another directory is not followed
    config_file.write_text(json.dumps({**config, "save_dir": str(elsewhere)}))
    assert main(["activity", "--model-dir", str(small_run)]) == 0
    assert (small_run / "seed0" / "activity.h5ad").exists()
    assert not elsewhere.exists()


def test_cli_corrupt_data_is_one_line_error(tmp_path):
    data = tmp_path / "data.h5ad"
    data.write_text("gene,cell\nA,1\n")
    with pytest.raises(SystemExit, match="could not be read") as err:
        main(["train", "--data", str(data), "--save-dir", str(tmp_path / "out")])
    assert str(err.value).startswith("error: --data") and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_rerun_refuses_before_training(small_run):
    before = {p: p.read_bytes() for p in small_run.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match="already holds a run.*--overwrite"):
        main(["train", *SMALL, "--epochs", "1", "--lr", "0.5", "--save-dir", str(small_run)])
    assert {p: p.read_bytes() for p in small_run.rglob("*") if p.is_file()} == before


def test_cli_out_is_a_directory_in_every_command(small_run, tmp_path):
    out = tmp_path / "act_out"
    assert main(["activity", "--model-dir", str(small_run), "--out", str(out)]) == 0
    bp = ad.read_h5ad(out / "seed0" / "activity.h5ad")
    assert bp.n_obs > 0
    assert (out / "seed0" / "activity_test.tsv").exists()
    assert (out / "seed0" / "activity_scores.tsv").exists()
    for command in ("activity", "evaluate"):
        with pytest.raises(SystemExit, match="--out .* looks like a file name.*directory"):
            main([command, "--model-dir", str(small_run), "--out", str(tmp_path / "a.h5ad")])
    assert not (tmp_path / "a.h5ad").exists()
    # train takes --out as its run directory (the same as --save-dir)
    run = tmp_path / "run_out"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(run)]) == 0
    assert (run / "config.json").exists() and (run / "seed0" / "model").is_dir()


@pytest.mark.parametrize("command", ["train", "demo"])
def test_cli_refuses_zero_epochs(tmp_path, capsys, command):
    args = ["train", *SMALL, "--save-dir", str(tmp_path / "o")] if command == "train" else ["demo"]
    with pytest.raises(SystemExit):
        main([*args, "--epochs", "0"])
    assert "--epochs: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_shows_scsena_warnings(small_run, tmp_path):
    meta = small_run / "seed0" / "model" / "scsena.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "scsena": "0.0.1"}))
    with pytest.warns(UserWarning, match="Model saved with scsena 0.0.1"):
        main(["activity", "--model-dir", str(small_run), "--out", str(tmp_path / "a")])
    counts = scsena.datasets.simulate_perturbseq(
        n_cells=400, n_genes=200, n_targets=4, n_doubles=2, seed=0
    )
    counts.X = np.expm1(counts.X.toarray() if hasattr(counts.X, "toarray") else counts.X)
    counts.X = np.round(counts.X * 20)
    counts.write_h5ad(tmp_path / "counts.h5ad")
    args = ["train", "--data", str(tmp_path / "counts.h5ad"), "--epochs", "1"]
    assert main([*args, "--save-dir", str(tmp_path / "c")]) == 1
    assert main([*args, "--save-dir", str(tmp_path / "n"), "--normalize"]) == 0


def test_cli_refuses_raw_counts_with_its_own_option(tmp_path, capsys):
    counts = scsena.datasets.simulate_perturbseq(
        n_cells=400, n_genes=200, n_targets=4, n_doubles=2, seed=0
    )
    counts.X = np.round(np.expm1(counts.X.toarray()) * 20)
    counts.write_h5ad(tmp_path / "counts.h5ad")
    args = ["train", "--data", str(tmp_path / "counts.h5ad"), "--epochs", "1"]
    assert main([*args, "--save-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "raw counts" in err and "--normalize" in err
    assert "Traceback" not in err and not (tmp_path / "c").exists()
    assert main([*args, "--save-dir", str(tmp_path / "n"), "--normalize"]) == 0
    assert main(["evaluate", "--model-dir", str(tmp_path / "n")]) == 0


def test_cli_preset_reference_trains_the_published_model(tmp_path):
    save = tmp_path / "ref"
    args = ["train", *SMALL, "--epochs", "1", "--preset", "reference", "--save-dir", str(save)]
    assert main(args) == 0
    model = scsena.SENAVAE.load(save / "seed0" / "model")
    assert model.preset_ == "reference"
    assert type(model.module.intervention).__name__ == "InterventionEncoder"
    with pytest.raises(SystemExit):
        main(["train", *SMALL, "--preset", "paper", "--save-dir", str(tmp_path / "x")])


def test_cli_save_dir_with_glob_characters(tmp_path):
    save = tmp_path / "my run[v2]"
    assert main(["train", *SMALL, "--epochs", "1", "--save-dir", str(save)]) == 0
    assert main(["evaluate", "--model-dir", str(save)]) == 0


@pytest.mark.parametrize(
    ("seeds", "message"),
    [(["0", "0"], r"seed\(s\) \[0\] given twice"), (["-1"], "must be at least 0, got -1")],
)
def test_cli_refuses_bad_seeds(tmp_path, capsys, seeds, message):
    with pytest.raises(SystemExit):
        main(["train", *SMALL, "--seeds", *seeds, "--save-dir", str(tmp_path / "o")])
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_cli_out_on_an_existing_file_and_missing_folds(small_run, tmp_path):
    existing = tmp_path / "results"
    existing.write_text("mine")
    with pytest.raises(SystemExit, match="is an existing file; --out is a directory"):
        main(["evaluate", "--model-dir", str(small_run), "--out", str(existing)])
    assert existing.read_text() == "mine"
    (small_run / "seed0" / "folds.tsv").unlink()
    with pytest.raises(SystemExit, match="cannot read the folds of .*train that seed again"):
        main(["evaluate", "--model-dir", str(small_run)])


def test_cli_user_errors_are_one_line_naming_cli_options(tmp_path, capsys):
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=300, n_genes=100, n_targets=3, n_doubles=1, seed=0
    )
    adata.obs = adata.obs.rename(columns={"guide_ids": "perturbation"})
    adata.write_h5ad(tmp_path / "screen.h5ad")
    args = ["train", "--data", str(tmp_path / "screen.h5ad"), "--save-dir", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "--perturbation-key" in err and "Traceback" not in err
    assert main([*args, "--perturbation-key", "perturbation", "--epochs", "1"]) == 0
