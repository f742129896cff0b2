"""A new user's first hour: the documented examples run, pertpy-style labels work end to
end, training shows progress, and ``import scsena`` is light."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scsena
from scsena.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: Files whose ```python blocks must run as written (the tutorials are executed by the
#: documentation build, which fails on any error).
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: A block whose first line starts so is shown but not run; the reason follows.
NOT_RUN = "# not run:"


def _blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


DOCS_WITH_CODE = [p for p in DOC_FILES if _blocks(p)]


def test_documented_python_blocks_are_found():
    names = {p.name for p in DOCS_WITH_CODE}
    assert {"README.md", "index.md", "getting_started.md"} <= names
    skipped = [b for p in DOCS_WITH_CODE for b in _blocks(p) if b.startswith(NOT_RUN)]
    assert len(skipped) <= 3, "keep the blocks that are not run few"
    assert all(len(b.splitlines()[0]) > len(NOT_RUN) + 5 for b in skipped), "say why"


@pytest.mark.parametrize("path", DOCS_WITH_CODE, ids=lambda p: p.name)
def test_documented_python_blocks_run(path, tmp_path, monkeypatch):
    """Every ```python block of README.md and docs/*.md runs as written, in order, in one
    namespace per file (files they write go to a temporary directory)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for i, block in enumerate(_blocks(path), start=1):
        if block.startswith(NOT_RUN):
            continue
        exec(compile(block, f"{path.name} (python block {i})", "exec"), namespace)
    plt.close("all")


# ----------------------------------------------------------- pertpy-style labels, end to end
def _pertpy_style(adata):
    """The simulator's labels as pertpy writes them: "control", "A", "A+B"."""
    labels = adata.obs["guide_ids"].astype(str)
    adata.obs["perturbation_name"] = labels.where(labels != "", "control").str.replace(",", "+")
    return adata.copy()


def test_plus_and_control_labels_setup_train_predict_evaluate_cli(tmp_path, capsys):
    from scsena.evaluate import evaluate_model

    kw = dict(n_cells=700, n_genes=200, n_targets=5, n_doubles=2, seed=0)
    adata = _pertpy_style(scsena.datasets.simulate_perturbseq(**kw))
    assert "control" in set(adata.obs["perturbation_name"])
    assert adata.obs["perturbation_name"].str.contains("+", regex=False).any()
    scsena.SENAVAE.setup_anndata(
        adata, perturbation_key="perturbation_name", control_value="control", delimiter="+"
    )
    model = scsena.SENAVAE(adata, seed=0)
    model.train(max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                logger=False, enable_checkpointing=False)
    a, b = model.targets_[:2]
    pred = model.predict_perturbation([a, f"{a}+{b}", "control"], n_cells=20)
    assert pred.n_obs == 60
    assert np.isfinite(np.asarray(pred.X)).all()
    losses = model.get_fold_losses("double")
    doubles = set(adata.obs.loc[adata.obs["scsena_fold"] == "double", "perturbation_name"])
    assert set(losses["perturbation"]) == doubles and all("+" in d for d in doubles)
    res = evaluate_model(model, n_de_genes=5)
    table = res.results
    double_rows = table[table["fold"] == "double"]
    assert set(double_rows["perturbation"]) - {"(all)"} == doubles
    assert {"scsena", "control", "additive"} <= set(double_rows["method"])
    assert np.isfinite(double_rows.query("metric == 'mmd'")["value"]).all()

    path = tmp_path / "pertpy.h5ad"
    adata.write_h5ad(path)
    run = tmp_path / "run"
    labels = ["--perturbation-key", "perturbation_name", "--control-value", "control",
              "--delimiter", "+"]
    assert main(["train", "--data", str(path), *labels, "--epochs", "1",
                 "--save-dir", str(run)]) == 0
    assert main(["evaluate", "--model-dir", str(run), "--n-de-genes", "5"]) == 0
    metrics = pd.read_csv(run / "seed0" / "metrics.tsv", sep="\t")
    assert set(metrics.loc[metrics["fold"] == "double", "perturbation"]) - {"(all)"} == doubles
    assert main(["activity", "--model-dir", str(run)]) == 0
    assert (run / "seed0" / "activity.h5ad").exists()


# ------------------------------------------------------------------------------- progress
def _tiny_model():
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=500, n_genes=200, n_targets=4, n_doubles=2, seed=1
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    return scsena.SENAVAE(adata, seed=0)


def test_training_prints_one_line_per_epoch_when_not_a_terminal(capsys):
    model = _tiny_model()
    quiet = dict(enable_model_summary=False, logger=False, enable_checkpointing=False)
    model.train(max_epochs=3, **quiet)  # progress on by default; pytest's stderr is no tty
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(re.search(r"loss [-\d.e+]+ .* [\d.]+ s$", line) for line in lines)
    model.train(max_epochs=2, enable_progress_bar=False, **quiet)
    assert "epoch " not in capsys.readouterr().err


# ---------------------------------------------------------------------------- light import
def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("code", ["import scsena", "import scsena.cli"])
def test_import_scsena_loads_no_heavy_module(code):
    loaded = _modules_after(code)
    heavy = {"torch", "scvi", "scanpy", "matplotlib", "lightning", "anndata"} & loaded
    assert not heavy, f"`{code}` imports {sorted(heavy)}"


def test_lazy_attributes_of_scsena():
    from scsena import datasets, pl

    assert scsena.SENAVAE.__name__ == "SENAVAE"
    assert datasets is scsena.datasets and pl is scsena.pl
    assert {"SENAVAE", "pl", "metrics"} <= set(dir(scsena))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scsena.nope  # noqa: B018
