"""The evaluation report script runs unchanged on a Norman 2019 file (CPA schema)."""

import runpy
import sys
from pathlib import Path

import scipy.sparse as sp

import scsena

ROOT = Path(__file__).resolve().parents[1]


def test_report_runs_on_a_norman_schema_file(tmp_path, monkeypatch):
    sim = scsena.datasets.simulate_perturbseq(
        n_cells=900, n_genes=200, n_targets=5, n_doubles=2, seed=1
    )
    # CPA's Norman2019_raw.h5ad layout: guide_ids ("" control, "A,B"), Ensembl var_names,
    # sparse log-normalised X
    cpa = sim.copy()
    cpa.X = sp.csr_matrix(cpa.X)
    del cpa.uns["scsena_simulation"], cpa.uns["scsena_dataset"], cpa.layers["counts"]
    cpa.obs = cpa.obs[["guide_ids"]]
    path = tmp_path / "Norman2019_raw.h5ad"
    cpa.write_h5ad(path)
    out = tmp_path / "results.md"
    argv = [
        "report.py",
        "--norman",
        str(path),
        "--epochs",
        "2",
        "--seeds",
        "0",
        "--configs",
        "scsena",
        "--ablations",
        "--max-cells",
        "30",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "report.py"), run_name="__main__")
    text = out.read_text()
    assert "Norman 2019" in text
    for section in ("Unseen double perturbations", "test fold", "Training fold", "recall@25"):
        assert section in text
    assert "| additive |" in text and "| scsena |" in text
    assert "MMD (published protocol)" in text and "MMD (per-batch average)" in text
    assert (tmp_path / "results.tsv").exists()
