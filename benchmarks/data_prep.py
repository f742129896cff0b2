"""Time the data-preparation steps: the simulator and the gene-set mask.

Run: python benchmarks/data_prep.py [--n-cells 100000 --n-genes 5000]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

import scsena
from scsena import gene_sets as gs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--n-targets", type=int, default=105)
    parser.add_argument("--n-doubles", type=int, default=130)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")

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

    t = time.perf_counter()
    all_terms = gs.go_bp(min_size=1)
    load_s = time.perf_counter() - t
    genes = np.asarray(adata.var_names)
    t = time.perf_counter()
    mask = gs.build_mask(genes, all_terms, min_genes=1)
    mask_s = time.perf_counter() - t
    print(f"go_bp(): {len(all_terms)} terms propagated in {load_s:.2f} s (first call)")
    print(
        f"build_mask {len(genes)} genes x {len(all_terms)} GO BP terms: {mask_s:.2f} s "
        f"-> {mask.n_terms} terms kept, {mask.membership.nnz:,} pairs"
    )
    every_term = gs.go_bp(min_size=0)  # empty terms included: the whole GO BP release
    times = []
    for _ in range(5):
        t = time.perf_counter()
        full = gs.build_mask(genes, every_term, min_genes=1)
        times.append(time.perf_counter() - t)
    print(
        f"build_mask {len(genes)} genes x {len(every_term)} GO BP terms (every term): median "
        f"{np.median(times):.2f} s over 5 calls ({min(times):.2f}-{max(times):.2f} s) -> "
        f"{full.n_terms} terms kept, {full.membership.nnz:,} pairs"
    )
    t = time.perf_counter()
    sena = gs.build_mask(genes, gs.go_bp(terms="sena"), min_genes=5)
    print(f"build_mask SENA preset: {time.perf_counter() - t:.2f} s -> {sena.n_terms} terms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
