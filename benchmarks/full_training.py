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
     [--epochs 100] [--batch-sizes 32] [--device cpu|cuda] [--budget-s 480]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

import scsena

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_mib, reset_peak_rss  # noqa: E402


class EpochTimer(pl.Callback):
    """Wall-clock time of every training epoch; stops training past a time budget."""

    def __init__(self, budget_s: float | None):
        self.budget_s = budget_s
        self.times: list[float] = []
        self.batches = 0
        self._start = 0.0
        self._t0 = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)
        self.batches = trainer.num_training_batches
        if self.budget_s is not None and time.perf_counter() - self._t0 > self.budget_s:
            trainer.should_stop = True


def main() -> None:
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
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = ""
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores{gpu}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells, n_genes=args.n_genes, n_targets=105, n_doubles=130, seed=args.seed
    )
    print(
        f"simulate_perturbseq: {adata.n_obs:,} cells x {adata.n_vars:,} genes in "
        f"{time.perf_counter() - t:.1f} s"
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        model = scsena.SENAVAE(adata, seed=args.seed)
        if args.device == "cuda":
            model.to_device("cuda")
        mmd_before = float(model.get_fold_losses("double")["mmd"].mean())
        timer = EpochTimer(args.budget_s or None)
        reset_peak_rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        model.train(
            max_epochs=args.epochs,
            batch_size=batch_size,
            accelerator=accelerator,
            devices=1,
            callbacks=[timer],
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
        )
        total = time.perf_counter() - t
        peak = peak_rss_mib()
        mmd_after = float(model.get_fold_losses("double")["mmd"].mean())
        times = np.asarray(timer.times)
        done = len(times)
        med = float(np.median(times))
        print(
            f"\n== batch {batch_size}: {timer.batches:,} perturbation-pure batches per epoch "
            f"({timer.batches * batch_size:,} cells), device {args.device} =="
        )
        print(
            f"epochs run: {done} of {args.epochs}; epoch times first {times[0]:.2f} s, "
            f"median {med:.2f} s, last {times[-1]:.2f} s "
            f"({1000 * med / timer.batches:.2f} ms per batch at the median)"
        )
        print(f"train() wall clock: {total:.1f} s (best epoch {model.best_epoch_})")
        if done < args.epochs:
            rest = (args.epochs - done) * med
            print(
                f"stopped at the {args.budget_s:.0f} s budget; extrapolated {args.epochs} "
                f"epochs: {total:.1f} s + {args.epochs - done} x {med:.2f} s = "
                f"{total + rest:.0f} s ({(total + rest) / 60:.1f} min)"
            )
        mem = f"peak RSS {peak:.0f} MiB"
        if torch.cuda.is_available() and args.device == "cuda":
            mem += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        print(mem)
        print(
            f"double-fold MMD (mean over held-out doubles): {mmd_before:.3f} before training, "
            f"{mmd_after:.3f} after"
        )


if __name__ == "__main__":
    main()
