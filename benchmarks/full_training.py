"""A full SENAVAE training run at Norman scale, timed end to end.

Simulates ``--n-cells`` cells x ``--n-genes`` genes (105 single targets, 130 doubles),
registers them with SENA's GO BP mask and runs ``SENAVAE.train`` for ``--epochs``
epochs (the reference's 100 by default) at each batch size in ``--batch-sizes``, with
the reference's schedules and best-epoch selection. Everything Lightning does is
included: data loading, the optimiser, per-epoch logging.

Prints, per batch size: the time of every epoch (first, median, last), the whole
``train()`` call, peak RSS (and peak GPU memory on CUDA), and the double-fold MMD
(held-out double perturbations) before and after training, as a check that the
run learned what it should.

``--budget-s`` (default 480 s, so that the command ends within 10 minutes) stops each
run at the end of the epoch that crosses it and extrapolates the full run from the
median epoch; the output says so. ``--budget-s 0`` runs every epoch.

Run: python benchmarks/full_training.py [--n-cells 100000] [--n-genes 5000]
     [--epochs 100] [--batch-sizes 32] [--device cpu|cuda] [--budget-s 480] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import scsena

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_json_option,
    epoch_timer,
    machine_line,
    peak_rss_mib,
    quiet,
    recording,
    reset_peak_rss,
    write_json,
)


def simulate(args: argparse.Namespace):
    """The Norman-scale simulation, registered with SENA's GO BP mask."""
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells, n_genes=args.n_genes, n_targets=105, n_doubles=130, seed=args.seed
    )
    simulate_s = time.perf_counter() - t
    print(
        f"simulate_perturbseq: {adata.n_obs:,} cells x {adata.n_vars:,} genes in {simulate_s:.1f} s"
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    return adata, simulate_s


def train_one(args: argparse.Namespace, adata, batch_size: int) -> dict:
    """Train one model at ``batch_size``, timed; returns its numbers."""
    model = scsena.SENAVAE(adata, seed=args.seed)
    if args.device == "cuda":
        model.to_device("cuda")
    mmd_before = float(model.get_fold_losses("double")["mmd"].mean())
    timer = epoch_timer(args.budget_s or None)
    reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        batch_size=batch_size,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    total = time.perf_counter() - t
    run = {"batch_size": batch_size, "device": args.device, "epochs": args.epochs}
    run.update(train_s=total, best_epoch=model.best_epoch_, peak_rss_mib=peak_rss_mib())
    if torch.cuda.is_available() and args.device == "cuda":
        run["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    run["mmd_before"] = mmd_before
    run["mmd_after"] = float(model.get_fold_losses("double")["mmd"].mean())
    times = np.asarray(timer.times)
    run.update(epochs_run=len(times), epoch_times_s=times.tolist())
    run.update(batches_per_epoch=timer.batches[-1], median_epoch_s=float(np.median(times)))
    rest = (args.epochs - len(times)) * run["median_epoch_s"]
    run["extrapolated_s"] = total + rest if rest else None
    return run


def print_run(run: dict, budget_s: float) -> None:
    """The report of one training run."""
    times, batches, med = run["epoch_times_s"], run["batches_per_epoch"], run["median_epoch_s"]
    print(
        f"\n== batch {run['batch_size']}: {batches:,} perturbation-pure batches per epoch "
        f"({batches * run['batch_size']:,} cells), device {run['device']} =="
    )
    print(
        f"epochs run: {run['epochs_run']} of {run['epochs']}; epoch times first "
        f"{times[0]:.2f} s, median {med:.2f} s, last {times[-1]:.2f} s "
        f"({1000 * med / batches:.2f} ms per batch at the median)"
    )
    print(f"train() wall clock: {run['train_s']:.1f} s (best epoch {run['best_epoch']})")
    if run["extrapolated_s"] is not None:
        left, total, full = run["epochs"] - run["epochs_run"], run["train_s"], run["extrapolated_s"]
        print(
            f"stopped at the {budget_s:.0f} s budget; extrapolated {run['epochs']} "
            f"epochs: {total:.1f} s + {left} x {med:.2f} s = {full:.0f} s ({full / 60:.1f} min)"
        )
    mem = f"peak RSS {run['peak_rss_mib']:.0f} MiB"
    if "peak_gpu_mib" in run:
        mem += f", peak GPU memory {run['peak_gpu_mib']:.0f} MiB"
    print(mem)
    print(
        f"double-fold MMD (mean over held-out doubles): {run['mmd_before']:.3f} before "
        f"training, {run['mmd_after']:.3f} after"
    )


def main() -> None:
    """Train at each batch size and report; with ``--json``, also write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-sizes", default="32", help="comma-separated")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--budget-s", type=float, default=480.0, help="stop a run after this (0: no limit)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    with recording() as output:
        print(machine_line(args.device))
        adata, simulate_s = simulate(args)
        runs = []
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            runs.append(train_one(args, adata, batch_size))
            print_run(runs[-1], args.budget_s)
    if args.json:
        results = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "simulate_s": simulate_s}
        write_json(args.json, __file__, {**results, "runs": runs}, output)


if __name__ == "__main__":
    main()
