"""Time the data-preparation steps: the simulator and the gene-set mask.

Run: python benchmarks/data_prep.py [--n-cells 100000 --n-genes 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import scsena
from scsena import gene_sets as gs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_json_option,
    machine_line,
    process_peak_rss_mib,
    recording,
    write_json,
)


def time_simulator(args: argparse.Namespace):
    """Simulate the screen; returns the data and its numbers."""
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=0,
    )
    sim_s = time.perf_counter() - t
    print(
        f"simulate_perturbseq {adata.n_obs} cells x {adata.n_vars} genes: {sim_s:.1f} s "
        f"(X nnz {adata.X.nnz:,})"
    )
    numbers = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "seconds": sim_s}
    return adata, {**numbers, "nnz": int(adata.X.nnz)}


def time_masks(genes: np.ndarray) -> dict:
    """Time GO BP loading and ``build_mask`` on the default, every and SENA's terms."""
    t = time.perf_counter()
    all_terms = gs.go_bp(min_size=1)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    mask = gs.build_mask(genes, all_terms, min_genes=1)
    mask_s = time.perf_counter() - t
    print(f"go_bp(): {len(all_terms)} terms propagated in {load_s:.2f} s (first call)")
    print(
        f"build_mask {len(genes)} genes x {len(all_terms)} GO BP terms: {mask_s:.2f} s "
        f"-> {mask.n_terms} terms kept, {mask.membership.nnz:,} pairs"
    )
    every = time_every_term_mask(genes)
    t = time.perf_counter()
    sena = gs.build_mask(genes, gs.go_bp(terms="sena"), min_genes=5)
    sena_s = time.perf_counter() - t
    print(f"build_mask SENA preset: {sena_s:.2f} s -> {sena.n_terms} terms")
    return {
        "go_bp": {"n_terms": len(all_terms), "load_s": load_s},
        "mask": {"seconds": mask_s, "kept": mask.n_terms, "pairs": int(mask.membership.nnz)},
        "every_term": every,
        "sena": {"seconds": sena_s, "kept": sena.n_terms},
    }


def time_every_term_mask(genes: np.ndarray, calls: int = 5) -> dict:
    """``build_mask`` over the whole GO BP release (empty terms included), ``calls`` times."""
    every_term = gs.go_bp(min_size=0)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        full = gs.build_mask(genes, every_term, min_genes=1)
        times.append(time.perf_counter() - t)
    print(
        f"build_mask {len(genes)} genes x {len(every_term)} GO BP terms (every term): median "
        f"{np.median(times):.2f} s over {calls} calls ({min(times):.2f}-{max(times):.2f} s) -> "
        f"{full.n_terms} terms kept, {full.membership.nnz:,} pairs"
    )
    return {
        "n_genes": len(genes),
        "n_terms": len(every_term),
        "calls": calls,
        "median_s": float(np.median(times)),
        "min_s": min(times),
        "max_s": max(times),
        "kept": full.n_terms,
        "pairs": int(full.membership.nnz),
    }


def main() -> None:
    """Time the simulator and the masks; with ``--json``, also write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--n-targets", type=int, default=105)
    parser.add_argument("--n-doubles", type=int, default=130)
    add_json_option(parser)
    args = parser.parse_args()
    with recording() as output:
        print(machine_line())
        adata, simulation = time_simulator(args)
        masks = time_masks(np.asarray(adata.var_names))
        peak = process_peak_rss_mib()
        print(f"peak RSS: {peak:.0f} MiB")
    if args.json:
        results = {"simulation": simulation, **masks, "peak_rss_mib": peak}
        write_json(args.json, __file__, results, output)


if __name__ == "__main__":
    main()
