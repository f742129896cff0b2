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
     [--batch-size 1024] [--repeats 1] [--device cpu|cuda] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import scsena
from scsena.train import make_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_json_option,
    machine_line,
    max_peak_rss_mib,
    peak_rss_mib,
    recording,
    reset_peak_rss,
    rss_mib,
    write_json,
)


def timed(name: str, fn, n_cells: int, repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times; print and return the median time and peak memory."""
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
    result = {"name": name, "n_cells": n_cells, "median_s": med, "cells_per_s": n_cells / med}
    result.update(times_s=times, peak_rss_mib=max(peaks) if peaks else None, rss_before_mib=base)
    mem = f", peak RSS {max(peaks):.0f} MiB (before: {base:.0f} MiB)" if peaks else ""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        mem += f", peak GPU memory {result['peak_gpu_mib']:.0f} MiB"
    print(
        f"{name}: {n_cells:,} cells in {med:.1f} s = {n_cells / med:,.0f} cells/s "
        f"(median of {repeats}: {', '.join(f'{s:.1f}' for s in times)} s){mem}"
    )
    return result


def build(args: argparse.Namespace):
    """Simulate, register and build an untrained model; returns them and their numbers."""
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=args.seed,
    )
    simulate_s = time.perf_counter() - t
    print(
        f"simulate_perturbseq: {adata.n_obs:,} cells x {adata.n_vars:,} genes in "
        f"{simulate_s:.1f} s (X nnz {adata.X.nnz:,})"
    )
    t = time.perf_counter()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    model = scsena.SENAVAE(adata, seed=args.seed)
    setup_s = time.perf_counter() - t
    print(f"setup_anndata + SENAVAE(): {setup_s:.1f} s")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        model.to_device("cuda")
        print(f"model on {torch.cuda.get_device_name(0)}")
    print(model.summary_string)
    numbers = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "nnz": int(adata.X.nnz)}
    return adata, model, {**numbers, "simulate_s": simulate_s, "setup_s": setup_s}


def training_epoch_sizes(adata, model, seed: int) -> dict:
    """Print and return the folds and the batches of a training epoch at batch 32 and 128."""
    fold = adata.obs["scsena_fold"].astype(str)
    counts = fold.value_counts()
    print("folds: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    train_ds = model.data_splitter(adata).fold_dataset(["train"], seed)
    batches = {}
    for bs in (32, 128):
        n_batches = len(make_loader(train_ds, bs, shuffle=True, drop_last=True, seed=0))
        batches[str(bs)] = n_batches
        print(
            f"training epoch at batch {bs}: {n_batches:,} perturbation-pure batches "
            f"({n_batches * bs:,} of {len(train_ds):,} training cells)"
        )
    folds = {k: int(v) for k, v in counts.items()}
    return {"folds": folds, "training_cells": len(train_ds), "batches_per_epoch": batches}


def time_inference(args: argparse.Namespace, adata, model) -> list[dict]:
    """Time the predictions of one single and one double, and every cell's activity."""
    fold = adata.obs["scsena_fold"].astype(str)
    guides = adata.obs["guide_ids"].astype(str)
    single = sorted(set(guides[fold == "train"]))[0]
    double = sorted(set(guides[fold == "double"]))[0]
    print(f"\npredicting '{single}' and '{double}', batch size {args.batch_size}")
    timings = []
    for label in (single, double):
        timings.append(
            timed(
                f"predict_perturbation({label!r})",
                lambda label=label: model.predict_perturbation(
                    label, n_cells=args.n_pred, batch_size=args.batch_size, seed=args.seed
                ),
                args.n_pred,
                args.repeats,
            )
        )
    timings.append(
        timed(
            "get_pathway_activity(all cells)",
            lambda: model.get_pathway_activity(adata, batch_size=args.batch_size, key_added=None),
            adata.n_obs,
            args.repeats,
        )
    )
    return timings


def main() -> None:
    """Time prediction and pathway activity; with ``--json``, also write the numbers."""
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
    add_json_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with recording() as output:
        print(machine_line(args.device))
        t_all = time.perf_counter()
        adata, model, data = build(args)
        epochs = training_epoch_sizes(adata, model, args.seed)
        timings = time_inference(args, adata, model)
        peak, total = max_peak_rss_mib(), time.perf_counter() - t_all
        print(f"\nlargest peak RSS over the run: {peak:.0f} MiB; total {total:.0f} s")
    if args.json:
        results = {"data": data, **epochs, "timings": timings, "peak_rss_mib": peak}
        write_json(args.json, __file__, {**results, "total_s": total}, output)


if __name__ == "__main__":
    main()
