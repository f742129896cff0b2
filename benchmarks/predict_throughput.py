"""Inference throughput: perturbation prediction and pathway activity on 100,000 cells.

Simulates a Norman-scale screen (5,000 genes, 105 single targets, 130 doubles),
registers it with SENA's GO BP mask and times, on an untrained model (the cost does
not depend on the weights):

- ``SENAVAE.predict_perturbation`` of one single and one double perturbation for
  ``--n-pred`` cells each (control cells drawn with replacement);
- ``SENAVAE.get_pathway_activity`` of every cell.

Each call is repeated ``--repeats`` times; the median is reported, with the peak RSS
of the process during the call. Also prints the size of the training fold, from
which the duration of a full training run can be extrapolated.

Run: python benchmarks/predict_throughput.py [--n-cells 100000] [--n-pred 100000]
     [--batch-size 1024] [--repeats 1] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import scsena
from scsena.train import make_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import max_peak_rss_mib, peak_rss_mib, reset_peak_rss, rss_mib  # noqa: E402


def timed(name: str, fn, n_cells: int, repeats: int) -> None:
    times, peaks = [], []
    base = rss_mib()
    for _ in range(repeats):
        reset = reset_peak_rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if reset:
            peaks.append(peak_rss_mib())
        del out
    med = float(np.median(times))
    mem = f", peak RSS {max(peaks):.0f} MiB (before: {base:.0f} MiB)" if peaks else ""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        mem += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(
        f"{name}: {n_cells:,} cells in {med:.1f} s = {n_cells / med:,.0f} cells/s "
        f"(median of {repeats}: {', '.join(f'{s:.1f}' for s in times)} s){mem}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--n-targets", type=int, default=105)
    parser.add_argument("--n-doubles", type=int, default=130)
    parser.add_argument("--n-pred", type=int, default=100_000, help="cells per prediction")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
    )
    t_all = time.perf_counter()
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=args.seed,
    )
    print(
        f"simulate_perturbseq: {adata.n_obs:,} cells x {adata.n_vars:,} genes in "
        f"{time.perf_counter() - t:.1f} s (X nnz {adata.X.nnz:,})"
    )
    t = time.perf_counter()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    model = scsena.SENAVAE(adata, seed=args.seed)
    print(f"setup_anndata + SENAVAE(): {time.perf_counter() - t:.1f} s")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        model.to_device("cuda")
        print(f"model on {torch.cuda.get_device_name(0)}")
    print(model.summary_string)

    fold = adata.obs["scsena_fold"].astype(str)
    print("folds: " + ", ".join(f"{k} {v:,}" for k, v in fold.value_counts().items()))
    train_ds = model.data_splitter(adata).fold_dataset(["train"], args.seed)
    for bs in (32, 128):
        n_batches = len(make_loader(train_ds, bs, shuffle=True, drop_last=True, seed=0))
        print(
            f"training epoch at batch {bs}: {n_batches:,} perturbation-pure batches "
            f"({n_batches * bs:,} of {len(train_ds):,} training cells)"
        )

    guides = adata.obs["guide_ids"].astype(str)
    single = sorted(set(guides[fold == "train"]))[0]
    double = sorted(set(guides[fold == "double"]))[0]
    print(f"\npredicting '{single}' and '{double}', batch size {args.batch_size}")
    for label in (single, double):
        timed(
            f"predict_perturbation({label!r})",
            lambda label=label: model.predict_perturbation(
                label, n_cells=args.n_pred, batch_size=args.batch_size, seed=args.seed
            ),
            args.n_pred,
            args.repeats,
        )
    timed(
        "get_pathway_activity(all cells)",
        lambda: model.get_pathway_activity(adata, batch_size=args.batch_size, key_added=None),
        adata.n_obs,
        args.repeats,
    )
    print(
        f"\nlargest peak RSS over the run: {max_peak_rss_mib():.0f} MiB; "
        f"total {time.perf_counter() - t_all:.0f} s"
    )


if __name__ == "__main__":
    main()
