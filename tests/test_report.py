"""The evaluation report script runs unchanged on a Norman 2019 file (CPA schema); the
benchmark page's tables come from the recorded JSON results."""

import json
import runpy
import shutil
import subprocess
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


def _render(*args: str) -> subprocess.CompletedProcess:
    script = ROOT / "benchmarks" / "render.py"
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )


def test_benchmark_page_is_generated_from_the_recorded_results():
    run = _render("--check")
    assert run.returncode == 0, run.stdout + run.stderr


def test_render_rewrites_a_table_from_its_json(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    page = tmp_path / "benchmarks.md"
    page.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    recorded = json.loads((results / "scale_targets.json").read_text())
    recorded["results"]["runs"][0].update(ms_per_step=12.34, peak_rss_mib=2048.4)
    (results / "scale_targets.json").write_text(json.dumps(recorded))
    assert _render("--check", "--page", str(page), "--results", str(results)).returncode == 1
    before = page.read_text()
    assert _render("--page", str(page), "--results", str(results)).returncode == 0
    after = page.read_text()
    assert "| 1,000 | 12.3 | 676,476 | 2048 MiB |" in after
    assert "| 1,000 | 20.6 | 676,476 | 672 MiB |" in before and "20.6 | 676,476" not in after
    # only the generated part changed: the hand-written text around it is kept
    changed = [a for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == ["| 1,000 | 20.6 | 676,476 | 672 MiB |"]
